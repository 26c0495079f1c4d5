"""File helpers: atomic writes, output-path checks, slimlm's own temp names and their sweeping.

Three promises live here:

- **Nothing half-written.** Every file goes through a temp file + ``fsync`` + rename; every directory is
  built in a sibling temp directory and renamed into place, then the parent directory is fsynced.
- **Never lose the user's data.** `check_out` accepts an ``--out`` that is absent, empty, or an earlier
  slimlm output of the same kind (recognised by its metadata file: ``slimlm.json`` for a variant,
  ``run.json`` for a run directory); replacing an earlier variant needs ``force``. Anything else is a
  one-sentence `OutputError` before any work starts. `atomic_dir` checks the target again right before
  it swaps, so library callers get the same protection.
- **Readers never see a gap.** Replacing an existing directory uses Linux ``renameat2(RENAME_EXCHANGE)``:
  the complete new directory and the complete old one trade places in one atomic step, then the old one
  (now under the temp name) is deleted. No symlinks are involved, so the output stays a plain directory
  that ``transformers`` and ``cp -r`` treat normally. Where the filesystem cannot exchange (non-Linux,
  some network filesystems) we fall back to two renames, which leave a window of microseconds.

Temp names are ``.NAME.slimlm-tmp-HOST-PID-RANDOM``, always next to (inside the same directory as) what
they become, so a run's temp files live in its run or cache directory, never in ``/tmp``. `sweep` removes
those whose owner process (on this host) is gone; it runs whenever slimlm writes into a directory, so a
SIGKILLed run's leftovers disappear at the next start. Files get the umask's permissions (not 0600), since
run directories and caches are meant to be shared.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from slimlm.errors import OutputError

TEMP_TAG = ".slimlm-tmp-"
_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:40] or "host"
_TEMP_RE = re.compile(r"^\..*" + re.escape(TEMP_TAG) + r"(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[0-9a-f]+(\.tmp)?$")

# the file whose presence marks a directory as slimlm's own output, per kind of output
MARKERS = {"variant": "slimlm.json", "run": "run.json", "checkpoint": "meta.json", "samples": "samples.json"}
#: what each kind of output directory is called in messages
_NAMES = {"variant": "variant", "run": "run directory", "checkpoint": "checkpoint", "samples": "samples directory"}


def cache_dir(*parts: str) -> Path:
    """The slimlm cache (``$SLIMLM_CACHE``, else ``$XDG_CACHE_HOME/slimlm``, else ``~/.cache/slimlm``)."""
    root = os.environ.get("SLIMLM_CACHE")
    if root is None:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(xdg) / "slimlm")
    path = Path(root).joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- temp names and sweeping -------------------------------------------------------------------------
def refuse_cwd(path: str | Path, option: str = "--out") -> None:
    """`OutputError` when ``path`` is the working directory or one above it: slimlm replaces a directory it
    writes by renaming a new one over it (and ``--force`` discards it), which it never does to those."""
    absolute, cwd = Path(os.path.abspath(Path(path).expanduser())), Path.cwd()
    if absolute == cwd or absolute in cwd.parents:
        where = "the current directory" if absolute == cwd else "a directory above the current one"
        raise OutputError(f"{option} {path} is {where}; name a new directory for slimlm to create, "
                          f"e.g. {option} ./slimlm-out.")


def temp_path(final: str | Path, suffix: str = "") -> Path:
    """A fresh slimlm temp name beside ``final`` that `sweep` recognises once this process is gone."""
    final = Path(final)
    if final.name in ("", ".", ".."):
        refuse_cwd(final, option="")
        raise OutputError(f"{final} names no directory; give slimlm a directory name.")
    return final.with_name(f".{final.name}{TEMP_TAG}{_HOST}-{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(directory: str | Path) -> list[Path]:
    """Remove slimlm temp files and folders in ``directory`` whose owner process (on this host) is dead.

    Only names made by `temp_path` are touched; temp names of other hosts sharing the directory are left
    alone (their owner may still be running). Returns what was removed.
    """
    directory = Path(directory)
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for e in entries:
        m = _TEMP_RE.match(e.name)
        if not m or m["host"] != _HOST or _alive(int(m["pid"])):
            continue
        path = Path(e.path)
        try:
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError:
            pass  # another process swept it first
    return removed


def scratch_dir(kind: str, name: str) -> Path:
    """A new, empty slimlm temp directory in the cache (``<cache>/<kind>/.<name>.slimlm-tmp-…``), after
    sweeping what killed processes left there. The caller removes it when done; if the process dies first,
    the next `scratch_dir` of the same kind removes it."""
    root = cache_dir(kind)
    sweep(root)
    path = temp_path(root / name)
    path.mkdir()
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: the mode a new file gets under this process's umask (0644 under the usual 022)
_FILE_MODE = 0o666 & ~_umask()


def _fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root``, and give each file the umask's mode: safetensors writes its
    files 0600, so a variant saved by one account could not be read by a server running as another."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            try:
                if not os.path.islink(p) and os.stat(p).st_mode & 0o777 == 0o600:
                    os.chmod(p, _FILE_MODE)
            except OSError:
                pass
            try:
                fd = os.open(p, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


# -- files -------------------------------------------------------------------------------------------
def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file beside it, fsync and rename (umask permissions)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep(path.parent)
    tmp = temp_path(path, ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


# -- directories -------------------------------------------------------------------------------------
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with ``renameat2(RENAME_EXCHANGE)``; False where that is unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def is_foreign(path: str | Path, marker: str | None) -> bool:
    """True when ``path`` is something slimlm must not replace: a file, or a non-empty dir without ``marker``."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return False
    if path.is_symlink() or not path.is_dir():
        return True
    if marker is None:
        return False
    return not (path / marker).is_file() and any(path.iterdir())


#: in every directory `atomic_dir` writes: the names of the entries slimlm put there
FILES_RECORD = ".slimlm-files"
#: beside files slimlm rewrites in place (a run's report.html and decision.md): each one's SHA-256 as last written
WRITTEN_RECORD = ".slimlm-written.json"
#: beside `WRITTEN_RECORD`: held while a file is checked, rewritten and recorded (see `written_lock`)
WRITTEN_LOCK = ".slimlm-written.lock"
#: what slimlm (and transformers' save_pretrained under it) writes at the top of a variant, export or checkpoint
#: directory: how an output from before `FILES_RECORD` is told apart from files a user added to it
_WRITTEN_PATTERNS = ("slimlm.json", "*.safetensors", "*.safetensors.index.json", "config.json", "generation_config.json",
                     "tokenizer*", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "vocab.*",
                     "merges.txt", "*.model", "export.json", "*.gguf", "*.onnx", "*.onnx_data", "*.onnx.data",
                     "openvino_*", "meta.json", "state.pt", "*.pt", "*.bin", "training", "ort_config.json")
#: what slimlm writes at the top of a run directory (compress, search, report, decide, monitor, export)
RUN_ENTRIES = frozenset({"run.json", "variants.jsonl", "cache", "exports", "monitor", "decisions", "report.html",
                         "decision.md", "study.db", "study.db-journal", "study.db-wal",
                         "study.db-shm", ".lock", ".locks", ".study.lock", WRITTEN_RECORD, WRITTEN_LOCK, "mlflow.db",
                         "mlartifacts"})


#: files up to this size get a checksum in `FILES_RECORD` (config and tokenizer files, manifests; not weights)
_CHECKSUM_MAX = 16 * 2**20


def _files_record(folder: Path) -> dict:
    """``{name: SHA-256 or None}`` for the entries of a directory slimlm just wrote: a checksum for each small
    file, so that an edit made to it later (a user's change to config.json) is not replaced unseen."""
    record = {}
    for e in sorted(os.listdir(folder)):
        p = folder / e
        small = p.is_file() and not p.is_symlink() and p.stat().st_size <= _CHECKSUM_MAX
        record[e] = _sha256(p) if small else None
    return record


def edited_entries(path: str | Path) -> list[str]:
    """The files of a slimlm output directory changed since slimlm wrote them (by their `FILES_RECORD`
    checksums; a directory from before checksums, or a large file, has none to compare)."""
    path = Path(path)
    try:
        known = json.loads((path / FILES_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(known, dict):
        return []
    edited = []
    for name, digest in known.items():
        p = path / name
        if isinstance(digest, str) and p.is_file() and not p.is_symlink():
            try:
                if _sha256(p) != digest:
                    edited.append(name)
            except OSError:
                edited.append(name)
    return sorted(edited)


def foreign_entries(path: str | Path, kind: str = "output") -> list[str]:
    """The entries of an existing slimlm output directory that slimlm did not write (a user's notes, say).

    A directory written by `atomic_dir` names its entries in `FILES_RECORD`; an older one is read by the names
    slimlm writes. ``kind="run"``: a run directory, whose entries are `RUN_ENTRIES`. Temp files are ignored.
    """
    from fnmatch import fnmatch

    path = Path(path)
    entries = [e for e in os.listdir(path) if not _TEMP_RE.match(e) and e != FILES_RECORD]
    if kind == "run":
        return sorted([e for e in entries if e not in RUN_ENTRIES] + _run_subfolders_foreign(path))
    try:
        known = json.loads((path / FILES_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = None
    if known is None:  # an export from before FILES_RECORD: its manifest lists the files it wrote
        try:
            listed = json.loads((path / "export.json").read_text(encoding="utf-8")).get("files")
        except (OSError, ValueError, AttributeError):
            listed = None
        if isinstance(listed, dict):
            known = [*listed, "export.json"]
    if isinstance(known, (list, dict)):
        return sorted(e for e in entries if e not in known)
    return sorted(e for e in entries if not any(fnmatch(e, p) for p in _WRITTEN_PATTERNS))


_HEX = re.compile(r"^[0-9a-f]+$")


def _listing(folder: Path) -> list[str]:
    try:
        return [e for e in os.listdir(folder) if not _TEMP_RE.match(e)]
    except OSError:
        return []


def _run_subfolders_foreign(run: Path) -> list[str]:
    """What a user put inside the folders slimlm writes in a run directory, as paths relative to it: the
    stage cache (stage outputs ``<key>``, checkpoints ``.<key>.ckpt``, ``.locks``), ``exports/<name>``,
    ``decisions/NNNN.json`` and the monitor files."""
    found = []
    for e in _listing(run / "cache"):
        p = run / "cache" / e
        if e == ".locks" and p.is_dir():
            found += [f"cache/.locks/{x}" for x in _listing(p) if not _HEX.match(x)]
        elif p.is_dir() and not p.is_symlink() and (_HEX.match(e) or re.match(r"^\.[0-9a-f]+\.ckpt$", e)):
            found += [f"cache/{e}/{x}" for x in foreign_entries(p)]
        else:
            found.append(f"cache/{e}")
    for e in _listing(run / "exports"):
        p = run / "exports" / e
        found += ([f"exports/{e}/{x}" for x in foreign_entries(p)] + [f"exports/{e}/{x} (edited)"
                                                                      for x in edited_entries(p)]
                  if p.is_dir() and not p.is_symlink() else [f"exports/{e}"])
    found += [f"decisions/{e}" for e in _listing(run / "decisions") if not re.match(r"^\d{4,}\.json$", e)]
    monitor = run / "monitor"
    ours = set(_written(monitor) or {}) | {WRITTEN_RECORD, WRITTEN_LOCK, "slimlm-rules.yml", "slimlm-rules-test.yml",
                                           "grafana-dashboard.json"}
    found += [f"monitor/{e}" for e in _listing(monitor) if e not in ours]
    return found


def refuse_foreign(path: str | Path, kind: str = "output", option: str = "--out") -> None:
    """`OutputError` when replacing the slimlm output ``path`` would lose entries slimlm did not write."""
    path = Path(path)
    if not path.is_dir():
        return
    foreign = foreign_entries(path, kind)
    edited = edited_entries(path) if kind == "output" else []
    if edited and not foreign:
        shown = ", ".join(edited[:3]) + (f" and {len(edited) - 3} more" if len(edited) > 3 else "")
        raise OutputError(f"{option + ' ' if option else ''}{path}: {shown} {'was' if len(edited) == 1 else 'were'} "
                          "changed since slimlm wrote it; replacing the directory would lose those edits: move "
                          "them out first (slimlm then replaces the rest), or choose a new directory.")
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        which = ("which slimlm did not write (or you edited since)" if any(f.endswith(" (edited)") for f in foreign)
                 else "which slimlm did not write")
        raise OutputError(f"{option + ' ' if option else ''}{path} also holds {shown}, {which}; "
                          "replacing the directory "
                          "would delete them: move them out first, or choose a new directory.")


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _written(folder: Path) -> dict | None:
    try:
        rec = json.loads((folder / WRITTEN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def check_unedited(paths: list[Path], *, force: bool = False, strict: bool = False,
                   fix: str = "rename it, or pass --force to replace it") -> None:
    """`OutputError` when one of ``paths`` (files slimlm rewrites) was changed since slimlm last wrote it.

    The checksums live in `WRITTEN_RECORD` beside the files. A folder without that record holds files from
    before it existed: they are taken as slimlm's (as they were written), unless ``strict`` (then a file with
    no record is refused too). ``force`` skips the check."""
    if force:
        return
    for p in map(Path, paths):
        rec = _written(p.parent)
        if not p.is_file() or (rec is None and not strict):
            continue
        if (rec or {}).get(p.name) != _sha256(p):
            raise OutputError(f"{p} was changed since slimlm wrote it (or slimlm has no record of writing it); "
                              f"slimlm keeps your version: {fix}.")


def rewrite_unedited(texts: dict[Path, str], *, force: bool = False, strict: bool = False,
                     fix: str = "rename it, or pass --force to replace it") -> None:
    """Write each of ``texts`` (path → text, one folder) atomically, unless one was changed since slimlm wrote
    it (`check_unedited`), and record their checksums (`record_written`). Check, writes and record happen
    under one lock: search workers sharing a run directory each rewrite its report, and without it one
    could read the file another has just written but not yet recorded, and take it for a user's edit."""
    paths = list(texts)
    with file_lock(paths[0].parent / WRITTEN_LOCK):
        check_unedited(paths, force=force, strict=strict, fix=fix)
        for path, text in texts.items():
            write_text_atomic(path, text)
        record_written(paths)


def written_lock(folder: str | Path):
    """The lock `rewrite_unedited` holds in ``folder``, for a check that must not see its writes half done."""
    return file_lock(Path(folder) / WRITTEN_LOCK)


def record_written(paths: list[Path]) -> None:
    """Note the checksums of ``paths`` as slimlm just wrote them (see `check_unedited`)."""
    by_folder: dict[Path, list[Path]] = {}
    for p in map(Path, paths):
        by_folder.setdefault(p.parent, []).append(p)
    for folder, ps in by_folder.items():
        write_json_atomic(folder / WRITTEN_RECORD, (_written(folder) or {}) | {p.name: _sha256(p) for p in ps})


@contextmanager
def atomic_dir(final: str | Path, marker: str | None = "slimlm.json") -> Iterator[Path]:
    """Yield a temp directory beside ``final``; on success it replaces ``final`` atomically.

    Args:
        final: the directory to create or replace.
        marker: the metadata file that marks an existing ``final`` as slimlm's own output; an existing
            ``final`` that is a file, or a non-empty directory without it, is never replaced
            (`OutputError`). ``None`` skips that check (callers that own the path).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep(final.parent)
    tmp = temp_path(final)
    os.mkdir(tmp)  # 0777 & ~umask (mkdtemp would make it 0700)
    try:
        yield tmp
        (tmp / FILES_RECORD).write_text(json.dumps(_files_record(tmp)), encoding="utf-8")
        _fsync_tree(tmp)
        if is_foreign(final, marker):
            raise OutputError(f"{final} is not a slimlm output (it has no {marker}); slimlm will not replace "
                              "it: choose a new or empty directory.")
        if final.is_dir():
            refuse_foreign(final, option="")
        if final.exists():
            if _exchange(tmp, final):  # tmp now holds the old directory
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                old = temp_path(final)
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# -- output paths ------------------------------------------------------------------------------------
def _nearest_existing(path: Path) -> Path:
    p = path
    while not os.path.lexists(p):
        if p.parent == p:
            break
        p = p.parent
    return p


def _check_writable(path: Path, option: str, inside: bool) -> None:
    """Fail unless slimlm can write where ``path`` goes: not under a file, not read-only, not ``/proc``.

    ``inside``: the command writes inside an existing ``path`` (a run directory); otherwise it writes a
    sibling temp directory next to ``path`` and renames it (a variant, a file).
    """
    target = path if inside and path.is_dir() else path.parent
    anchor = _nearest_existing(target)
    if not anchor.is_dir():
        raise OutputError(f"{option} {path}: {anchor} is a file, so nothing can be created under it; "
                          "choose a path in a directory.")
    st = anchor.stat()
    # root passes every permission check, but a directory without write bits is meant to be read-only
    ro = not os.access(anchor, os.W_OK | os.X_OK) or (os.geteuid() == 0 and not st.st_mode & 0o222)
    if not ro and anchor != path:  # the honest test: create something there (catches /proc); an existing
        # output directory is only checked by access(2) (which sees read-only mounts) so its mtime is kept
        probe = temp_path(anchor / "probe")
        try:
            os.mkdir(probe)
            os.rmdir(probe)
        except OSError:
            ro = True
    if ro:
        raise OutputError(f"{option} {path}: {anchor} is not writable; choose a directory you can write to.")


def check_out(path: str | Path, *, force: bool = False, kind: str = "variant", option: str = "--out") -> Path:
    """Check an output path before any heavy work; return it as a `Path`.

    Accepted: a path that does not exist (its parent must be creatable and writable), an empty directory,
    or an earlier slimlm output of the same ``kind``: a run directory (``run.json``) is resumed; a variant
    (``slimlm.json``) is replaced only with ``force``. A ``kind="file"`` output (a JSON file) may be
    replaced only with ``force``. Everything else raises `OutputError` with one sentence and the fix.

    Args:
        path: the ``--out`` value.
        force: the user's explicit opt-in to replace an earlier slimlm output.
        kind: ``variant``, ``run``, ``samples`` (sampled text: continued or replaced only with ``force``) or
            ``file``.
        option: the option's name, for the message.

    Example:
        >>> check_out("runs/new-variant", kind="variant")  # doctest: +SKIP
    """
    path = Path(path).expanduser()
    if kind != "file":
        refuse_cwd(path, option)
    if kind == "file":
        if path.is_dir():
            raise OutputError(f"{option} {path} is a directory; give a file name to write.")
        if path.exists() and not force:
            raise OutputError(f"{option} {path} already exists; pass --force to replace it, or choose a new name.")
        _check_writable(path, option, inside=False)
        return path
    marker = MARKERS[kind]
    other = [k for k, m in MARKERS.items() if k != kind and k != "checkpoint" and (path / m).is_file()]
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise OutputError(f"{option} {path} is an existing file, not a directory; slimlm will not replace it: "
                          "choose a new directory name.")
    if path.is_dir():
        try:
            entries = [e for e in os.listdir(path) if not _TEMP_RE.match(e)]
        except OSError:
            raise OutputError(f"{option} {path} cannot be read; choose a directory you can read and write.") from None
        if entries and not (kind == "run" and _run_leftovers_only(path, entries)):
            if other:
                raise OutputError(f"{option} {path} holds a slimlm {_NAMES[other[0]]} ({MARKERS[other[0]]}), not a "
                                  f"{_NAMES[kind]}; "
                                  "choose another directory.")
            if not (path / marker).is_file():
                shown = ", ".join(sorted(entries)[:3]) + (", ..." if len(entries) > 3 else "")
                raise OutputError(f"{option} {path} is a directory slimlm did not write (it holds {shown}); "
                                  "slimlm never replaces it: choose a new or empty directory.")
            if kind == "variant" and not force:
                raise OutputError(f"{option} {path} holds an earlier slimlm variant; pass --force to replace it, "
                                  "or choose a new directory.")
            if kind == "variant":  # (a samples directory's --force replaces only its own two files)
                refuse_foreign(path, option=option)
            if kind == "samples" and not force:
                raise OutputError(f"{option} {path} holds text sampled earlier; pass --resume to continue it, --force "
                                  "to start over, or choose a new directory.")
    _check_writable(path, option, inside=kind == "run")
    return path


def _run_leftovers_only(path: Path, entries: list[str]) -> bool:
    """A run directory killed before it wrote run.json: only its lock and an empty cache folder."""
    if not set(entries) <= {".lock", "cache"}:
        return False
    cache = path / "cache"
    return not cache.exists() or all(_TEMP_RE.match(e) for e in os.listdir(cache))


def discard(path: str | Path) -> None:
    """Remove a directory slimlm wrote: first renamed to a temp name (readers never see it half-deleted)."""
    path = Path(path)
    if not path.exists():
        return
    tmp = temp_path(path)
    os.replace(path, tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    _fsync_dir(path.parent)


@contextmanager
def remove_on_error(path: str | Path, keep: Callable[[], bool] | None = None) -> Iterator[None]:
    """Remove ``path`` again if the block fails and ``path`` did not exist (or was empty) before it.

    A run that fails on a user error before it produced anything leaves nothing behind; ``keep()`` returning
    True (work worth resuming was saved) keeps it. An empty directory the user made is recreated empty.
    """
    path = Path(path)
    existed = path.is_dir()
    fresh = not existed or not any(path.iterdir())
    try:
        yield
    except Exception:
        if fresh and path.is_dir() and not (keep and keep()) and not foreign_entries(path, "run"):
            discard(path)  # (files a user put there while it ran keep the whole directory)
            if existed:
                path.mkdir()
        raise


def prepare_run_dir(out: str | Path, force: bool = False) -> Path:
    """Check a run directory's path before heavy work (see `check_out`); ``force`` discards an earlier run."""
    out = check_out(out, kind="run")
    if force and (out / MARKERS["run"]).is_file():
        refuse_foreign(out, kind="run")
        discard(out)
    for d in (out, out / "cache"):  # a killed run's temp files go now, not at the next write there
        sweep(d)
    return out


def has_stage_output(run_dir: str | Path) -> bool:
    """True once a run directory holds work worth resuming (a finished stage in its cache)."""
    return any((d / MARKERS["variant"]).is_file() for d in (Path(run_dir) / "cache").glob("*"))


@contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if needed), released when the block ends or the process dies."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
