"""Quantization benchmark: our schemes beside torch.ao and plain torchao, side by side in one process.

    .venv/bin/python bench/quantize.py                 # SmolLM2-135M, Shakespeare calibration + eval, pydoc
    .venv/bin/python bench/quantize.py --quick         # a tiny model, to check the script in a minute

For every variant: perplexity ratio to fp32 on the Shakespeare eval plays (in domain) and on Python docstrings
(out of domain; calibration was Shakespeare), weights on disk, peak RSS (a fresh process per variant), prefill
latency ratio at 1x128 and 8x128 and decode tokens/s ratio, all from `slimlm.profile.compare` (interleaved).
Our variants are saved and reloaded through `slimlm.models.load` before they are measured, so the numbers
are those of the saved format. Writes bench/results/quantize.json and .md; states the targets and whether
each is met.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent
TARGETS = {
    "int8-dynamic perplexity ratio <= 1.02": ("int8_ppl", 1.02, "le"),
    "int8-dynamic prefill speedup >= 2x (1x128)": ("int8_speed_1x128", 2.0, "ge"),
    "int8-dynamic prefill speedup >= 2x (8x128)": ("int8_speed_8x128", 2.0, "ge"),
    "int4 weight-only perplexity ratio <= 1.15": ("int4_ppl", 1.15, "le"),
    "pruned 50% + int8: extra loss <= sum of the two": ("compose_margin", 0.0, "le"),
    "pruned 50% + int8: pruned weights still zero": ("compose_zeros", 1.0, "ge"),
}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in Path(path).rglob("*.safetensors")) / 2**20


def _peak_rss(path: Path, threads: int) -> float | None:
    cmd = [sys.executable, "-m", "slimlm.profile.memprobe", str(path), "--shape", "8x128", "--decode", "64",
           "--threads", str(threads)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def _ppl(model, corpus, tokens: int, seq_len: int) -> float:
    from slimlm.evaluate import evaluate

    return evaluate(model, corpus, max_tokens=tokens, seq_len=seq_len)["perplexity"]


def _clone(model):
    from slimlm.models import Model

    return Model(hf=copy.deepcopy(model.hf), tokenizer=model.tokenizer, spec=model.spec, path=None,
                 provenance={k: v for k, v in model.provenance.items() if k != "hash"})


def _peer(base, name: str):
    """Peers, applied to a copy of the fp32 model; lm_head stays fp32 for all of them."""
    m = _clone(base)
    m.spec = name
    body = m.adapter.base()
    if name == "torch.ao quantize_dynamic":
        torch.ao.quantization.quantize_dynamic(body, {nn.Linear}, dtype=torch.qint8, inplace=True)
        return m
    from torchao.quantization import (
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
        IntxWeightOnlyConfig,
    )
    from torchao.quantization import quantize_ as ao_quantize_
    from torchao.quantization.granularity import PerGroup

    cfg = {
        "torchao int8-dynamic": lambda: Int8DynamicActivationInt8WeightConfig(),
        "torchao int8-weight": lambda: Int8WeightOnlyConfig(),
        "torchao int4-weight g32": lambda: IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32)),
    }[name]()
    ao_quantize_(body, cfg)
    return m


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="builtin:smollm2-135m")
    p.add_argument("--quick", action="store_true", help="tiny model, few tokens: checks the script only")
    p.add_argument("--eval-tokens", type=int, default=8192)
    p.add_argument("--ood-tokens", type=int, default=4096)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--calib-rows", type=int, default=16)
    p.add_argument("--calib-len", type=int, default=512)
    p.add_argument("--group-size", type=int, default=32)
    p.add_argument("--smoothquant", type=float, default=0.5)
    p.add_argument("--tolerance", type=float, default=0.01)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--decode-repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant (~100 s per shape)")
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--fallback", action="store_true", help="add the per-layer fallback to the int8 target")
    p.add_argument("--plain-int8", action="store_true", help="also int8-dynamic without SmoothQuant")
    p.add_argument("--peers", default="torch.ao quantize_dynamic,torchao int8-dynamic",
                   help="peers to run (also: torchao int8-weight, torchao int4-weight g32)")
    p.add_argument("--only", default="", help="comma-separated variant names to build (debugging)")
    p.add_argument("--out", default=str(ROOT / "results" / "quantize"))
    a = p.parse_args(argv)

    from slimlm._quiet import quiet

    quiet()
    torch.set_num_threads(a.threads)
    from slimlm.data import calibration_batch, load_data
    from slimlm.models import load
    from slimlm.profile import compare, machine_info
    from slimlm.quantize import (
        FallbackConfig,
        Int4WeightConfig,
        Int8DynamicConfig,
        Int8WeightConfig,
        compile_,
        quantize_,
        save,
    )

    if a.quick:
        a.model = "tiny:llama?layers=4&hidden=128&heads=4&kv_heads=2&ffn=256"
        a.eval_tokens, a.ood_tokens, a.seq_len, a.calib_rows, a.calib_len, a.repeats = 2048, 1024, 128, 12, 128, 3
        a.no_compile = True
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="slimlm-bench-quantize-"))
    base = load(a.model)
    sh, pyd = load_data("shakespeare"), load_data("pydoc")
    calib = calibration_batch(base.tokenizer, sh, a.calib_rows, a.calib_len, seed=0)
    fallback = FallbackConfig(tolerance=a.tolerance, holdout=4)
    g = a.group_size
    int8_cfg = Int8DynamicConfig(smoothquant=a.smoothquant, fallback=fallback if a.fallback else None)
    target_int8 = f"int8-dynamic sq{a.smoothquant}" + (f" fallback{a.tolerance}" if a.fallback else "")
    ours = {
        target_int8: int8_cfg,
        "int8-weight": Int8WeightConfig(),
        f"int4-weight rtn g{g}": Int4WeightConfig(method="rtn", group_size=g),
        f"int4-weight gptq g{g}": Int4WeightConfig(method="gptq", group_size=g),
    }
    if a.plain_int8:
        ours = {"int8-dynamic": Int8DynamicConfig(), **ours}
    target_int4 = f"int4-weight gptq g{g}"
    only = {s for s in a.only.split(",") if s}

    rows: list[dict] = []
    models: list = []

    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def add(name: str, model, kind: str, ood: bool = False, **info) -> dict:
        row = {"variant": name, "kind": kind, **info}
        t = time.time()
        row["ppl"] = _ppl(model, sh, a.eval_tokens, a.seq_len)
        if ood:  # out of domain: for fp32 and the methods calibrated on Shakespeare
            row["ppl_ood"] = _ppl(model, pyd, a.ood_tokens, a.seq_len)
        row["eval_seconds"] = time.time() - t
        rows.append(row)
        models.append(model)
        out.with_suffix(".partial.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
        _log(f"{name}: ppl {row['ppl']:.3f} (ood {row.get('ppl_ood', float('nan')):.3f})")
        return row

    add("fp32", base, "reference", ood=True, disk_mb=_dir_mb(base.path) if base.path else None, path=str(base.path or ""))
    probe = torch.randint(0, base.adapter.vocab_size, (1, 64), generator=torch.Generator().manual_seed(0))

    def build(name: str, cfg, src=None, kind="ours", extra_info=None, ood=False):
        m = _clone(src or base)
        t = time.time()
        report = quantize_(m, cfg, calib, progress=None)
        secs = time.time() - t
        path = save(m, work / name.replace(" ", "_"), cfg, report)
        back = load(path)
        with torch.inference_mode():
            same = bool(torch.equal(m.hf(probe).logits, back.hf(probe).logits))
        info = {"quantize_seconds": secs, "disk_mb": _dir_mb(path), "path": str(path), "reload_identical": same,
                "fp32_layers": report.get("fp32_layers", []), "config": cfg.model_dump(mode="json"),
                **(extra_info or {})}
        if "fallback" in report:
            info["fallback_frontier"] = report["fallback"]["frontier"]
        del m
        _log(f"{name}: quantized in {secs:.0f} s, reload identical: {same}")
        return add(name, back, kind, ood=ood, **info), back

    calibrated = {target_int8, f"int4-weight gptq g{g}"}
    built = {}
    for name, cfg in ours.items():
        if only and name not in only:
            continue
        built[name] = build(name, cfg, ood=name in calibrated)[1]
        if name.startswith("int4-weight rtn"):  # same kernel as GPTQ's variant: quality only, not timed
            rows[-1]["not_timed"] = True
            del models[-1]
    # the int8 target with lm_head quantized too (on request; embeddings stay fp32): quantize_ on the saved
    # variant only finds the lm_head left, so no second calibration pass is needed
    if target_int8 in built:
        head = Int8DynamicConfig(skip=("embed",))
        hm = load(built[target_int8].path)
        rep = quantize_(hm, head)
        hpath = save(hm, work / "int8_lm_head", head, rep)
        hm = load(hpath)
        add(f"{target_int8} +lm_head", hm, "ours", disk_mb=_dir_mb(hpath), path=str(hpath),
            note="the target variant, then lm_head quantized to int8-dynamic as well")

    # int4 with torchao's CPU int4 kernel (bf16 activations) instead of unpacking to fp32
    if target_int4 in built:
        from slimlm.models.qlayers import Int4WeightLinear

        fast = load(built[target_int4].path)
        for mod in fast.hf.modules():
            if isinstance(mod, Int4WeightLinear):
                mod.set_kernel("int4pack")
        fast.spec = f"{target_int4} int4pack"
        add(fast.spec, fast, "ours", disk_mb=_dir_mb(fast.path),
            path=str(fast.path), note="same saved weights; kernel torch._weight_int4pack_mm_for_cpu, bf16 activations")

    # composition: 50% unstructured pruning (Wanda, slimlm.prune), then the target int8 config
    compose = {}
    if not only or "pruned" in only:
        from slimlm.prune import WandaConfig, make_calibration, prune_

        pruned = _clone(base)
        prune_(pruned, WandaConfig(sparsity=0.5), make_calibration(pruned, sh, n=a.calib_rows, seq_len=a.calib_len))
        masks = {n: (lin.weight == 0).clone() for n, lin in pruned.adapter.block_linears().items()}
        prow = add("pruned 50% (wanda, fp32)", pruned, "ours", disk_mb=None)
        qrow, qpm = build(f"pruned 50% + {target_int8}", ours[target_int8], src=pruned, ood=True)
        if "int8-dynamic" in built:  # --plain-int8: the composition without SmoothQuant as well
            build("pruned 50% + int8-dynamic", ours["int8-dynamic"], src=pruned)
        mods = dict(qpm.hf.named_modules())
        zeros_ok, total = 0, 0
        for n, mask in masks.items():
            mod = mods[n]
            w = mod.qweight if hasattr(mod, "qweight") else mod.weight
            total += int(mask.sum())
            zeros_ok += int((w[mask] == 0).sum())
        compose = {"zeros_expected": total, "zeros_kept": zeros_ok}
        qrow["zeros_kept_share"] = zeros_ok / max(total, 1)
        del models[next(i for i, m in enumerate(models) if m is pruned)]  # same dense compute as fp32
        prow["not_timed"] = True

    compiled = None
    if not a.no_compile and target_int8 in built:
        compiled = load(built[target_int8].path)
        compile_(compiled)
        t = time.time()
        try:
            with torch.inference_mode():
                for b, s in ((1, 128), (8, 128)):
                    compiled.runner(torch.zeros(b, s, dtype=torch.long), use_cache=False)
        except Exception as exc:  # noqa: BLE001 - report a failed compile, keep the eager results
            rows.append({"variant": f"{target_int8} + torch.compile", "kind": "ours",
                         "error": f"{type(exc).__name__}: {exc}"[:300]})
            compiled = None
        if compiled is not None:
            compiled.spec = f"{target_int8} + torch.compile"
            row = dict(next(r for r in rows if r["variant"] == target_int8))
            row.update(variant=compiled.spec, compile_seconds=time.time() - t,
                       note="prefill through the compiled module; decode runs eager generate()")
            rows.append(row)
            models.append(compiled)
            _log(f"compiled in {row['compile_seconds']:.0f} s")

    if not a.no_peers and not only:
        for name in [n.strip() for n in a.peers.split(",") if n.strip()]:
            try:
                add(name, _peer(base, name), "peer", disk_mb=None)
            except Exception as exc:  # noqa: BLE001 - a peer that fails is reported, not fatal
                rows.append({"variant": name, "kind": "peer", "error": f"{type(exc).__name__}: {exc}"[:200]})

    _log(f"timing {len(models)} models interleaved")
    prof = compare(models, shapes=((1, 128), (8, 128)), decode_tokens=64, repeats=a.repeats, memory=False,
                   threads=a.threads, decode_repeats=a.decode_repeats)
    timed = [r for r in rows if "error" not in r and not r.get("not_timed")]
    for r, pr in zip(timed, prof, strict=True):
        r["latency_ms"] = {k: v["p50"] for k, v in pr["latency_ms"].items()}
        r["decode_tokens_per_s"] = pr["decode_tokens_per_s"]
        r["ratios"] = {k: v for k, v in pr["ratios"].items() if not k.startswith("flops")}
    for r in rows:
        if r.get("path") and r["kind"] != "peer":
            r["peak_rss_mb"] = _peak_rss(Path(r["path"]), a.threads)
    ref = rows[0]
    for r in rows:
        if "ppl" in r:
            r["ppl_ratio"] = r["ppl"] / ref["ppl"]
            if "ppl_ood" in r:
                r["ppl_ood_ratio"] = r["ppl_ood"] / ref["ppl_ood"]

    by = {r["variant"]: r for r in rows}
    measured: dict = {}
    if target_int8 in by:
        # the speed targets hold for an int8-dynamic variant that also meets the quality target: the default
        # config, the same compiled, or with lm_head quantized on request (its own perplexity is measured)
        cands = [r for r in (by[target_int8], by.get(f"{target_int8} + torch.compile"), by.get(f"{target_int8} +lm_head"))
                 if r and "ratios" in r and r.get("ppl_ratio", by[target_int8]["ppl_ratio"]) <= 1.02]
        measured["int8_ppl"] = by[target_int8]["ppl_ratio"]
        if cands:
            best = max(cands, key=lambda r: r["ratios"]["prefill_speedup_1x128"])
            measured["int8_speed_variant"] = best["variant"]
            measured["int8_speed_variant_ppl"] = best.get("ppl_ratio", by[target_int8]["ppl_ratio"])
            measured["int8_speed_1x128"] = best["ratios"]["prefill_speedup_1x128"]
            measured["int8_speed_8x128"] = best["ratios"]["prefill_speedup_8x128"]
        measured["int8_speed_eager_1x128"] = by[target_int8]["ratios"]["prefill_speedup_1x128"]
    if target_int4 in by:
        measured["int4_ppl"] = by[target_int4]["ppl_ratio"]
    if compose:
        pr = by["pruned 50% (wanda, fp32)"]["ppl_ratio"]
        margins = {}  # per int8 config: extra relative perplexity beyond the sum of the two separate losses
        for cfg_name in (target_int8, "int8-dynamic"):
            if cfg_name in by and f"pruned 50% + {cfg_name}" in by:
                q, pq = by[cfg_name]["ppl_ratio"], by[f"pruned 50% + {cfg_name}"]["ppl_ratio"]
                margins[cfg_name] = (pq - 1) - ((pr - 1) + (q - 1))
                measured[f"compose_margin {cfg_name}"] = margins[cfg_name]
        best_cfg = min(margins, key=margins.get)
        measured["compose_margin"], measured["compose_config"] = margins[best_cfg], best_cfg
        measured["compose_zeros"] = compose["zeros_kept"] / max(compose["zeros_expected"], 1)
    verdict = {}
    for label, (key, bound, how) in TARGETS.items():
        v = measured.get(key)
        verdict[label] = None if v is None else (v <= bound if how == "le" else v >= bound)

    result = {"model": a.model, "data": {"in_domain": "shakespeare eval", "out_of_domain": "pydoc eval",
                                         "calibration": f"shakespeare calibration {a.calib_rows}x{a.calib_len}"},
              "eval_tokens": a.eval_tokens, "ood_tokens": a.ood_tokens, "seq_len": a.seq_len,
              "threads": a.threads, "machine": machine_info(), "rows": rows, "measured": measured,
              "targets": verdict, "seconds": time.time() - started, "command": " ".join(["bench/quantize.py", *sys.argv[1:]])}
    out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    md = _markdown(result)
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0


def _f(v, fmt="{:.3f}"):
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def _markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        "# Quantization benchmark", "",
        f"Model `{res['model']}`; perplexity on {res['eval_tokens']} tokens of the Shakespeare eval plays (in domain) "
        f"and {res['ood_tokens']} tokens of Python docstrings (`pydoc`, out of domain), windows of {res['seq_len']}; "
        f"calibration: {res['data']['calibration']}. Latency: `slimlm.profile.compare`, all variants interleaved "
        f"in one process, {res['threads']} threads, p50; ratios are fp32 / variant (above 1 is faster). Peak RSS: "
        "a fresh process loading the saved variant, prefill 8x128 + 64-token decode.", "",
        f"Machine: {json.dumps(m, default=str)[:400]}", "",
        f"Command: `{res['command']}` ({res['seconds'] / 60:.0f} min).", "",
        "| variant | ppl × fp32 | ood ppl × fp32 | disk MiB | peak RSS MiB | prefill 1x128 × | prefill 8x128 × | decode × | fp32 layers |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        if "error" in r:
            lines.append(f"| {r['variant']} | failed: {r['error']} | | | | | | | |")
            continue
        ra = r.get("ratios", {})
        lines.append(
            f"| {r['variant']} | {_f(r.get('ppl_ratio'), '{:.4f}')} | {_f(r.get('ppl_ood_ratio'), '{:.4f}')} | "
            f"{_f(r.get('disk_mb'), '{:.0f}')} | {_f(r.get('peak_rss_mb'), '{:.0f}')} | "
            f"{_f(ra.get('prefill_speedup_1x128'), '{:.2f}')} | {_f(ra.get('prefill_speedup_8x128'), '{:.2f}')} | "
            f"{_f(ra.get('decode_speedup'), '{:.2f}')} | {len(r.get('fp32_layers', []))} |"
        )
    ref = res["rows"][0]
    lines += ["", f"fp32: perplexity {ref['ppl']:.3f} (ood {ref['ppl_ood']:.3f}), prefill p50 "
              f"{ref.get('latency_ms', {}).get('1x128', float('nan')):.0f} ms at 1x128, "
              f"{ref.get('latency_ms', {}).get('8x128', float('nan')):.0f} ms at 8x128, decode "
              f"{_f(ref.get('decode_tokens_per_s'), '{:.1f}')} tok/s.", "", "## Targets", ""]
    for label, ok in res["targets"].items():
        lines.append(f"- {'MET' if ok else 'MISSED' if ok is not None else 'not measured'}: {label}")
    lines += ["", "Measured: " + ", ".join(f"{k} = {v:.4f}" if isinstance(v, float) else f"{k} = {v}" for k, v in res["measured"].items())]
    for r in res["rows"]:
        if r.get("fallback_frontier"):
            pts = ", ".join(f"{p['fp32_layers']} fp32 → ×{p['ppl_ratio']:.4f}" for p in r["fallback_frontier"])
            lines += ["", f"Fallback frontier walked for `{r['variant']}` (held-out calibration rows): {pts}; "
                      f"kept in fp32: {', '.join(r['fp32_layers']) or 'none'}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
