"""ONNX and OpenVINO export of BERT-family encoders (embedding models and sequence classifiers), checked.

The graph. ``torch.onnx.export(..., dynamo=True)`` of the encoder's forward, with dynamic batch and sequence
axes, taking

- ``input_ids`` (batch, seq), int64;
- ``attention_mask`` (batch, seq), int64, 1 for tokens and 0 for padding;
- ``token_type_ids`` (batch, seq), int64, only when the config has more than one segment type
  (``type_vocab_size > 1``, as BERT and all-MiniLM-L6-v2 do): segment embeddings change the output of
  sentence-pair inputs, so a graph without them could not serve a pair classifier; and the graph then takes
  exactly what the model's Hugging Face tokenizer returns. The runners here feed zeros when none is given.

It returns ``logits`` (batch, labels) for a model with a sequence-classification head (``model.task ==
"classification"``), else ``last_hidden_state`` (batch, seq, hidden): pooling (mean over the mask for
sentence embeddings, as sentence-transformers does for all-MiniLM-L6-v2) is left to the caller, who owns
the mask. ``onnx int8`` is ONNX Runtime's dynamic quantization as for decoders (`slimlm.export.onnx`: int8
weights per output channel with ``reduce_range``, constant-weight MatMuls only), without SmoothQuant.
OpenVINO IR is converted from that ONNX graph with ``openvino.convert_model``; ``int8`` / ``int4`` are NNCF
weight compression (asymmetric; int4 in groups of ``group_size`` with NNCF's default int8 for the
embeddings and last layer), from the weights alone: encoders are small and the check measures what it costs.
GGUF and the transformers copy stay decoder-only; an encoder is refused with a sentence naming onnx/openvino.

The check. Perplexity does not apply to an encoder, so the export is compared with the variant (torch, its
own weights, quantized or not) on a fixed sample: the same default text as the decoder check (the start of
the Shakespeare eval split, or ``sample_text``), cut into ``4 x windows`` pieces of deliberately different
word counts (`SENTENCE_WORDS`), tokenized with the model's tokenizer (special tokens on, truncated to the
sample's token length) and padded, so every batch holds padding the attention mask must hide. The runtime
sees them in batches of 4, each cut to its own longest row (the sequence axis varies between calls).

- Embedding models: mean-pooled (mask-aware) embeddings of the runtime and of torch, cosine similarity per
  sentence; the check is ``1 - min cosine <= EMBEDDING_TOLERANCES[precision]``.
- Classifiers: argmax agreement (fraction of sentences whose top class is the same, at least
  `MIN_ARGMAX_AGREEMENT`) and the max abs logit difference, which must be within
  ``LOGIT_TOLERANCES[precision]`` of the variant's largest abs logit (relative, so a head with small logits
  is held to the same standard as a trained one).

The tolerances sit between what faithful exports measured and what a wrong conversion does. Measured on
``builtin:minilm-l6`` (all-MiniLM-L6-v2), 2026-12-01, the default sample (16 sentences of 5-128 tokens, 15
of them padded), ``slimlm export builtin:minilm-l6 --format F --type T --tolerance 1 --json``; classifier
figures on the same encoder with a seeded random 6-class head (``torch.manual_seed(0)`` then
``load("builtin:minilm-l6", num_labels=6)``: logits of ~0.05, near-ties, so agreement is a hard case):

========  ====  ==============  ================  =========  ========
format    type  1 - min cosine  rel. logit diff   argmax     size MB
========  ====  ==============  ================  =========  ========
onnx      fp32  1.2e-7          1.4e-6            16/16      91.7
onnx      int8  0.0225          0.143             15/16      59.9
openvino  fp32  1.2e-7          1.7e-6            16/16      91.2
openvino  int8  0.0025          0.053             16/16      23.9
openvino  int4  0.0619          0.235             13/16      19.6
========  ====  ==============  ================  =========  ========

On a trained head (the same encoder fine-tuned for rotten-tomatoes sentiment, 200 steps) the relative logit
differences were 5.4% / 1.7% / 13.6% (onnx int8, openvino int8 / int4) on this sample and 9.3% / 1.2% / 15.1%
on a sample of reviews, with every export within 0.6 points of the variant's accuracy on 512 eval reviews:
the tolerances leave a 2-5x margin (docs/export.md has the table).

ONNX int8 keeps the word embeddings (47 MB of the 92) in fp32, as it is MatMul-only; its per-tensor
activation scales cost more than OpenVINO's weight-only int8. OpenVINO's CPU plugin runs bf16 by default on
a CPU with AVX512-BF16 (this one): there the fp32 IR measured 1 - min cosine 3.4e-5 and logits 1.2% off;
the check runs it in f32 (`openvino_encoder_fn`), so the figure is the file's, not the CPU's. A wrong
conversion on the same sample: the attention mask ignored, 1 - min cosine 0.49 (mean cosine 0.78), logits 91%
off with 11/16 argmax agreement; every ``token_type_ids`` set to 1, 1 - min cosine 0.021 and logits 19% off
(caught at fp32, not at the quantized tolerances).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from slimlm.errors import ConfigError, SlimlmError

FORMATS = ("onnx", "openvino")

#: allowed ``1 - min cosine`` between mean-pooled embeddings of the export and the variant, per precision; set
#: from the builtin:minilm-l6 figures in the module docstring (fp32 1.2e-7, onnx int8 0.0225, openvino int8
#: 0.0025, int4 0.062) with about 2x margin for other encoders (fp32: ~100x the measured figure; bf16 inference,
#: 3.4e-5, would not pass), far below a dropped attention mask (0.49; 6.6e-5 on an untrained 2-layer tiny:bert)
EMBEDDING_TOLERANCES = {"fp32": 1e-5, "int8": 0.05, "int4": 0.15}
#: allowed ``max |logit_export - logit_variant| / max |logit_variant|`` for classifiers, per precision; set from
#: the same table (fp32 1.7e-6, int8 0.143 / 0.053, int4 0.235) with about 2x margin (fp32: ~60x); a dropped
#: mask: 0.91 (0.0035 on an untrained 2-layer tiny:bert classifier)
LOGIT_TOLERANCES = {"fp32": 1e-4, "int8": 0.30, "int4": 0.50}
#: least fraction of sample sentences whose argmax class must agree; quantization flips near-ties (measured
#: 15/16 onnx int8, 13/16 openvino int4 on a random head; a dropped mask 11/16)
MIN_ARGMAX_AGREEMENT = {"fp32": 1.0, "int8": 0.75, "int4": 0.625}
#: word counts of the check's sentences, cycled: short and long rows in every batch of 4, so padding is exercised
SENTENCE_WORDS = (6, 40, 14, 89, 3, 25, 60, 10)
CHECK_BATCH = 4

Runner = Callable[..., torch.Tensor]


def refuse_format(fmt: str) -> None:
    """An encoder exports to ONNX and OpenVINO only: one sentence for anything else."""
    if fmt not in FORMATS:
        raise ConfigError(f"{fmt} export writes causal language models only; this model is an encoder: "
                          f"export it with --format onnx or --format openvino.")


def uses_token_types(config) -> bool:
    """Whether the graph takes ``token_type_ids``: the config has more than one segment type."""
    return int(getattr(config, "type_vocab_size", 0) or 0) > 1


def output_name(hf: nn.Module) -> str:
    return "logits" if getattr(hf, "classifier", None) is not None else "last_hidden_state"


class _Encoder(nn.Module):
    def __init__(self, hf: nn.Module):
        super().__init__()
        self.hf, self.out = hf, output_name(hf)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kw = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return getattr(self.hf(input_ids=input_ids, attention_mask=attention_mask, **kw), self.out)


def write_encoder_onnx(hf: nn.Module, out: Path, precision: str) -> tuple[Path, dict]:
    """Export ``hf`` to ``out/model.onnx`` (``out/model.int8.onnx`` for int8); returns (main file, info)."""
    path = out / "model.onnx"
    cfg = hf.config
    inputs = ["input_ids", "attention_mask"] + ["token_type_ids"] * uses_token_types(cfg)
    ids = torch.randint(0, cfg.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 11:] = 0
    args = (ids, mask, torch.zeros_like(ids))[: len(inputs)]
    max_seq = int(getattr(cfg, "max_position_embeddings", 0) or 8192)
    batch, seq = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("seq", min=2, max=max_seq)
    name = output_name(hf)
    from slimlm.export.onnx import quiet_exporter

    quiet_exporter()
    with torch.inference_mode(False), torch.no_grad():
        prog = torch.onnx.export(_Encoder(hf.eval()), args, dynamo=True, input_names=inputs, output_names=[name],
                                 dynamic_shapes=tuple({0: batch, 1: seq} for _ in inputs),
                                 external_data=False, verbose=False)
    prog.save(str(path))
    info = {"opset": int(prog.model.opset_imports.get("", 0)) if hasattr(prog, "model") else None,
            "inputs": inputs, "output": name}
    if precision == "int8":
        from slimlm.export.onnx import quantize_int8

        path = quantize_int8(path)  # as for decoders: per-channel weights, constant-weight MatMuls only
    return path, info


def write_encoder_openvino(hf: nn.Module, out: Path, precision: str, group_size: int = 32) -> tuple[Path, dict]:
    """Write ``hf`` as OpenVINO IR (``out/openvino_model.xml``) from its ONNX graph, NNCF-compressed."""
    import tempfile

    import openvino as ov

    with tempfile.TemporaryDirectory(dir=out) as tmp:
        onnx_path, info = write_encoder_onnx(hf, Path(tmp), "fp32")
        ov_model = ov.convert_model(str(onnx_path))
    info.pop("opset", None)
    if precision in ("int8", "int4"):
        from slimlm.export.openvino import compress

        ov_model = compress(ov_model, precision, group_size)
    info["group_size"] = group_size if precision == "int4" else None
    info["data_aware"] = None
    path = out / "openvino_model.xml"
    ov.save_model(ov_model, str(path), compress_to_fp16=False)
    return path, info


def _feed(names: list[str], input_ids, attention_mask, token_type_ids) -> dict:
    arrays = {"input_ids": input_ids, "attention_mask": attention_mask,
              "token_type_ids": torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids}
    return {n: torch.as_tensor(arrays[n]).numpy().astype("int64") for n in names}


def onnx_encoder_fn(path: Path, threads: int = 1) -> Runner:
    """``fn(input_ids, attention_mask, token_type_ids=None) -> output`` on ONNX Runtime's CPU provider."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]

    def fn(input_ids, attention_mask, token_type_ids=None):
        return torch.from_numpy(sess.run(None, _feed(names, input_ids, attention_mask, token_type_ids))[0])

    return fn


def openvino_encoder_fn(path: Path, threads: int = 1, precision_hint: str | None = "f32") -> Runner:
    """``fn(input_ids, attention_mask, token_type_ids=None) -> output`` on OpenVINO's CPU plugin.

    ``precision_hint``: the plugin's inference precision; ``f32`` by default, because on a CPU with AVX512-BF16
    or AMX the plugin's own default is bf16 (None keeps it), which is a deployment choice, not the file's.
    """
    import openvino as ov

    from slimlm.export.openvino import plugin_config, plugin_precision

    compiled = ov.Core().compile_model(str(path), "CPU", plugin_config(threads, precision_hint))
    names = [i.get_any_name() for i in compiled.inputs]

    def fn(input_ids, attention_mask, token_type_ids=None):
        res = compiled(_feed(names, input_ids, attention_mask, token_type_ids))
        return torch.from_numpy(res[compiled.output(0)].copy())

    fn.inference_precision = plugin_precision(compiled)
    return fn


def torch_encoder_fn(hf: nn.Module) -> Runner:
    """The variant itself, with the graph's signature and output."""
    name = output_name(hf)

    def fn(input_ids, attention_mask, token_type_ids=None):
        kw = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        with torch.inference_mode():
            return getattr(hf(input_ids=input_ids, attention_mask=attention_mask, **kw), name)

    return fn


def sample_sentences(model, text: str | None = None, n: int = 16, max_tokens: int = 128) -> dict:
    """``{"input_ids", "attention_mask"}`` (n, <= max_tokens): ``text`` (default: the start of the Shakespeare
    eval split) cut into ``n`` pieces of `SENTENCE_WORDS` words, tokenized with special tokens and padded."""
    if text is None:
        from slimlm.data import load_data

        text = "\n".join(load_data("shakespeare").texts("eval"))[: n * max_tokens * 8]
    words = text.split()
    sentences, at = [], 0
    for i in range(n):
        k = SENTENCE_WORDS[i % len(SENTENCE_WORDS)]
        if at + k > len(words):
            break
        sentences.append(" ".join(words[at:at + k]))
        at += k
    if len(sentences) < 2:
        raise SlimlmError(f"the check sample has {len(words)} words, too few for two sentences of "
                          f"{SENTENCE_WORDS[0]} and {SENTENCE_WORDS[1]}; give a longer --sample text.")
    tok = model.tokenizer
    if tok.pad_token_id is None:
        raise SlimlmError(f"{model.spec}'s tokenizer has no padding token; the encoder check pads its sample.")
    limit = model.adapter.max_positions
    enc = tok(sentences, padding="longest", truncation=True, max_length=min(max_tokens, limit) if limit else max_tokens,
              return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def run_sample(fn: Runner, sample: dict, batch: int = CHECK_BATCH) -> list[torch.Tensor]:
    """``fn``'s output per batch of ``batch`` rows, each batch cut to its longest row."""
    outs = []
    for ids, mask in zip(sample["input_ids"].split(batch), sample["attention_mask"].split(batch), strict=True):
        t = int(mask.sum(1).max())
        outs.append(torch.as_tensor(fn(ids[:, :t], mask[:, :t])).float())
    return outs


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (batch, seq, dim) over the positions where ``mask`` is 1."""
    m = mask[..., None].to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)


def compare_outputs(ref: list[torch.Tensor], got: list[torch.Tensor], sample: dict, task: str, precision: str,
                    what: str, tolerance: float | None = None) -> dict:
    """The check's numbers, or `ExportCheckError` beyond the precision's tolerance (see the module docstring)."""
    from slimlm.export.check import ExportCheckError

    hint = "the export is wrong or this precision loses too much on this model (try a wider type, or --no-check to " \
           "keep it anyway)"
    if task == "classification":
        r, g = torch.cat(ref), torch.cat(got)
        tol = LOGIT_TOLERANCES.get(precision, 0.25) if tolerance is None else tolerance
        diff = float((g - r).abs().max()) if torch.isfinite(g).all() else float("inf")
        scale = float(r.abs().max())
        agree = float((g.argmax(-1) == r.argmax(-1)).float().mean())
        need = MIN_ARGMAX_AGREEMENT.get(precision, 0.75)
        rel = diff / max(scale, 1e-12)
        word = "within" if rel <= tol else "beyond"
        result = {"metric": "logits", "argmax_agreement": agree, "min_argmax_agreement": need,
                  "max_abs_logit_diff": diff, "logit_scale": scale, "relative_logit_diff": rel, "tolerance": tol,
                  "passed": bool(rel <= tol and agree >= need)}
        if not result["passed"]:
            raise ExportCheckError.with_result(result, (
                f"{what}: logits differ from the variant's by up to {diff:.4g} ({rel:.2%} of its largest, "
                f"{word} the {tol:.2%} allowed for {precision}) and the top class agrees on "
                f"{agree:.0%} of the sample (at least {need:.0%} needed); {hint}."))
        return result
    masks = [m[:, :int(m.sum(1).max())] for m in sample["attention_mask"].split(CHECK_BATCH)]
    cos = torch.cat([torch.nn.functional.cosine_similarity(mean_pool(g, m), mean_pool(r, m), dim=-1)
                     for r, g, m in zip(ref, got, masks, strict=True)])
    cos = torch.where(torch.isfinite(cos), cos, torch.full_like(cos, -1.0))
    tol = EMBEDDING_TOLERANCES.get(precision, 0.08) if tolerance is None else tolerance
    low = float(cos.min())
    result = {"metric": "embedding_cosine", "min_cosine": low, "mean_cosine": float(cos.mean()),
              "tolerance": tol, "passed": bool(1.0 - low <= tol)}
    if not result["passed"]:
        raise ExportCheckError.with_result(result, (
            f"{what}: the mean-pooled embeddings' cosine similarity with the variant's falls to {low:.6f} on the "
            f"sample, below the {1 - tol:.6f} allowed for {precision} (1 - cos <= {tol:g}); {hint}."))
    return result


def export_encoder(model, fmt: str, precision: str, out: Path, *, check: bool = True, sample_text: str | None = None,
                   tolerance: float | None = None, group_size: int = 32, sample_shape: tuple[int, int] = (4, 128),
                   progress=None) -> dict:
    """`slimlm.export.export` for an encoder (``model.task`` ``encoder`` or ``classification``).

    ``sample_shape`` is the decoder check's ``(windows, tokens)``: here ``4 x windows`` sentences of at most
    ``tokens`` tokens. Returns the same dict as `slimlm.export.export`.
    """
    from slimlm._io import atomic_dir, write_json_atomic
    from slimlm.export.outdir import MANIFEST
    from slimlm.export.outdir import check_out as _check_out
    from slimlm.export.outdir import need as _need
    from slimlm.quantize.portable import float_model

    say = progress or (lambda _msg: None)
    refuse_format(fmt)
    out = Path(out).expanduser()
    _check_out(out)
    _need("onnx" if fmt == "onnx" else "openvino")
    start = time.perf_counter()
    hf = float_model(model.hf)
    sample = sample_sentences(model, sample_text, 4 * sample_shape[0], sample_shape[1]) if check else None
    with atomic_dir(out, marker=MANIFEST) as tmp:
        if fmt == "onnx":
            say(f"exporting the encoder to ONNX {precision}")
            path, info = write_encoder_onnx(hf, tmp, precision)
            runner = (lambda: (onnx_encoder_fn(path), "onnxruntime")) if check else None
        else:
            say(f"converting the encoder to OpenVINO {precision}")
            path, info = write_encoder_openvino(hf, tmp, precision, group_size)
            runner = (lambda: (openvino_encoder_fn(path), "openvino CPU")) if check else None
        model.tokenizer.save_pretrained(tmp)
        info["task"] = model.task
        result = None
        if check:
            say("checking the export's outputs against the variant on a padded sample")
            ref = run_sample(torch_encoder_fn(model.hf), sample)
            fn, reader = runner()
            got = run_sample(fn, sample)
            result = compare_outputs(ref, got, sample, model.task, precision,
                                     f"{fmt} {precision} export of {model.spec}", tolerance)
            mask = sample["attention_mask"]
            result["reader"] = reader
            result["sentences"] = int(mask.shape[0])
            result["padded_sentences"] = int((mask == 0).any(1).sum())
            result["tokens"] = int(mask.sum())
            result["sample_shape"] = list(sample_shape)
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {"format": fmt, "precision": precision, "model": str(model.spec), "main_file": path.name,
                    "files": files, "check": result, "type": precision, **info, "source_hash": model.provenance.get("hash")}
        write_json_atomic(tmp / MANIFEST, manifest)
    return {"out": str(out), "format": fmt, "precision": precision, "main_file": str(out / path.name),
            "files": files, "check": result, "type": precision, "seconds": time.perf_counter() - start, **info}
