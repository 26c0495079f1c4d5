"""`slimlm prune`: prune a model (unstructured, N:M, OWL, or structured with physical removal) and save the variant."""

from __future__ import annotations

import typer
from rich.table import Table

from slimlm.cli import _options as O
from slimlm.cli._out import emit_json, fmt, out, progress_bars, status

#: options of unstructured / N:M pruning only, which `--structured` has no use for
UNSTRUCTURED_ONLY = ("sparsity", "pattern", "allocation", "include", "sequential", "blocksize", "damp")


def _given(ctx: typer.Context, names) -> list[str]:
    """The flags among ``names`` (parameter names) that the user gave, as typed; a default is not given."""
    flags = []
    for name in names:
        source = ctx.get_parameter_source(name)
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            if name == "sequential":
                flags.append("--sequential" if ctx.params[name] else "--no-sequential")
            else:
                flags.append("--" + name.replace("_", "-"))
    return flags


def _config(method, sparsity, pattern, allocation, include, sequential, structured, layer_importance, head_mode,
            ffn_importance, blocksize, damp, unstructured_given=()):
    from slimlm.errors import ConfigError
    from slimlm.prune import make_config, parse_structured

    if structured:
        if method not in (None, "structured"):
            raise ConfigError("--structured removes structure; drop --method (or use --method structured).")
        if unstructured_given:
            raise ConfigError(f"--structured removes structure; drop {', '.join(unstructured_given)} (options of "
                              "unstructured and N:M pruning).")
        return parse_structured(structured, layer_importance=layer_importance, head_mode=head_mode,
                                ffn_importance=ffn_importance)
    method = method or "wanda"
    if method == "structured":
        raise ConfigError("--method structured needs --structured, for example --structured ffn=0.25.")
    fields: dict = {"allocation": allocation, "sequential": sequential}
    if pattern:
        fields["pattern"] = pattern
    if sparsity is not None or not pattern:
        fields["sparsity"] = 0.5 if sparsity is None else sparsity
    if include:
        fields["include"] = tuple(s.strip() for s in include.split(",") if s.strip())
    if method == "sparsegpt":
        fields.update(blocksize=blocksize, damp=damp)
    return make_config(method, **fields)


def prune_command(
    ctx: typer.Context,
    model: str = typer.Argument(..., metavar="MODEL", help="Model spec: builtin:smollm2-135m, tiny:llama, a directory, a .gguf file."),
    out_dir: str = typer.Option(..., "--out", help="Directory for the pruned variant (replaced atomically)."),
    data: str = typer.Option("shakespeare", "--data", help="Calibration data spec (its calibration split)."),
    calib_samples: int = typer.Option(128, "--calib-samples", min=1, help="Calibration windows."),
    calib_seq_len: int = typer.Option(512, "--calib-seq-len", min=2, help="Tokens per calibration window."),
    seed: int = typer.Option(0, "--seed", help="Seed of the calibration sampler."),
    method: str | None = typer.Option(None, "--method", help="magnitude | wanda | sparsegpt (default wanda)."),
    sparsity: float | None = typer.Option(None, "--sparsity", min=0.0, max=1.0, help="Fraction of weights to zero (default 0.5)."),
    pattern: str | None = typer.Option(None, "--pattern", help="Semi-structured N:M, e.g. 2:4 or 4:8."),
    allocation: str = typer.Option("uniform", "--allocation", help="uniform | owl (outlier-weighted per layer)."),
    include: str | None = typer.Option(None, "--include", help="Also prune: lm_head,embeddings (default: neither)."),
    sequential: bool = typer.Option(True, "--sequential/--no-sequential",
                                    help="Calibrate each block on the outputs of the pruned blocks before it."),
    blocksize: int = typer.Option(128, "--blocksize", min=1, help="SparseGPT: columns per lazy update block."),
    damp: float = typer.Option(0.01, "--damp", help="SparseGPT: Hessian damping, fraction of the mean diagonal."),
    structured: str | None = typer.Option(None, "--structured",
                                             help="Physical removal: layers=6,heads=0.33,ffn=0.25,hidden=0.1,vocab=domain."),
    layer_importance: str = typer.Option("block_influence", "--layer-importance", help="block_influence | perplexity."),
    head_mode: str = typer.Option("auto", "--head-mode", help="auto | groups (whole KV groups) | query (evenly per group)."),
    ffn_importance: str = typer.Option("activation", "--ffn-importance", help="activation | taylor."),
    schedule: str = typer.Option("oneshot", "--schedule", help="oneshot | iterative (cubic ramp, evaluated per step)."),
    steps: int = typer.Option(4, "--steps", min=1, help="Steps of an iterative schedule."),
    eval_tokens: int = typer.Option(0, "--eval-tokens", min=0,
                                    help="Also measure perplexity on the data's eval split with this token budget (0: skip)."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier slimlm variant at --out."),
    trust_remote_code: bool = O.TRUST_REMOTE_CODE,
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Prune a model and save it as a variant whose slimlm.json records the config and the measured sparsity."""
    from slimlm.prune import ScheduleConfig
    from slimlm.prune.job import prune_job

    cfg = _config(method, sparsity, pattern, allocation, include, sequential, structured, layer_importance,
                  head_mode, ffn_importance, blocksize, damp,
                  _given(ctx, UNSTRUCTURED_ONLY))  # validate before loading anything
    sched = ScheduleConfig(kind=schedule, steps=steps if schedule == "iterative" else 1)
    with progress_bars(not as_json) as bar:
        res = prune_job(model, cfg, out_dir, data=data, schedule=sched, calib_samples=calib_samples,
                        calib_seq_len=calib_seq_len, seed=seed, eval_tokens=eval_tokens, force=force,
                        trust_remote_code=trust_remote_code, progress=bar, log=status)
    if as_json:
        emit_json(res)
        return
    _print(res, cfg)


def _print(res: dict, cfg) -> None:
    table = Table(title=f"prune ({cfg.method}) -> {res['out']}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key in ("params_before", "params_after", "sparsity", "sparsity_all_params", "perplexity", "accuracy",
                "f1", "seconds"):
        if res.get(key) is not None:
            table.add_row(key, fmt(res[key]))
    for k, v in (res.get("shape_after") or {}).items():
        table.add_row(f"shape {k}", fmt(v))
    out.print(table)
    if isinstance(res.get("layers"), list):
        lt = Table(title="achieved sparsity per layer")
        lt.add_column("layer", justify="right")
        lt.add_column("target", justify="right")
        lt.add_column("achieved", justify="right")
        for row in res["layers"]:
            lt.add_row(str(row["layer"]), fmt(row.get("target")), fmt(row["achieved"], 4))
        out.print(lt)
    if len(res.get("steps") or []) > 1:
        st = Table(title="schedule")
        metric = "accuracy" if "accuracy" in (res["steps"][-1].get("metrics") or {}) else "perplexity"
        for c in ("step", "target", "sparsity", metric, "seconds"):
            st.add_column(c, justify="right")
        for r in res["steps"]:
            st.add_row(str(r["step"]), fmt(r["sparsity_target"]), fmt(r["sparsity"], 4),
                       fmt((r.get("metrics") or {}).get(metric)), fmt(r["seconds"]))
        out.print(st)
