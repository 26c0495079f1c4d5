"""``quantize_(model, config, calib)``: one in-place verb, dispatched on the config's type.

Each scheme is one module holding its config and its handler (`int8`, `int4`, `qat`); ``quantize_`` asks
the config (``config.quantize``), so this module knows no scheme by name. PTQ schemes share the driver
here, `ptq_`, which follows prepare -> calibrate -> convert: hooks gather statistics on the calibration batch (SmoothQuant's
activation maxima, GPTQ's Hessians), the weights are quantized into the modules of modules.py and swapped
in, and an optional per-layer fallback puts the most sensitive layers back in fp32.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from slimlm.calibration import InputStats, as_calibration, run_batches
from slimlm.errors import ConfigError
from slimlm.models.adapters import FamilyAdapter, adapter_for
from slimlm.models.qlayers import (
    Int4Embedding,
    Int4WeightLinear,
    Int8Embedding,
    Int8WeightLinear,
    set_module,
    share_input_quantization,
    tie_table,
)
from slimlm.quantize.fallback import lm_loss, walk
from slimlm.quantize.smoothquant import smooth_


def _hf(model) -> nn.Module:
    return getattr(model, "hf", model)


def select_targets(hf: nn.Module, config) -> dict[str, nn.Module]:
    """The modules a scheme quantizes, by qualified name: every block Linear, plus lm_head / embeddings
    unless ``config.skip`` keeps them, minus ``config.exclude`` (names or name suffixes)."""
    ad = adapter_for(hf)
    names = {id(m): n for n, m in hf.named_modules()}
    out: dict[str, nn.Module] = dict(ad.block_linears())
    head = ad.lm_head()
    if head is not None and "lm_head" not in config.skip and isinstance(head, nn.Linear):
        out[names[id(head)]] = head
    emb = ad.embeddings()
    if "embed" not in config.skip and isinstance(emb, nn.Embedding):
        out[names[id(emb)]] = emb
    return {n: m for n, m in out.items() if not any(n == e or n.endswith("." + e) for e in config.exclude)}


def valid_group_sizes(widths: list[int]) -> list[int]:
    g = 0
    for w in widths:
        g = math.gcd(g, w)
    return [d for d in range(2, g + 1, 2) if g % d == 0]


def check_config(model, config) -> None:
    """Fail before any heavy work if the config cannot apply to this model (e.g. a group size that does
    not divide every quantized layer's input width: the message lists the valid ones)."""
    hf = _hf(model)
    cfg = getattr(config, "target", config)  # QAT ends in its target scheme
    targets = select_targets(hf, cfg)
    linears = {n: m for n, m in targets.items() if isinstance(m, nn.Linear)}
    if not targets:
        raise ConfigError("nothing to quantize: every layer is skipped or excluded; remove some --exclude names.")
    group = getattr(cfg, "group_size", None)
    if getattr(cfg, "kernel", None) == "int4pack" and group not in Int4WeightLinear.INT4PACK_GROUPS:
        raise ConfigError(f"the int4pack kernel takes group sizes {', '.join(map(str, Int4WeightLinear.INT4PACK_GROUPS))}, "
                          f"not {group}; pick one of them or --kernel dequant.")
    if group:
        bad = [(n, m.in_features) for n, m in linears.items() if m.in_features % group]
        if bad:
            valid = valid_group_sizes([m.in_features for m in linears.values()])
            raise ConfigError(
                f"group size {group} does not divide the input width {bad[0][1]} of {bad[0][0]}; "
                f"valid group sizes for this model: {', '.join(map(str, valid)) or 'none (odd widths)'}."
            )


def split_calib(calib: torch.Tensor | None, holdout: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if calib is None:
        return None, None
    if calib.shape[0] <= holdout:
        raise ConfigError(
            f"the calibration batch has {calib.shape[0]} rows but {holdout} are held out to check quality; "
            f"give at least {holdout + 1} rows (e.g. --calib-rows {max(holdout * 4, 16)})."
        )
    return calib[:-holdout], calib[-holdout:]


def _untie_if_needed(hf: nn.Module, ad: FamilyAdapter, targets: dict[str, nn.Module]) -> None:
    """Quantizing the embeddings of a tied model gives lm_head its own weight (and the config says so)."""
    emb, head = ad.embeddings(), ad.lm_head()
    if head is None or emb not in targets.values() or getattr(head, "weight", None) is not emb.weight:
        return
    if head not in targets.values():
        head.weight = nn.Parameter(emb.weight.detach().clone(), requires_grad=False)
    hf.config.tie_word_embeddings = False
    if hasattr(hf.config, "get_text_config"):
        hf.config.get_text_config().tie_word_embeddings = False


def ptq_(model, config, calib: torch.Tensor | None = None, progress=None) -> dict:
    """Post-training quantization for int8-dynamic, int8-weight and int4-weight (RTN or GPTQ)."""
    start = time.perf_counter()
    hf = _hf(model)
    ad = adapter_for(hf)
    check_config(hf, config)
    targets = select_targets(hf, config)
    linears = {n: m for n, m in targets.items() if isinstance(m, nn.Linear)}
    fb = config.fallback
    if fb is not None and fb.to == config.scheme:
        raise ConfigError(f"a fallback to {fb.to} in a {config.scheme} stage changes nothing; fall back to fp32 instead.")
    rows, holdout = split_calib(calib, fb.holdout) if fb else (calib, None)
    smooth = getattr(config, "smoothquant", None)
    want = config.stats_wanted()
    gptq = bool(want.get("gram"))
    if (want or fb) and rows is None:
        what = "GPTQ" if gptq else "SmoothQuant" if smooth is not None else "the per-layer fallback"
        hint = " (or --method rtn, which needs none)" if gptq else ""
        raise ConfigError(f"{config.scheme} with {what} needs calibration data; pass --data SPEC{hint}.")
    report: dict = {"scheme": config.scheme}
    stats = None
    if want:
        with InputStats(linears, **want) as stats:
            run_batches(hf, rows, progress=progress)
    if smooth is not None:
        absmax = {id(m): stats.act_absmax(n) for n, m in linears.items()}
        report["smoothquant_pairs"] = smooth_(ad, absmax, smooth, only={id(m) for m in linears.values()})
    tied = _tied_names(hf, ad, targets)
    _untie_if_needed(hf, ad, targets)
    quantized: dict[str, nn.Module] = {}
    for i, (name, mod) in enumerate(targets.items()):
        quantized[name] = (Int8Embedding.from_float(mod) if isinstance(mod, nn.Embedding)
                           else config.build_layer(name, mod, stats))
        progress and progress("quantize", i + 1, len(targets))
    del stats
    for name, q in quantized.items():
        set_module(hf, name, q)
    fp32: list[str] = []
    if fb is not None:
        back = None
        if fb.to == "int8-weight":  # per-layer precision: the sensitive layers go to int8 weight-only
            back = {n: (quantized[n] if isinstance(m, nn.Embedding) else Int8WeightLinear.from_float(m))
                    for n, m in targets.items()}
        res = walk(hf, targets, quantized, holdout, fb.tolerance, fb.max_layers, progress=progress, fallback=back)
        report["fallback"] = {k: v for k, v in res.items() if k != "sensitivity"}
        report["fallback"]["sensitivity_top"] = sorted(res["sensitivity"].items(), key=lambda kv: -kv[1])[:10]
        report["fallback"]["to"] = fb.to
        if fb.to == "fp32":
            fp32 = res["fp32_layers"]
        else:
            report["int8_layers"] = [n for n in res["fp32_layers"] if not isinstance(targets[n], nn.Embedding)]
    if tied_pair := _retie(hf, tied, int4=getattr(config, "tied_table", "int4") == "int4"):
        report["tied"] = tied_pair
    if getattr(config, "kernel", None) == "int4pack":
        slow = [n for n, q in quantized.items() if isinstance(q, Int4WeightLinear) and q.kernel != "int4pack"]
        if slow:
            report["dequant_layers"] = slow
            report["warning"] = (f"{len(slow)} layer(s) keep the dequant kernel: int4pack needs output widths "
                                 f"divisible by {Int4WeightLinear.INT4PACK_OUT_MULTIPLE} ({slow[0]} has "
                                 f"{quantized[slow[0]].out_features})")
    report.update(quantized=len(targets) - len(fp32), fp32_layers=fp32, seconds=time.perf_counter() - start)
    return report


def _tied_names(hf: nn.Module, ad: FamilyAdapter, targets: dict[str, nn.Module]) -> tuple[str, str] | None:
    """``(embeddings, lm_head)`` names when both are quantized and share one weight (a tied model)."""
    emb, head = ad.embeddings(), ad.lm_head()
    if head is None or emb is None or getattr(head, "weight", None) is not getattr(emb, "weight", False):
        return None
    names = {id(m): n for n, m in targets.items()}
    return (names[id(emb)], names[id(head)]) if id(emb) in names and id(head) in names else None


def _retie(hf: nn.Module, tied: tuple[str, str] | None, int4: bool = True) -> list[str] | None:
    """Keep a tied model's one matrix one matrix: when its embeddings and lm_head both ended up quantized,
    the table becomes a view of the head's weight instead of a second copy (28M parameters for SmolLM2's
    49k x 576 vocabulary). An int8 head serves the table when the two hold the same values (RTN; not after a
    fallback kept one in fp32); an int4 head (RTN or GPTQ) serves it through an int4 lookup, which gathers
    and dequantizes only the rows it needs, unless ``int4`` is False (the table keeps its own int8 copy).
    Returns the pair, or None when they stay apart."""
    if tied is None:
        return None
    emb_name, head_name = tied
    emb, head = hf.get_submodule(emb_name), hf.get_submodule(head_name)
    if not isinstance(emb, Int8Embedding) or getattr(head, "bias", None) is not None:
        return None
    shareable = (int4 and isinstance(head, Int4Embedding.HEADS)) or (
        isinstance(head, Int8Embedding.HEADS)
        and torch.equal(emb.qweight, head.qweight) and torch.equal(emb.scale, head.scale))
    if not shareable:
        return None
    table = tie_table(head, head_name, emb.padding_idx, emb.embed_scale)
    set_module(hf, emb_name, table)
    return [emb_name, head_name]


def quantize_(model, config, calib: torch.Tensor | None = None, progress=None, checkpoint_dir=None,
              max_seconds: float | None = None) -> dict:
    """Quantize ``model`` in place according to ``config``.

    Args:
        model: a `slimlm.models.Model` or its HF module.
        config: ``Int8DynamicConfig``, ``Int8WeightConfig``, ``Int4WeightConfig`` or ``QATConfig``.
        calib: token ids ``(n, seq_len)`` from `slimlm.data.calibration_batch`; needed by SmoothQuant, GPTQ,
            the fallback (its last ``holdout`` rows check the tolerance) and QAT.
        progress: optional ``progress(desc, done, total)``.
        checkpoint_dir: QAT only: where its training keeps checkpoints (``checkpoint_every``) and resumes from.
        max_seconds: QAT only: the time budget; past it training stops into ``checkpoint_dir`` and the report's
            ``qat.out_of_time`` says at which step (the model is then half-trained: discard it).

    Returns:
        A report: ``{"scheme", "quantized", "fp32_layers", "seconds", ...}`` plus ``fallback`` (the frontier
        walked) or ``qat`` (losses) where they apply.

    Example:
        >>> m = load("tiny:llama")
        >>> quantize_(m, Int8DynamicConfig())["quantized"]
        28
    """
    if not callable(getattr(config, "quantize", None)):
        raise ConfigError(f"{type(config).__name__} is not a quantization config; use Int8DynamicConfig, "
                          "Int8WeightConfig, Int4WeightConfig or QATConfig.")
    hf = _hf(model)
    hf.eval()
    cal = as_calibration(calib)
    report = config.quantize(model, None if cal is None else cal.tokens, progress, checkpoint_dir=checkpoint_dir,
                             max_seconds=max_seconds)
    hf.eval()  # the modules it put in are new (nn.Module starts in training mode)
    share_input_quantization(hf)
    if hasattr(model, "provenance"):
        model.provenance.pop("hash", None)
    return report


def holdout_ppl_ratio(hf: nn.Module, reference: nn.Module, rows: torch.Tensor) -> float:
    """Perplexity of ``hf`` over that of ``reference`` on ``rows``."""
    return math.exp(lm_loss(hf, rows) - lm_loss(reference, rows))


def compile_(model, **kwargs):
    """Attach ``model.runner = torch.compile(model.hf)``: `slimlm.profile.compare` times prefill through it.

    Inductor fuses the per-token activation quantization and the rescaling around ``torch._int_mm`` (the
    eager int8 path runs them as separate aten ops). Compilation costs about 100 s per input shape on a
    2-core CPU, so it is a deployment step, not something `quantize_` does. Decode (``generate``) stays eager.
    """
    share_input_quantization(model.hf, enable=False)
    model.runner = torch.compile(model.hf, dynamic=False, **kwargs)
    return model
