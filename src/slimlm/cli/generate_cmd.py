"""`slimlm generate`: sample training text from a model (the teacher), for distillation on general text."""

from __future__ import annotations

from pathlib import Path

import typer

from slimlm.cli import _options as O
from slimlm.cli._out import emit_json, fmt, measure_table, out, progress_bars, status
from slimlm.errors import ConfigError


def generate_command(
    model: str = typer.Argument(..., metavar="MODEL", help="The model to sample from (usually the teacher): builtin:smollm2-135m, "
                                "tiny:llama, a directory, a .gguf file."),
    out_dir: Path = typer.Option(..., "--out", help="Output directory: text.jsonl and samples.json."),
    tokens: int = typer.Option(100_000, "--tokens", min=1, help="New tokens to sample (whole batches; at least this many)."),
    length: int = typer.Option(256, "--length", min=1, help="Most new tokens per row (a row also ends at EOS)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Rows sampled together."),
    temperature: float = typer.Option(1.0, "--temperature", help="Softmax temperature (1: the model's distribution)."),
    top_p: float = typer.Option(0.95, "--top-p", help="Nucleus: sample from the most likely tokens holding this mass."),
    prompt_data: str | None = typer.Option(None, "--prompt-data", help="Start rows from windows of this data's train "
                                           "split instead of BOS (needs --prompt-tokens)."),
    prompt_tokens: int = typer.Option(0, "--prompt-tokens", min=0, help="Tokens of --prompt-data that start each row."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto (a GPU if any, else CPU), cpu, cuda:0."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (bfloat16 on a GPU, float32 on a CPU), float32 or bfloat16."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads (default: torch's)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an earlier, interrupted or shorter run at --out."),
    max_minutes: float | None = typer.Option(None, "--max-minutes", help="Time budget: past it, stop after the "
                                             "batch in hand (the text so far is usable; --resume continues)."),
    force: bool = typer.Option(False, "--force", help="Start over, replacing an earlier sample at --out."),
    trust_remote_code: bool = O.TRUST_REMOTE_CODE,
    as_json: bool = O.JSON,
) -> None:
    """Sample text from MODEL into --out: a general corpus for --data / --general-data of distill and compress.

    Training a student on its teacher's samples (with the teacher's logits) is sequence-level distillation: the
    text is as general as the teacher, as large as compute allows, and needs no download.
    """
    import torch

    from slimlm.distill.samples import make_config, sample_text
    from slimlm.models import load

    if max_minutes is not None and max_minutes <= 0:
        raise ConfigError(f"--max-minutes must be above 0, got {max_minutes:g}.")
    cfg = make_config(tokens=tokens, length=length, batch_size=batch_size, temperature=temperature, top_p=top_p,
                      prompt_data=prompt_data, prompt_tokens=prompt_tokens, seed=seed, dtype=dtype)
    if prompt_data:
        from slimlm.data import load_data

        load_data(prompt_data)  # a bad data spec fails before any weights are read
    if threads:
        torch.set_num_threads(threads)
    m = load(model, progress=status, trust_remote_code=trust_remote_code)
    with progress_bars(not as_json) as bar:
        res = sample_text(m, out_dir, cfg, resume=resume, force=force, device=device, progress=bar, log=status,
                          max_seconds=None if max_minutes is None else max_minutes * 60)
    res["threads"] = torch.get_num_threads()
    if as_json:
        emit_json(res)
        return
    table = measure_table(f"text sampled from {model}")
    for key in ("rows", "tokens", "eos_rows", "seconds", "tokens_per_s", "device", "threads"):
        table.add_row(key.replace("_", " "), fmt(res[key]) if not isinstance(res[key], str) else res[key])
    table.add_row("splits", ", ".join(f"{k} {v}" for k, v in res["splits"].items()))
    out.print(table)
    out.print(f"text: {res['out']}/text.jsonl (use --data {res['out']} or --general-data {res['out']})",
              highlight=False)
    if not res["finished"]:
        out.print(f"stopped at the time budget with {res['tokens']} of {tokens} tokens; the text so far is usable, "
                  "and the same command with --resume continues it.", highlight=False)
