"""Text sampled from a model: a general training corpus as large as compute allows, for sequence-level KD.

Why: a student that distils on one domain's text loses general ability, and mixing in a general corpus
(``general_data``) keeps it only as far as that corpus reaches. The corpora that install offline hold a few
million tokens; restoring a deeply pruned student needs orders of magnitude more, and an accelerator machine
without network cannot download them. The teacher's own samples fill that gap: they are general by
construction (they follow the teacher's distribution, not one domain's), they cost only compute, and training
the student on them with the teacher's logits is sequence-level knowledge distillation (Kim and Rush, 2016).

Sampling: plain ancestral sampling with a KV cache, from ``temperature`` and nucleus ``top_p`` only (no top-k,
no repetition penalty, none of the model's own generation defaults), so what the student sees is the teacher's
distribution with a stated truncation. A row starts at the tokenizer's BOS token (EOS when it has none), or at
``prompt_tokens`` tokens cut at random offsets from ``prompt_data``'s train split, and runs for ``length`` new
tokens or until EOS. Rows go to the train / calibration / eval splits by a stable hash of their number (80/10/10),
so the eval rows are held out from a student trained on the others.

Output: a directory with ``text.jsonl`` (one object per row: ``text``, ``split``, ``row``, ``prompt``) and
``samples.json`` (settings, the model's spec and weights hash, progress). Any ``--data`` or ``general_data``
option takes the directory (`slimlm.data.load_data` reads ``text.jsonl`` with its splits), and so does any tool
that reads JSON lines.

Determinism and resume: batch ``b`` samples with its own generator seeded from (``seed``, ``b``), so a run's rows
do not depend on how it was interrupted. The file grows one batch at a time; after each batch is on disk,
``samples.json`` records the rows and bytes written. A resumed run cuts ``text.jsonl`` back to the recorded
bytes (a batch a kill left half-written) and continues with the next batch, producing the same file as a run
that was never stopped (same machine, same library versions). Lines past the recorded bytes that are not such a
batch (rows a user appended) stop the resume instead of being cut away.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from slimlm._io import check_out, write_json_atomic
from slimlm.data import split_by_hash
from slimlm.data.corpus import SAMPLES_MARKER as MARKER
from slimlm.data.corpus import SAMPLES_TEXT as TEXT_FILE
from slimlm.errors import ConfigError, DataError, OutputError
from slimlm.models.decoding import cache_arg, cache_of, nucleus

FORMAT = 1


class SampleConfig(BaseModel):
    """What to sample: at least ``tokens`` new tokens in whole batches of ``batch_size`` rows of up to
    ``length`` new tokens each; ``temperature`` and nucleus ``top_p`` shape the distribution; prompts are BOS
    or ``prompt_tokens`` tokens from ``prompt_data``; ``dtype`` is the model's compute type (``auto``:
    bfloat16 on a GPU, float32 on a CPU, where bfloat16 matrix products are slow)."""

    model_config = ConfigDict(extra="forbid")

    tokens: int = Field(100_000, ge=1)
    length: int = Field(256, ge=1)
    batch_size: int = Field(16, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    prompt_data: str | None = None
    prompt_tokens: int = Field(0, ge=0)
    seed: int = 0
    dtype: str = Field("auto", pattern="^(auto|float32|bfloat16)$")

    @model_validator(mode="after")
    def _check(self) -> SampleConfig:
        if self.prompt_data and not self.prompt_tokens:
            raise ValueError("prompt_data needs prompt_tokens > 0 (how many of its tokens start each row)")
        if self.prompt_tokens and not self.prompt_data:
            raise ValueError("prompt_tokens needs prompt_data (the data spec the prompts are cut from)")
        return self

    def key(self) -> dict:
        """What decides the rows (a resumed run must match it); ``tokens`` may grow on resume."""
        return self.model_dump(exclude={"tokens"})


def make_config(**kwargs) -> SampleConfig:
    try:
        return SampleConfig(**kwargs)
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(p) for p in e["loc"])
        raise ConfigError(f"sampling settings: {where + ': ' if where else ''}{e['msg']}.") from None


def split_of(row: int) -> str:
    """The split of sampled row ``row``: a stable hash, 80% train, 10% calibration, 10% eval."""
    return split_by_hash(f"row:{row}")


@torch.no_grad()
def sample_batch(hf, prompts: torch.Tensor, length: int, cfg: SampleConfig, eos: int | None,
                 generator: torch.Generator) -> list[list[int]]:
    """New tokens for each prompt row (B, P): up to ``length`` each, cut after EOS (which is not returned)."""
    out = hf(input_ids=prompts, use_cache=True)  # the model makes the cache its family needs (sliding layers)
    kw = {cache_arg(hf): cache_of(out)}  # then fills it in place, step by step
    rows: list[list[int]] = [[] for _ in range(prompts.shape[0])]
    done = [False] * prompts.shape[0]  # host-side: one device sync per step (the tokens), not one per row
    for _ in range(length):
        probs = nucleus(out.logits[:, -1, :], cfg.temperature, cfg.top_p)
        nxt = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
        for i, t in enumerate(nxt[:, 0].tolist()):
            if not done[i]:
                if t == eos:
                    done[i] = True
                else:
                    rows[i].append(t)
        if all(done):
            break
        out = hf(input_ids=nxt, use_cache=True, **kw)
    return rows


def _prompt_stream(tokenizer, spec: str, prompt_tokens: int) -> torch.Tensor:
    from slimlm.data import encode, load_data

    texts = load_data(spec).texts("train")
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stream: list[int] = []
    for t in texts:
        stream += encode(tokenizer, t) + eos
    if len(stream) <= prompt_tokens:
        raise DataError(f"prompt data {spec} has {len(stream)} tokens, too few for prompts of {prompt_tokens}.")
    return torch.tensor(stream, dtype=torch.long)


def _prompts(b: int, cfg: SampleConfig, stream: torch.Tensor | None, start: int | None) -> torch.Tensor:
    """Batch ``b``'s prompts (B, P): BOS rows, or windows of the prompt stream at offsets seeded by (seed, b)."""
    if stream is None:
        return torch.full((cfg.batch_size, 1), start, dtype=torch.long)
    g = torch.Generator().manual_seed(_batch_seed(cfg.seed, b) ^ 0x5EED)
    offs = torch.randint(0, stream.numel() - cfg.prompt_tokens, (cfg.batch_size,), generator=g)
    return torch.stack([stream[o : o + cfg.prompt_tokens] for o in offs.tolist()])


def _batch_seed(seed: int, b: int) -> int:
    return (seed * 1_000_003 + b) % (2**62)


def _read_state(out: Path) -> dict | None:
    try:
        state = json.loads((out / MARKER).read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise OutputError(f"{out / MARKER} cannot be read ({exc}); choose a new directory.") from None
    if not isinstance(state, dict) or "format" not in state or not isinstance(state.get("bytes"), int):
        # a file of the same name that slimlm did not write: neither it nor the text beside it is ours
        raise OutputError(f"{out / MARKER} is not a record slimlm generate wrote; slimlm leaves that directory "
                          "alone: choose a new one.")
    return state


def _start(out: Path, cfg: SampleConfig, model, resume: bool, force: bool) -> dict:
    """The state to continue from: a fresh one, or the recorded one of an earlier run that matches."""
    out = check_out(out, kind="samples", force=force or resume)
    state = _read_state(out)
    fresh = {"format": FORMAT, "settings": cfg.key(), "tokens_asked": cfg.tokens,
             "model": {"spec": model.spec, "hash": model.hash}, "batches": 0, "rows": 0, "tokens": 0, "bytes": 0,
             "eos_rows": 0, "seconds": 0.0, "finished": False}
    if state is None or (force and not resume):
        if state is not None:  # --force: replace our own two files, nothing else in the directory
            for name in (TEXT_FILE, MARKER):
                (out / name).unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        (out / TEXT_FILE).touch()
        write_json_atomic(out / MARKER, fresh)
        return fresh
    want, had = cfg.key(), state.get("settings") or {}
    if state.get("format") != FORMAT or had != want:
        diff = sorted(k for k in set(want) | set(had) if had.get(k) != want.get(k))
        raise ConfigError(f"{out} was sampled with other settings ({', '.join(diff) or 'format'}); resume with the "
                          "same ones, or pass --force to start over.")
    if state.get("model", {}).get("hash") != model.hash:
        raise ConfigError(f"{out} was sampled from another model ({state.get('model', {}).get('spec')}); resume "
                          "with that one, or pass --force to start over.")
    text = out / TEXT_FILE
    size = text.stat().st_size if text.exists() else -1
    if size < state["bytes"]:
        raise OutputError(f"{text} is shorter than {out / MARKER} records ({size} < {state['bytes']} bytes); "
                          "pass --force to start over.")
    if size > state["bytes"]:
        _check_tail(text, state)
        os.truncate(text, state["bytes"])  # drop a batch a kill left unrecorded (slimlm wrote those bytes)
    state["tokens_asked"] = cfg.tokens
    return state


_ROW_KEYS = ["text", "split", "row", "prompt"]


def _check_tail(text: Path, state: dict) -> None:
    """`OutputError` unless the bytes past the recorded end are a batch slimlm was writing when it stopped.

    Those are whole rows numbered on from the recorded ones, in the order and with the keys this module writes,
    then at most one line cut off mid-write that starts the way every row does. Anything else (a row a user
    appended, text pasted at the end) is not slimlm's to cut away.
    """
    with open(text, "rb") as f:
        f.seek(state["bytes"])
        tail = f.read()
    lines = tail.split(b"\n")
    cut = lines.pop()  # b"" when the tail ends with a newline
    ours = True
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except ValueError:
            ours = False
            break
        if not isinstance(row, dict) or list(row) != _ROW_KEYS or row["row"] != state["rows"] + i:
            ours = False
            break
    start = b'{"text": '  # how every row begins; a kill may cut even that short
    if ours and cut and not (cut.startswith(start) or start.startswith(cut)):
        ours = False
    if not ours:
        raise OutputError(f"{text} goes on past what slimlm recorded writing ({len(tail)} more bytes) with lines "
                          "slimlm did not write; move them to another file, then --resume (or --force to start "
                          "over).")


def _dtype(cfg: SampleConfig, device: torch.device) -> torch.dtype:
    if cfg.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return torch.float32 if cfg.dtype == "float32" else torch.bfloat16


def sample_text(model, out: str | Path, cfg: SampleConfig, *, resume: bool = False, force: bool = False,
                device: str = "auto", progress: Callable | None = None,
                log: Callable[[str], None] | None = None, max_seconds: float | None = None) -> dict:
    """Sample ``cfg.tokens`` new tokens from ``model`` (a causal LM) into the directory ``out``.

    Args:
        model: a loaded causal language model (`slimlm.models.load`); it is put back on its device and dtype
            afterwards.
        out: the output directory (absent, empty, or an earlier sample of the same settings with ``resume``).
        cfg: a `SampleConfig`.
        resume: continue an earlier, interrupted (or shorter) run with the same settings and model.
        force: start over, replacing an earlier sample's ``text.jsonl`` and ``samples.json`` (nothing else).
        device: ``auto`` (a GPU if there is one), ``cpu``, ``cuda:0``.
        progress: ``progress(desc, tokens_done, tokens_asked)``.
        max_seconds: a time budget for this call: once a batch ends past it, stop (at least one batch is
            sampled). The folder is then unfinished, usable as it is, and ``resume`` continues it.

    Returns:
        ``{"out", "finished", "rows", "tokens", "eos_rows", "seconds", "tokens_per_s", "splits", "model",
        "settings", "resumed_from"}``.
    """
    from slimlm._device import pick_device

    if not model.adapter.causal:
        raise ConfigError(f"{model.spec} is not a causal language model; sampling text needs a decoder.")
    out = Path(out).expanduser()
    tok = model.tokenizer
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    if cfg.prompt_data is None and start is None:
        raise ConfigError(f"{model.spec}'s tokenizer has neither a BOS nor an EOS token to start rows from; give "
                          "--prompt-data and --prompt-tokens.")
    stream = _prompt_stream(tok, cfg.prompt_data, cfg.prompt_tokens) if cfg.prompt_data else None
    state = _start(out, cfg, model, resume, force)
    resumed_from = state["tokens"] if state["batches"] else None
    dev = pick_device(device)
    hf, was_training = model.hf, model.hf.training
    kept = _tensors(hf)  # the model's own tensors, put back afterwards: a dtype round trip would round them
    hf.to(device=dev, dtype=_dtype(cfg, dev)).eval()
    if log and resumed_from is not None:
        log(f"resuming {out}: {state['rows']} rows, {state['tokens']} tokens written")
    report = progress or (lambda *a: None)
    started = time.perf_counter()
    try:
        with open(out / TEXT_FILE, "ab") as f:
            while state["tokens"] < cfg.tokens:
                b, t0 = state["batches"], time.perf_counter()
                prompts = _prompts(b, cfg, stream, start)
                gen = torch.Generator(device=dev).manual_seed(_batch_seed(cfg.seed, b))
                new = sample_batch(hf, prompts.to(dev), cfg.length, cfg, tok.eos_token_id, gen)
                lines = []
                for i, ids in enumerate(new):
                    row = state["rows"] + i
                    prompt = "" if stream is None else tok.decode(prompts[i].tolist())
                    lines.append(json.dumps({"text": tok.decode(ids, skip_special_tokens=True), "split": split_of(row),
                                             "row": row, "prompt": prompt}, ensure_ascii=False))
                    state["tokens"] += len(ids)
                    state["eos_rows"] += len(ids) < cfg.length
                f.write(("\n".join(lines) + "\n").encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
                state.update(batches=b + 1, rows=state["rows"] + len(new), bytes=f.tell(),
                             seconds=round(state["seconds"] + time.perf_counter() - t0, 3))
                state["finished"] = state["tokens"] >= cfg.tokens
                write_json_atomic(out / MARKER, state)
                report("sample", min(state["tokens"], cfg.tokens), cfg.tokens)
                if max_seconds is not None and time.perf_counter() - started >= max_seconds:
                    break
    finally:
        _put_back(kept)
        hf.train(was_training)
    return {"out": str(out), "finished": state["finished"], "rows": state["rows"], "tokens": state["tokens"], "eos_rows": state["eos_rows"],
            "seconds": state["seconds"],
            "tokens_per_s": round(state["tokens"] / state["seconds"], 1) if state["seconds"] else None,
            "splits": _split_counts(state["rows"]), "model": state["model"], "settings": state["settings"],
            "device": str(dev), "resumed_from": resumed_from}


def _tensors(hf) -> list[tuple]:
    """``(module, kind, name, tensor)`` for every parameter and buffer (a tied weight once per owner)."""
    return [(m, kind, n, t.data) for m in hf.modules() for kind in ("_parameters", "_buffers")
            for n, t in getattr(m, kind).items() if t is not None]


def _put_back(kept: list[tuple]) -> None:
    for m, kind, n, t in kept:
        if kind == "_parameters":
            m._parameters[n].data = t
        else:
            m._buffers[n] = t


def _split_counts(rows: int) -> dict:
    counts = {"train": 0, "calibration": 0, "eval": 0}
    for r in range(rows):
        counts[split_of(r)] += 1
    return counts
