"""`slimlm quantize`: quantize a model with one scheme and save the variant."""

from __future__ import annotations

import typer

from slimlm.cli import _options as O
from slimlm.cli._out import emit_json, err, fmt, measure_table, out, progress_bars, status


def _skip_parts(skip: str) -> str:
    """``--skip`` as the config reads it: ``both`` (what the help offers) is ``lm_head,embed``."""
    parts = [p.strip() for p in skip.split(",")]
    return ",".join(dict.fromkeys(q for p in parts for q in (("lm_head", "embed") if p == "both" else (p,))))


def quantize_command(
    model: str = typer.Argument(..., metavar="MODEL", help="Model spec: builtin:smollm2-135m, tiny:llama, a directory, a .gguf file."),
    scheme: str = typer.Option(..., "--scheme", help="int8-dynamic, int8-weight or int4-weight."),
    out_dir: str = typer.Option(..., "--out", help="Directory for the quantized variant."),
    data: str | None = typer.Option(None, "--data", help="Calibration data spec (needed by gptq, smoothquant, fallback, qat)."),
    skip: str = typer.Option("lm_head,embed", "--skip", help="Parts kept in fp32: lm_head, embed, both, or 'none'."),
    exclude: str = typer.Option("", "--exclude", help="Comma-separated module names or suffixes kept in fp32."),
    group_size: int = typer.Option(32, "--group-size", min=1, help="int4-weight: input columns per scale (must divide every width)."),
    method: str = typer.Option("gptq", "--method", help="int4-weight: gptq (calibrated) or rtn (round to nearest)."),
    symmetric: bool = typer.Option(False, "--symmetric", help="int4-weight: llama.cpp's Q4_0 grid (zero point 8) "
                                   "instead of the asymmetric one: exports to GGUF q4_0 with the same weights."),
    tied_table: str = typer.Option("int4", "--tied-table", help="int4-weight with --skip none on a tied model: int4 "
                                   "keeps one matrix (the table reads the int4 lm_head); int8 gives the table its "
                                   "own int8 copy (larger, a little closer to fp32)."),
    kernel: str = typer.Option("dequant", "--kernel", help="int4-weight: dequant (fp32 reference) or int4pack (CPU int4 kernel, faster)."),
    smoothquant: float | None = typer.Option(None, "--smoothquant", min=0.0, max=1.0, help="int8-dynamic: SmoothQuant alpha in [0, 1]."),
    tolerance: float | None = typer.Option(None, "--tolerance", min=0.0, help="Per-layer fallback: allowed perplexity increase (0.01 = 1%)."),
    max_fallback: int | None = typer.Option(None, "--max-fallback", min=0, help="Fallback: at most this many layers moved."),
    fallback_to: str = typer.Option("fp32", "--fallback-to", help="Fallback: where sensitive layers go: fp32, or "
                                    "int8-weight (per-layer precision: int8 where int4 costs most)."),
    qat_steps: int = typer.Option(0, "--qat-steps", min=0, help="QAT: distillation steps after PTQ (0: no QAT)."),
    qat_if_drop_above: float | None = typer.Option(None, "--qat-if-drop-above", min=0.0, help="Hybrid: train only if the PTQ drop exceeds this."),
    qat_lr: float | None = typer.Option(None, "--qat-lr", help="QAT learning rate (default: 3e-4 for int4, 1e-5 "
                                        "for int8, lower above 135M trained parameters)."),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", min=0, help="QAT: write a resumable checkpoint "
                                         "(OUT.checkpoint) every N steps."),
    resume: bool = typer.Option(False, "--resume", help="QAT: continue from OUT.checkpoint."),
    max_minutes: float | None = typer.Option(None, "--max-minutes", help="QAT: time budget for training; past it, "
                                             "stop at the end of a step, write OUT.checkpoint and no variant "
                                             "(--resume continues)."),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing", help="QAT: recompute each "
                                                "block's activations in the backward pass instead of keeping them "
                                                "(less memory, one more forward pass of the blocks)."),
    calib_rows: int = typer.Option(32, "--calib-rows", min=1, help="Calibration windows."),
    calib_len: int = typer.Option(512, "--calib-len", min=2, help="Calibration window length (tokens)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the calibration sample and QAT batches."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier slimlm variant at --out."),
    trust_remote_code: bool = O.TRUST_REMOTE_CODE,
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Quantize MODEL (int8 dynamic, int8 / int4 weight-only; SmoothQuant, GPTQ, per-layer fallback, QAT)."""
    from slimlm.quantize import parse_config
    from slimlm.quantize.job import quantize_job

    cfg: dict = {"scheme": scheme, "skip": _skip_parts(skip), "exclude": [e for e in exclude.split(",") if e]}
    if scheme == "int4-weight":
        cfg.update(group_size=group_size, method=method, kernel=kernel, symmetric=symmetric, tied_table=tied_table)
    if smoothquant is not None:
        cfg["smoothquant"] = smoothquant
    if tolerance is not None or max_fallback is not None or fallback_to != "fp32":
        cfg["fallback"] = {"tolerance": tolerance if tolerance is not None else 0.01, "max_layers": max_fallback,
                           "to": fallback_to}
    if qat_steps or qat_if_drop_above is not None:
        cfg = {"scheme": "qat", "target": cfg, "steps": max(qat_steps, 1), "lr": qat_lr,
               "only_if_drop_above": qat_if_drop_above, "checkpoint_every": checkpoint_every,
               "gradient_checkpointing": gradient_checkpointing}
    elif checkpoint_every or gradient_checkpointing:
        from slimlm.errors import ConfigError

        flag = "--checkpoint-every" if checkpoint_every else "--gradient-checkpointing"
        raise ConfigError(f"{flag} is for QAT (--qat-steps N); PTQ does not train.")
    config = parse_config(cfg)  # a bad option fails before anything is loaded
    with progress_bars(not as_json) as bar:
        res = quantize_job(model, config, out_dir, data=data, calib_rows=calib_rows, calib_len=calib_len, seed=seed,
                           force=force, trust_remote_code=trust_remote_code, resume=resume, progress=bar, log=status,
                           max_seconds=None if max_minutes is None else max_minutes * 60)
    res["scheme"] = scheme
    if not res.get("finished", True) or res.get("already_finished"):
        if as_json:
            emit_json(res)
        elif res.get("already_finished"):
            out.print(f"{res['out']} already holds this run's variant; nothing to resume.", highlight=False)
        else:
            from slimlm.cli.distill_cmd import budget_message

            out.print("QAT " + budget_message(res, max(qat_steps, 1), "variant"), highlight=False)
        return
    from slimlm.profile.cpu import int8_gemm_support, int8_slow_warning

    warn = int8_slow_warning(int8_gemm_support()) if scheme == "int8-dynamic" else None
    res["warnings"] = [w for w in (warn, res.get("warning"), (res.get("qat") or {}).get("warning")) if w]
    for w in res["warnings"]:
        err.print(f"[yellow]warning: {w}[/yellow]", highlight=False)
    path = res["out"]
    if as_json:
        emit_json(res)
        return
    table = measure_table(f"{model} -> {path} ({scheme})")
    for key in ("params_before", "params_after", "quantized", "weights_mb", "seconds"):
        table.add_row(key, fmt(res[key]))
    table.add_row("fp32 layers", str(len(res["fp32_layers"])))
    if "int8_layers" in res:
        table.add_row("int8 layers (per-layer precision)", str(len(res["int8_layers"])))
    to = (res.get("fallback") or {}).get("to", "fp32")
    for point in (res.get("fallback") or {}).get("frontier", []):
        table.add_row(f"fallback: {point['fp32_layers']} {to} layers", f"ppl x{point['ppl_ratio']:.4f}")
    if "qat" in res:
        for k, v in res["qat"].items():
            if k == "warning":  # printed above
                continue
            table.add_row(f"qat {k}", fmt(v) if not isinstance(v, str) else v)
    out.print(table)
