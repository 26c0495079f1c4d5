"""`slimlm export`: write a variant for llama.cpp (GGUF), ONNX Runtime or OpenVINO, checked on the way out.

Causal LMs go to every format; BERT-family encoders (embedding models, classifiers) to onnx and openvino
(`slimlm.export.encoder`), checked on their outputs instead of perplexity.
"""

from __future__ import annotations

import typer

from slimlm.cli import _options as O
from slimlm.cli._out import emit_json, fmt, measure_table, out, status


def export_command(
    model: str = typer.Argument(..., metavar="MODEL", help="Variant to export: a variant directory, a .gguf file, builtin:/tiny: spec."),
    fmt_: str = typer.Option(..., "--format", help="gguf, onnx, openvino, or transformers (torchao copy of a "
                             "slimlm-quantized variant that plain from_pretrained loads); encoders: onnx or openvino."),
    out_dir: str = typer.Option(..., "--out", help="Output directory (new, or one an earlier export wrote)."),
    precision: str | None = typer.Option(
        None, "--type", "--precision",
        help="gguf: f32|f16|bf16|q8_0|q5_0|q5_1|q4_0|q4_1, or llama.cpp's K-quants q4_k_s|q4_k_m|q5_k_s|q5_k_m|q6_k "
             "(default f16); onnx: fp32|int8; openvino: fp32|int8|int4."),
    check: bool = typer.Option(True, "--check/--no-check", help="Compare with the variant on a fixed sample (default "
                               "on): perplexity; encoders: embedding cosine or logits."),
    sample: str | None = typer.Option(None, "--sample", help="Text file for the check (default: Shakespeare eval)."),
    tolerance: float | None = typer.Option(None, "--tolerance", min=0.0, help="Relative perplexity tolerance "
                                           "(default per type); encoders: 1 - min cosine, or relative logit "
                                           "difference."),
    group_size: int = typer.Option(32, "--group-size", help="OpenVINO int4 group size (-1: one group per output "
                                   "channel)."),
    data_aware: bool = typer.Option(True, "--data-aware/--no-data-aware", help="Calibrate low-bit types on "
                                    "--data: openvino int4 with AWQ + scale estimation, gguf 4/5-bit and K-quants "
                                    "with an importance matrix (default on; off: from the weights alone)."),
    smoothquant: float | None = typer.Option(None, "--smoothquant", min=0.0, max=1.0, help="onnx int8: SmoothQuant "
                                             "strength applied before ONNX Runtime's int8 (default 0.8)."),
    no_smoothquant: bool = typer.Option(False, "--no-smoothquant", help="onnx int8: quantize without SmoothQuant."),
    data: str = typer.Option("shakespeare", "--data", help="Calibration data: onnx int8 SmoothQuant, openvino int4 "
                             "and gguf 4/5-bit data-aware compression."),
    trust_remote_code: bool = O.TRUST_REMOTE_CODE,
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Export to GGUF / ONNX / OpenVINO; the export must match the variant within tolerance on a fixed sample.

    Decoders: perplexity. Encoders (onnx, openvino): mean-pooled embedding cosine, or a classifier's logits.
    """
    from pathlib import Path

    from slimlm.errors import SpecError
    from slimlm.export import export
    from slimlm.models import load

    if group_size == 0 or group_size < -1:
        raise SpecError(f"--group-size {group_size}: give a positive group size, or -1 for one group per output "
                        "channel.")
    text = None
    if sample:
        p = Path(sample)
        if not p.is_file():
            raise SpecError(f"--sample {sample} is not a file; give a text file, or leave it out for Shakespeare.")
        text = p.read_text(encoding="utf-8", errors="replace")
    m = load(model, progress=status, trust_remote_code=trust_remote_code)
    res = export(m, fmt_, out_dir, precision=precision, check=check, sample_text=text, tolerance=tolerance,
                 group_size=group_size, progress=status, calib_data=data, data_aware=data_aware,
                 smoothquant=None if no_smoothquant else ("auto" if smoothquant is None else smoothquant))
    if as_json:
        emit_json(res)
        return
    table = measure_table(f"{model} → {fmt_} {res['precision']}")
    table.add_row("file", res["main_file"])
    table.add_row("size MB", fmt(sum(res["files"].values()) / 1e6))
    c = res.get("check")
    if c and c.get("metric") == "embedding_cosine":
        table.add_row("graph", f"{', '.join(res['inputs'])} → {res['output']}")
        table.add_row("embedding cosine (min / mean)", f"{c['min_cosine']:.6f} / {c['mean_cosine']:.6f}")
        table.add_row("1 - min cosine / tolerance", f"{1 - c['min_cosine']:.2e} / {c['tolerance']:g}")
        table.add_row("checked with", f"{c['reader']}, {c['sentences']} sentences ({c['padded_sentences']} padded)")
    elif c and c.get("metric") == "logits":
        table.add_row("graph", f"{', '.join(res['inputs'])} → {res['output']}")
        table.add_row("argmax agreement", f"{c['argmax_agreement']:.1%} (≥ {c['min_argmax_agreement']:.0%})")
        table.add_row("max |logit diff|", f"{c['max_abs_logit_diff']:.3g} ({c['relative_logit_diff']:.2%} of "
                      f"{c['logit_scale']:.3g}; ≤ {c['tolerance']:.2%})")
        table.add_row("checked with", f"{c['reader']}, {c['sentences']} sentences ({c['padded_sentences']} padded)")
    elif c:
        table.add_row("perplexity (variant)", fmt(c["variant_perplexity"]))
        table.add_row("perplexity (export)", fmt(c["export_perplexity"]))
        table.add_row("change / tolerance", f"{c['relative_change']:+.3%} / ±{c['tolerance']:.2%}")
        table.add_row("checked with", c["reader"])
        if c.get("tokenizer"):
            t = c["tokenizer"]
            table.add_row("tokenizer (runtime = variant)", f"{t['identical']}/{t['texts']} texts (≥ {t['min_agreement']:.0%})")
    table.add_row("seconds", fmt(res["seconds"]))
    out.print(table)
