"""`slimlm sensitivity`: quality when each block (or each block's heads / FFN / weights) is pruned alone."""

from __future__ import annotations

import os

import typer
from rich.table import Table

from slimlm.cli import _options as O
from slimlm.cli._out import emit_json, fmt, out, progress_bars, status
from slimlm.errors import OutputError


def sensitivity_command(
    model: str = typer.Argument(..., metavar="MODEL", help="Model spec: builtin:smollm2-135m, tiny:llama, a directory, a .gguf file."),
    data: str = typer.Option("shakespeare", "--data", help="Data spec: calibration split for importance, eval split for quality."),
    kind: str = typer.Option("layers", "--kind", help="layers | ffn | heads | unstructured."),
    ratios: str = typer.Option("0.25,0.5", "--ratios", help="Fractions pruned per block (ignored for layers)."),
    calib_samples: int = typer.Option(16, "--calib-samples", min=1, help="Calibration windows for importance."),
    calib_seq_len: int = typer.Option(256, "--calib-seq-len", min=2, help="Tokens per calibration window."),
    eval_samples: int = typer.Option(8, "--eval-samples", min=1, help="Eval windows for the quality measure."),
    eval_seq_len: int = typer.Option(256, "--eval-seq-len", min=2, help="Tokens per eval window."),
    out_file: str | None = typer.Option(None, "--out", help="Also write the JSON to this file."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out file."),
    trust_remote_code: bool = O.TRUST_REMOTE_CODE,
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Prune each block alone at each ratio and report the quality change (a table, or JSON for reports)."""
    from slimlm._io import write_json_atomic
    from slimlm.data import load_data, pack
    from slimlm.errors import ConfigError
    from slimlm.models import load
    from slimlm.prune import make_calibration
    from slimlm.prune.sensitivity import KINDS, sensitivity

    if kind not in KINDS:
        raise ConfigError(f"--kind {kind!r} is unknown; use one of {', '.join(KINDS)}.")
    try:
        ratio_list = tuple(float(r) for r in ratios.split(",") if r.strip())
    except ValueError:
        raise ConfigError(f"--ratios {ratios!r} is not a comma-separated list of fractions (e.g. 0.25,0.5).") from None
    if out_file:
        from slimlm._io import check_out

        out_file = str(check_out(out_file, force=force, kind="file"))  # written where it was checked
        from slimlm.data.corpus import absolute_spec

        inputs = [part.partition("?")[0] for part in absolute_spec(data).split("+")]
        if os.path.exists(out_file) and any(os.path.exists(i) and os.path.samefile(i, out_file) for i in inputs):
            raise OutputError(f"--out {out_file} is the --data file this command reads; --force would replace your "
                              "data with the result: choose another name.")
    corpus = load_data(data)
    m = load(model, progress=status, trust_remote_code=trust_remote_code)
    calib = make_calibration(m, corpus, calib_samples, calib_seq_len)
    windows = pack(m.tokenizer, corpus.texts("eval"), eval_seq_len)[:eval_samples]
    with progress_bars(not as_json) as bar:
        res = sensitivity(m, calib, windows, kind=kind, ratios=ratio_list, progress=bar)
    res = {"model": model, "data": data, **res}
    if out_file:
        write_json_atomic(out_file, res)
    if as_json:
        emit_json(res)
        return
    table = Table(title=f"sensitivity of {model} ({kind}; {res['metric']}, baseline {fmt(res['baseline'])})")
    table.add_column("layer", justify="right")
    for r in res["ratios"]:
        table.add_column("removed" if kind == "layers" else f"{r:g}", justify="right")
    by_layer: dict[int, dict] = {}
    for row in res["rows"]:
        by_layer.setdefault(row["layer"], {})[row["ratio"]] = row
    for layer, cells in by_layer.items():
        table.add_row(str(layer), *(f"{fmt(c['value'])} ({c['ratio_to_baseline']:.2f}×)" for c in cells.values()))
    out.print(table)
