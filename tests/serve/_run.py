"""A real tiny run directory for the serve tests: `compress tiny:llama` with an int8 recipe, plus a bad build.

Quality metrics are measured (compress evaluates every variant on the text); the efficiency metrics, which
a profile would take ~30 s to measure, are set to plausible values so the frontier and the cost forecast
exist, and a fourth, recorded-only variant (faster, beyond the tier) gives the frontier a second point. The
third variant is a broken build of the int8 variant: its logits are scaled ×30, so it is
confidently wrong, while its *recorded* metrics are copied from the good one, as if the artefact had been
swapped after the offline check. Pinning it is how the tests inject drift.
"""

from __future__ import annotations

import json
from pathlib import Path

TEXT = ("Shall I compare thee to a summer's day? Thou art more lovely and more temperate:\n"
        "Rough winds do shake the darling buds of May, and summer's lease hath all too short a date.\n") * 30


def _efficiency(m: dict, p50_ms: float, decode: float) -> None:
    m.update(latency_ms={"1x16": {"p50": p50_ms, "p90": p50_ms * 1.1, "p99": p50_ms * 1.3}},
             latency_p50_ms=p50_ms, latency_p99_ms=p50_ms * 1.3, decode_tokens_per_s=decode,
             energy_j_per_1k_tokens=5.0 * p50_ms / 16, disk_mb=m.get("disk_mb") or 0.6)


def build_run(out: Path) -> dict:
    """Write the run directory; returns ``{"dir", "text", "base", "good", "bad"}`` (variant ids)."""
    import torch

    from slimlm.models import load, save
    from slimlm.recipes import recipe_from_dict
    from slimlm.recipes.pipeline import RunOptions, compress

    out = Path(out)
    text = out.parent / "golden.txt"
    text.write_text(TEXT)
    recipe = recipe_from_dict({"name": "int8", "stages": [{"quantize": {"scheme": "int8-dynamic"}}]})
    opts = RunOptions(data=str(text), ood_data=None, eval_tokens=256, seq_len=32, shapes=((1, 16),), decode_tokens=4,
                      repeats=2, profile=False, teacher_agreement=True)
    compress("tiny:llama", [recipe], out, opts)
    lines = [json.loads(x) for x in (out / "variants.jsonl").read_text().splitlines() if x.strip()]
    base, good = lines[0], lines[1]
    _efficiency(base["metrics"], 12.0, 300.0)
    _efficiency(good["metrics"], 7.0, 500.0)
    base["metrics"]["teacher_top1"] = 1.0

    bad_model = load(out / good["path"])
    with torch.no_grad():
        bad_model.hf.get_output_embeddings().weight.mul_(30.0)  # tied: confident and wrong
    save(bad_model, out / "cache" / "badbuild")
    bad = json.loads(json.dumps(good))
    bad.update(id="badbuild", label="int8-dynamic (rebuilt)", path="cache/badbuild")
    _efficiency(bad["metrics"], 7.5, 480.0)
    # recorded only, never saved: faster and beyond the tier, so the frontier has two points and a line
    lossy = json.loads(json.dumps(good))
    lossy.update(id="fastlossy", label="prune (recorded only)", path=None)
    lossy["metrics"]["quality_drop"] = 0.08
    _efficiency(lossy["metrics"], 4.0, 700.0)
    (out / "variants.jsonl").write_text("".join(json.dumps(v) + "\n" for v in (base, good, bad, lossy)))
    return {"dir": out, "text": text, "base": base["id"], "good": good["id"], "bad": "badbuild"}
