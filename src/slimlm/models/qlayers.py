"""Quantized layers that replace ``nn.Linear`` / ``nn.Embedding`` in place, and their saved format.

They live with the models (not with the quantization methods) because loading a saved quantized variant
must rebuild them: `slimlm.quantize` produces these layers, `slimlm.models.load` restores them.

A quantized variant is a normal slimlm variant directory: ``save_pretrained`` writes every tensor of the
state dict, so quantized layers land in ``model.safetensors`` as they are held in memory (int8 weights,
int4 weights packed two per byte, bf16 group scales, uint8 zero points) and fp32 layers as fp32. The
``quantization`` key of ``slimlm.json`` lists each quantized module with its kind and options (`describe`).
On load, transformers builds the fp32 skeleton and `restore` swaps the same quantized modules back in, so
the reloaded model computes exactly what the saved one did.

Why our own modules rather than torchao tensor subclasses: the layers hold plain int8 / packed-uint8 / bf16
buffers, so ``save_pretrained`` writes them to safetensors as they are (an honest file size, int4 packed two
per byte) and `restore` (below) rebuilds the same modules bit for bit; and the eager forward is a
handful of aten ops with no tensor-subclass dispatch in Python, which is where torchao's eager int8 path loses
most of its speed on CPU. The kernels are the same ones torchao dispatches to on CPU (``torch._int_mm`` for
int8 x int8; ``torch._weight_int4pack_mm_for_cpu`` for int4 weights). On a CPU without int8 dot-product
instructions ``torch._int_mm`` is tens of times slower than fp32, so int8-dynamic layers there sum the same
integer products in fp32 instead (`int8_matmul_is_fast`, `int8_float_matmul`): the same outputs, a little
slower than fp32 in prefill and faster in decode (``bench/int8_fallback.py``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from slimlm.errors import ModelFileError
from slimlm.models.qmath import (
    INT8_MAX,
    int4_dequantize,
    int4_group_params,
    int4_quantize,
    int8_per_channel,
    pack_int4,
    unpack_int4,
)

QUANT_METHOD = "slimlm"  # config.json quantization_config.quant_method of a slimlm-quantized directory


class QuantModule(nn.Module):
    """Base: ``kind`` names the saved format; ``meta()`` is what `restore` needs beyond the tensors."""

    kind: ClassVar[str]
    structural: ClassVar[bool] = False  # True: rebuilt from meta alone (its children may be saved layers too)

    def meta(self) -> dict:
        return {"kind": self.kind}

    def logical_params(self) -> int:
        """The number of weights this layer represents (int4 packs two per stored byte)."""
        raise NotImplementedError

    def nonzero_params(self) -> int:
        """Weights (and bias entries) that are not exactly zero after quantization: pruned zeros survive
        symmetric int8 exactly; int4's asymmetric grid may not hold an exact zero, which this then shows."""
        values = self.dequantized() if hasattr(self, "dequantized") else self.qweight
        bias = getattr(self, "bias", None)
        return int(torch.count_nonzero(values)) + (0 if bias is None else int(torch.count_nonzero(bias)))

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict) -> QuantModule:
        raise NotImplementedError


class QuantLinear(QuantModule):
    def __init__(self, in_features: int, out_features: int, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    def logical_params(self) -> int:
        return self.in_features * self.out_features + (0 if self.bias is None else self.out_features)

    @property
    def weight(self) -> torch.Tensor:
        """The stored weight (int8, or int4 packed two per byte), read-only: for code that sizes weights
        (``slimlm.profile`` counts bytes per token). Use ``dequantized()`` for values."""
        return self.qweight

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class ActCache:
    """The last input a group of sibling layers saw (q/k/v, gate/up read the same tensor) and its int8 form.

    Eager only: siblings quantize their shared input once instead of three times. It holds a strong
    reference to that input, so an identity check cannot be fooled by a freed tensor's reused address.

    Thread-safe: ``entry`` is one ``(x, q, s)`` tuple, replaced and read in a single step. A server runs
    forwards of one model on several threads at once; with three separate fields, a thread could pair its
    input with another thread's int8 rows (a wrong shape, or, at equal shapes, silently wrong outputs).
    """

    __slots__ = ("entry",)

    def __init__(self):
        self.entry: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None


def quantize_per_token(x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row: ``(q int8 (M, K), scale fp32 (M, 1))``."""
    s = x2.abs().amax(dim=-1, keepdim=True).clamp_(min=1e-12).div_(INT8_MAX)  # (M, 1)
    return torch.round(x2 / s).to(torch.int8), s  # |x / s| <= 127 by construction


#: `int8_float_matmul`: an fp32 copy of the weight up to this size is made whole (the allocator reuses it)
FLOAT_WHOLE_MAX_BYTES = 32 << 20
#: `int8_float_matmul`: above it, fp32 bytes of weight rows converted and multiplied at a time
FLOAT_BLOCK_BYTES = 4 << 20


def int8_float_matmul(x: torch.Tensor, qweight: torch.Tensor, block_bytes: int | None = None,
                      whole_max_bytes: int | None = None) -> torch.Tensor:
    """``x @ qweight.T`` in fp32 for int8 weights (what int8 layers compute with when there is no fast int8 kernel).

    Small weights are converted whole per call: the fp32 copy comes from memory the allocator keeps, and a
    decode step is then faster than with fp32 weights (one byte per weight read from memory instead of four).
    A large weight converted whole gets a fresh allocation every call (glibc maps anything above 32 MB anew,
    and the kernel zeroes the pages): for an lm_head of 49k x 576 that made a decode step seven times slower
    than the fp32 layer. So above ``whole_max_bytes`` the weight is converted ``block_bytes`` of rows at a time,
    each block multiplied while it is still in the cache. With integer-valued ``x`` (int8-dynamic's quantized
    activations) every sum is exact, so blocks give the same result as the whole product; with float ``x``
    (weight-only int8) it matches up to fp32 summation order. Off the CPU, or when ``x`` needs a gradient,
    the weight is converted whole. The sizes default to `FLOAT_BLOCK_BYTES` and `FLOAT_WHOLE_MAX_BYTES`.
    """
    block_bytes = FLOAT_BLOCK_BYTES if block_bytes is None else block_bytes
    whole_max_bytes = FLOAT_WHOLE_MAX_BYTES if whole_max_bytes is None else whole_max_bytes
    out_f, in_f = qweight.shape
    rows = max(1, block_bytes // (4 * in_f))
    if (4 * out_f * in_f <= whole_max_bytes or out_f <= rows or x.device.type != "cpu"
            or (x.requires_grad and torch.is_grad_enabled())):
        return F.linear(x, qweight.float())
    y = x.new_empty(x.shape[0], out_f)
    for i in range(0, out_f, rows):
        torch.matmul(x, qweight[i:i + rows].float().t(), out=y[:, i:i + rows])
    return y


def int8_int_matmul(q: torch.Tensor, qweight: torch.Tensor, s: torch.Tensor, block_bytes: int | None = None,
                    whole_max_bytes: int | None = None) -> torch.Tensor:
    """``(q @ qweight.T) * s`` in fp32 with ``torch._int_mm`` (int8 x int8 -> int32), for int8 activations
    ``q (M, in)`` with per-row scales ``s (M, 1)``.

    The int32 product is converted to fp32 into a new tensor, so a large product costs two allocations of
    its size, each a fresh zeroed mapping above glibc's 32 MB threshold: for an int8 lm_head over a 49k
    vocabulary at 8 x 128 tokens (a 201 MB product) those took half the layer's time. Above
    ``whole_max_bytes`` of int32 product the columns are computed ``block_bytes`` at a time and scaled
    straight into the output. The integer sums are exact either way, so the result is identical. Sizes
    default to `FLOAT_BLOCK_BYTES` and `FLOAT_WHOLE_MAX_BYTES`.
    """
    block_bytes = FLOAT_BLOCK_BYTES if block_bytes is None else block_bytes
    whole_max_bytes = FLOAT_WHOLE_MAX_BYTES if whole_max_bytes is None else whole_max_bytes
    m, out_f = q.shape[0], qweight.shape[0]
    cols = max(8, block_bytes // (4 * m) // 8 * 8)
    if 4 * m * out_f <= whole_max_bytes or out_f <= cols or q.device.type != "cpu":
        return torch.mul(torch._int_mm(q, qweight.t()), s)
    y = torch.empty(m, out_f, dtype=torch.float32)
    for i in range(0, out_f, cols):
        torch.mul(torch._int_mm(q, qweight[i:i + cols].t()), s, out=y[:, i:i + cols])  # (M, cols)
    return y


#: ``fast``: whether int8-dynamic layers on the CPU multiply with ``torch._int_mm`` (None until measured)
_INT8_MATMUL: dict[str, bool | None] = {"fast": None}
INT8_MATMUL_ENV = "SLIMLM_INT8_MATMUL"  # "int" or "float": skip the measurement


def int8_matmul_is_fast() -> bool:
    """Whether this CPU's int8 x int8 matmul (``torch._int_mm``) beats multiplying the same integers in fp32.

    With int8 dot-product instructions (x86 VNNI/AMX, Arm dot product/i8mm) it is several times faster; without
    them torch's int8 kernel was measured ~40x slower than fp32, which would make every evaluation of an
    int8-dynamic variant crawl. Measured once per process: a 64 x 512 x 512 product each way, on one thread,
    the two kernels alternating, best of 7 each (a few ms). One thread, because with two, on a machine whose
    cores are busy, every product waits for a descheduled thread: on a 2-core VNNI host with both cores
    loaded, a two-thread measurement took ~8 ms for the int8 product against 0.4 ms in fp32 and chose fp32
    in five runs of eight, which made int8-dynamic 2.4x slower for the whole run; on one thread it chose
    right in every run. ``SLIMLM_INT8_MATMUL=int`` or ``float`` decides without measuring. Either way the
    layer computes the same integer products, so quality figures do not depend on the answer; only speed does.
    """
    if _INT8_MATMUL["fast"] is not None:
        return bool(_INT8_MATMUL["fast"])
    forced = os.environ.get(INT8_MATMUL_ENV, "").strip().lower()
    if forced in ("int", "float"):
        _INT8_MATMUL["fast"] = forced == "int"
        return forced == "int"
    _INT8_MATMUL["fast"] = _measure_int8_matmul()
    return bool(_INT8_MATMUL["fast"])


def _measure_int8_matmul(rounds: int = 7) -> bool:
    """`int8_matmul_is_fast`'s measurement: ``torch._int_mm`` no slower than fp32 on the same integers."""
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-127, 128, (64, 512), generator=g, dtype=torch.int8)
    w = torch.randint(-127, 128, (512, 512), generator=g, dtype=torch.int8)
    af, wt, wf = a.float(), w.t(), w.float()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t_int = t_float = float("inf")
    try:
        with torch.inference_mode():
            torch._int_mm(a, wt)  # warm-up: the first calls pick and load the kernels
            F.linear(af, wf)
            for _ in range(rounds):
                t = time.perf_counter()
                torch._int_mm(a, wt)
                t_int = min(t_int, time.perf_counter() - t)
                t = time.perf_counter()
                F.linear(af, wf)
                t_float = min(t_float, time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)
    return t_int <= t_float


class Int8DynamicLinear(QuantLinear):
    """int8 x int8 -> int32 matmul: activations quantized per token at run time, weights per channel."""

    kind = "int8-dynamic"

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__(qweight.shape[1], qweight.shape[0], bias)
        self.register_buffer("qweight", qweight.to(torch.int8).contiguous())  # (out, in)
        self.register_buffer("scale", scale.float().contiguous())  # (out,)
        self.act_cache: ActCache | None = None  # set by `share_input_quantization`
        int8_matmul_is_fast()  # measured here, eagerly, once per process: forward only reads the answer

    @classmethod
    def from_float(cls, linear: nn.Linear) -> Int8DynamicLinear:
        q, s = int8_per_channel(linear.weight.detach().float())
        return cls(q, s, linear.bias)

    @classmethod
    def from_state(cls, t: dict, meta: dict) -> Int8DynamicLinear:
        return cls(t["qweight"], t["scale"], t.get("bias"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        c = self.act_cache
        hit = c.entry if c is not None else None  # one read: another thread may replace it, never half of it
        if hit is not None and hit[0] is x:
            q, s = hit[1], hit[2]
        else:
            q, s = quantize_per_token(x.reshape(-1, shape[-1]).float())  # (M, in), (M, 1)
            if c is not None:
                c.entry = (x, q, s)
        if q.device.type != "cpu" or _INT8_MATMUL["fast"]:
            y = int8_int_matmul(q, self.qweight, s)  # (M, out) int32 products, times s, in fp32
        else:  # the same integer products, summed in fp32 (exact below 2**24): no fast int8 kernel here
            y = int8_float_matmul(q.float(), self.qweight).mul_(s)
        y.mul_(self.scale)
        if self.bias is not None:
            y.add_(self.bias)
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)


def share_input_quantization(hf: nn.Module, enable: bool = True) -> int:
    """Give int8-dynamic siblings that read one input (per the adapter's smoothing pairs) a shared cache.

    Returns the number of groups linked. ``enable=False`` unlinks them (before ``torch.compile``, which
    removes the duplicate work itself and should not trace a Python-side cache).
    """
    from slimlm.models.adapters import adapter_for

    groups = 0
    ad = adapter_for(hf)
    for layer in ad.layers():
        for _, consumers in ad.smoothing_pairs(layer):
            mods = [m for m in consumers if isinstance(m, Int8DynamicLinear)]
            if len(mods) < 2:
                continue
            cache = ActCache() if enable else None
            for m in mods:
                m.act_cache = cache
            groups += 1
    return groups


class Int8WeightLinear(QuantLinear):
    """Weight-only int8 per channel: ``y = (x @ q^T) * scale``, so only a cast of ``q`` per call."""

    kind = "int8-weight"

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__(qweight.shape[1], qweight.shape[0], bias)
        self.register_buffer("qweight", qweight.to(torch.int8).contiguous())
        self.register_buffer("scale", scale.float().contiguous())

    @classmethod
    def from_float(cls, linear: nn.Linear) -> Int8WeightLinear:
        q, s = int8_per_channel(linear.weight.detach().float())
        return cls(q, s, linear.bias)

    @classmethod
    def from_state(cls, t: dict, meta: dict) -> Int8WeightLinear:
        return cls(t["qweight"], t["scale"], t.get("bias"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features).float()
        y = (int8_float_matmul(x2, self.qweight) * self.scale).reshape(*x.shape[:-1], self.out_features)
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype)


class Int4WeightLinear(QuantLinear):
    """Weight-only int4, packed two per byte, asymmetric per group of ``group_size`` input columns.

    ``kernel``: ``dequant`` unpacks to fp32 and runs an fp32 matmul (exact reference, slow);
    ``int4pack`` runs ``torch._weight_int4pack_mm_for_cpu`` with bf16 activations (torchao's CPU int4
    kernel; it keeps a second, kernel-specific copy of the packed weight in memory).
    """

    kind = "int4-weight"
    KERNELS: ClassVar[tuple[str, ...]] = ("dequant", "int4pack")
    INT4PACK_OUT_MULTIPLE: ClassVar[int] = 16  # torch's int4pack layout needs out_features divisible by this
    INT4PACK_GROUPS: ClassVar[tuple[int, ...]] = (32, 64, 128, 256)  # and one of these group sizes

    @classmethod
    def int4pack_fits(cls, out_features: int) -> bool:
        """Whether the ``int4pack`` kernel takes a layer this wide (others run ``dequant``)."""
        return out_features % cls.INT4PACK_OUT_MULTIPLE == 0

    def __init__(self, packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int,
                 bias: torch.Tensor | None = None, kernel: str = "dequant", symmetric: bool = False):
        super().__init__(packed.shape[1] * 2, packed.shape[0], bias)
        self.group_size, self.symmetric = group_size, symmetric  # symmetric: llama.cpp's Q4_0 grid (zero 8)
        self.register_buffer("qweight", packed.to(torch.uint8).contiguous())  # (out, in // 2)
        self.register_buffer("scale", scale.to(torch.bfloat16).contiguous())  # (out, groups)
        self.register_buffer("zero", zero.to(torch.uint8).contiguous())  # (out, groups)
        self.set_kernel(kernel)

    @classmethod
    def from_float(cls, linear: nn.Linear, group_size: int, kernel: str = "dequant",
                   symmetric: bool = False) -> Int4WeightLinear:
        w = linear.weight.detach().float()
        scale, zero = int4_group_params(w, group_size, symmetric)
        q = int4_quantize(w, scale, zero, group_size)
        return cls(pack_int4(q), scale, zero, group_size, linear.bias, kernel, symmetric)

    @classmethod
    def from_quantized(cls, q: torch.Tensor, scale, zero, group_size: int, bias=None, kernel: str = "dequant",
                       symmetric: bool = False):
        return cls(pack_int4(q), scale, zero, group_size, bias, kernel, symmetric)

    @classmethod
    def from_state(cls, t: dict, meta: dict) -> Int4WeightLinear:
        return cls(t["qweight"], t["scale"], t["zero"], int(meta["group_size"]), t.get("bias"),
                   meta.get("kernel", "dequant"), bool(meta.get("symmetric", False)))

    def meta(self) -> dict:
        return {"kind": self.kind, "group_size": self.group_size, "kernel": self.kernel, "symmetric": self.symmetric}

    def dequantized(self) -> torch.Tensor:
        return int4_dequantize(unpack_int4(self.qweight), self.scale.float(), self.zero, self.group_size)

    def set_kernel(self, kernel: str) -> None:
        if kernel not in self.KERNELS:
            raise ValueError(f"kernel must be one of {self.KERNELS}")
        if kernel == "int4pack" and self.group_size not in self.INT4PACK_GROUPS:
            raise ValueError(f"the int4pack kernel takes group sizes {self.INT4PACK_GROUPS}, not {self.group_size}")
        if kernel == "int4pack" and not self.int4pack_fits(self.out_features):
            raise ValueError(f"the int4pack kernel needs an output width divisible by {self.INT4PACK_OUT_MULTIPLE}; "
                             f"this layer has {self.out_features}: use the dequant kernel")
        self.kernel = kernel
        self._packed = self._sz = None
        if kernel == "int4pack":
            q = unpack_int4(self.qweight).to(torch.int32)
            self._packed = torch._convert_weight_to_int4pack_for_cpu(q, 1)
            # the kernel computes (q - 8) * s + z', so z' = (8 - zero) * s
            s = self.scale.float()
            zp = (8 - self.zero.float()) * s
            self._sz = torch.stack([s, zp], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)  # (G, out, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel == "int4pack":
            shape = x.shape
            x2 = x.reshape(-1, shape[-1]).to(torch.bfloat16)
            y = torch._weight_int4pack_mm_for_cpu(x2, self._packed, self.group_size, self._sz)
            y = y.reshape(*shape[:-1], self.out_features).to(x.dtype)
        else:
            y = F.linear(x, self.dequantized().to(x.dtype))
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y


class QuantEmbedding(QuantModule):
    """An embedding table held quantized.

    ``tied_to`` names the quantized ``lm_head`` of a model with tied embeddings whose tensors this table
    *is*: a ``(vocab, hidden)`` matrix quantized per row (int8) or per row and group (int4) serves both the
    lookup and the output projection, so a tied model stays one matrix after quantization. A tied table
    holds no tensors of its own: it reads them from that layer (``PROXIED``), so they are saved once,
    counted once, and stay one tensor when the model is copied or moved (``.to(device)``); `restore` links
    them again. ``HEADS``: the layer types a table of this kind can share.

    ``embed_scale``: the factor a scaled embedding (Gemma's ``sqrt(hidden)``) multiplies its rows by, kept
    from the table it replaces (the lm_head that shares the matrix is not scaled).
    """

    PROXIED: ClassVar[tuple[str, ...]] = ()
    HEADS: ClassVar[tuple[type, ...]] = ()

    def _init_table(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None, embed_scale: float):
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = padding_idx
        self.tied_to: str | None = None
        self.embed_scale = float(embed_scale)

    def __getattr__(self, name: str):
        head = self.__dict__.get("_head")  # a plain attribute, not a submodule: the head lives (and is saved) once
        if head is not None and name in self.PROXIED:
            return getattr(head[0], name)
        return super().__getattr__(name)

    @classmethod
    def tied(cls, head: nn.Module, head_name: str, padding_idx: int | None = None,
             embed_scale: float = 1.0) -> QuantEmbedding:
        """The table of ``head`` (named ``head_name`` in the model), shared: no copy."""
        if not isinstance(head, cls.HEADS) or getattr(head, "bias", None) is not None:
            names = " or ".join(h.__name__ for h in cls.HEADS)
            raise ValueError(f"a tied {cls.kind} shares the weight of a {names} without bias")
        emb = cls.__new__(cls)
        nn.Module.__init__(emb)
        emb._init_table(head.out_features, head.in_features, padding_idx, embed_scale)
        emb.tied_to = head_name
        emb.__dict__["_head"] = (head,)
        return emb

    def meta(self) -> dict:
        return {"kind": self.kind, "padding_idx": self.padding_idx,
                **({"tied_to": self.tied_to} if self.tied_to else {}),
                **({"embed_scale": self.embed_scale} if self.embed_scale != 1.0 else {})}

    def logical_params(self) -> int:
        return 0 if self.tied_to else self.num_embeddings * self.embedding_dim  # a tied table: the head counts it

    def nonzero_params(self) -> int:
        return 0 if self.tied_to else super().nonzero_params()

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """The dequantized rows of ``ids`` (flat), before ``embed_scale``."""
        raise NotImplementedError

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.rows(ids.reshape(-1)).reshape(*ids.shape, self.embedding_dim)
        return rows * self.embed_scale if self.embed_scale != 1.0 else rows

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}" + (f", tied_to={self.tied_to}" if self.tied_to else "")


class Int8Embedding(QuantEmbedding):
    """Embedding table in int8 with one scale per row (per token id); tied, it is an int8 per-channel
    Linear's ``qweight`` and ``scale``."""

    kind = "int8-embedding"
    PROXIED = ("qweight", "scale")
    HEADS = (Int8WeightLinear, Int8DynamicLinear)

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, padding_idx: int | None = None,
                 embed_scale: float = 1.0):
        super().__init__()
        self._init_table(*qweight.shape, padding_idx, embed_scale)
        self.register_buffer("qweight", qweight.to(torch.int8).contiguous())
        self.register_buffer("scale", scale.float().contiguous())

    @classmethod
    def from_float(cls, emb: nn.Embedding) -> Int8Embedding:
        q, s = int8_per_channel(emb.weight.detach().float())
        return cls(q, s, emb.padding_idx, embed_scale=embed_scale_of(emb))

    @classmethod
    def from_state(cls, t: dict, meta: dict) -> Int8Embedding:
        return cls(t["qweight"], t["scale"], meta.get("padding_idx"), embed_scale=meta.get("embed_scale", 1.0))

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.qweight).float() * self.scale[ids].unsqueeze(-1)


class Int4Embedding(QuantEmbedding):
    """The table of a tied model whose ``lm_head`` is int4 (`Int4WeightLinear`): each lookup gathers the
    packed rows with their group scales and zero points and dequantizes only those. There is no standalone
    int4 table; an untied embedding quantizes to `Int8Embedding`."""

    kind = "int4-embedding"
    PROXIED = ("qweight", "scale", "zero", "group_size", "symmetric")
    HEADS = (Int4WeightLinear,)

    @classmethod
    def from_state(cls, t: dict, meta: dict) -> Int4Embedding:
        raise ModelFileError("an int4 embedding is always its lm_head's weight (tied_to); this one names none")

    def dequantized(self) -> torch.Tensor:
        return self.__dict__["_head"][0].dequantized()

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        return int4_dequantize(unpack_int4(self.qweight[ids]), self.scale[ids].float(), self.zero[ids],
                               self.group_size)


def float_weight(mod: nn.Module) -> torch.Tensor:
    """The fp32 values a quantized layer (or table) computes with: its ``dequantized()``, or for int8 per
    row ``qweight * scale``."""
    if hasattr(mod, "dequantized"):
        return mod.dequantized().float()
    return mod.qweight.float() * mod.scale.float().reshape(-1, 1)


def tie_table(head: nn.Module, head_name: str, padding_idx: int | None = None,
              embed_scale: float = 1.0) -> QuantEmbedding:
    """The tied table that reads ``head``'s quantized weight: int8 for an int8 head, int4 for an int4 one."""
    for cls in (Int8Embedding, Int4Embedding):
        if isinstance(head, cls.HEADS):
            return cls.tied(head, head_name, padding_idx, embed_scale)
    raise ValueError(f"no quantized table can share a {type(head).__name__}")


def embed_scale_of(emb: nn.Module) -> float:
    """The factor an embedding module multiplies its rows by (transformers' scaled word embeddings, e.g.
    Gemma's ``sqrt(hidden)``), 1.0 for a plain one."""
    if hasattr(emb, "scalar_embed_scale"):
        return float(emb.scalar_embed_scale)
    scale = getattr(emb, "embed_scale", None)
    return float(scale) if isinstance(scale, (int, float, torch.Tensor)) else 1.0


KINDS: dict[str, type[QuantModule]] = {
    m.kind: m for m in (Int8DynamicLinear, Int8WeightLinear, Int4WeightLinear, Int8Embedding, Int4Embedding)
}


def set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted ``name`` with ``module``."""
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


FORMAT = 1


def describe(hf: nn.Module) -> dict:
    """The ``quantization`` entry of ``slimlm.json`` for a model holding quantized modules ({} if none)."""
    layers = {name: m.meta() for name, m in hf.named_modules() if isinstance(m, QuantModule)}
    if not layers:
        return {}
    return {"format": FORMAT, "layers": layers,
            "tie_word_embeddings": bool(getattr(hf.config, "tie_word_embeddings", False))}


def logical_params(hf: nn.Module) -> int:
    """Parameters the model represents: fp parameters plus the weights held by quantized modules."""
    seen, total = set(), 0
    for p in hf.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total + sum(m.logical_params() for m in hf.modules() if isinstance(m, QuantModule))


def _layer_class(impl: str | None) -> type[QuantModule] | None:
    """A replacement layer defined by a method module (``slimlm.prune.lowrank:LowRankLinear``). Only classes
    inside the slimlm package are looked up: a model file never names code to run."""
    import importlib

    if not impl or not impl.startswith("slimlm.") or ":" not in impl:
        return None
    mod, _, name = impl.partition(":")
    cls = getattr(importlib.import_module(mod), name, None)
    return cls if isinstance(cls, type) and issubclass(cls, QuantModule) else None


def restore(hf: nn.Module, meta: dict, path: str | Path | None, tensors: dict | None = None) -> nn.Module:
    """Swap the quantized modules listed in ``meta`` back into ``hf``, reading their tensors under ``path``
    (or from ``tensors``, the directory's tensors by name when the caller has read them already)."""
    from safetensors import safe_open

    if isinstance(meta, dict) and meta.get("format") not in (None, FORMAT):
        raise ModelFileError(f"{path}: quantization format {meta.get('format')!r} is not supported by this "
                             f"slimlm (it reads format {FORMAT}); upgrade slimlm.")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("layers"), dict | list):
        raise ModelFileError(f"{path}: slimlm.json's quantization record is not one slimlm wrote; quantize the "
                             "model again.")
    wanted = meta["layers"]
    by_layer: dict[str, dict] = {name: {} for name in wanted}

    def place(key: str, get) -> None:
        prefix, attr = key, ""
        while prefix:  # the innermost saved layer that holds this tensor ("a.b.down.weight")
            prefix, _, last = prefix.rpartition(".")
            attr = f"{last}.{attr}" if attr else last
            if prefix in by_layer:
                by_layer[prefix][attr] = get(key)
                return

    if tensors is not None:
        for key in tensors:
            place(key, tensors.__getitem__)
    else:
        for f in sorted(Path(path).glob("*.safetensors")):
            with safe_open(str(f), framework="pt") as fh:
                for key in fh.keys():
                    place(key, fh.get_tensor)
    tensors = by_layer
    tied = {n: info for n, info in wanted.items() if info.get("tied_to")}
    for name in sorted(set(wanted) - set(tied), key=lambda n: n.count(".")):  # outer layers first (a factor inside one)
        info = wanted[name]
        cls = KINDS.get(info["kind"]) or _layer_class(info.get("impl"))
        if cls is None or (not tensors[name] and not cls.structural):
            raise ModelFileError(f"{path}: saved layer {name} ({info['kind']}) is missing from the weights; "
                                 "the directory is incomplete: save the variant again.")
        set_module(hf, name, cls.from_state(tensors[name], info))
    for name, info in tied.items():  # a table that is another layer's weight (QuantEmbedding.tied)
        head = hf.get_submodule(info["tied_to"]) if info["tied_to"] in wanted else None
        cls = KINDS.get(info["kind"])
        if not (isinstance(cls, type) and issubclass(cls, QuantEmbedding) and isinstance(head, cls.HEADS)):
            raise ModelFileError(f"{path}: saved layer {name} ({info['kind']}) shares the weight of "
                                 f"{info['tied_to']}, which is not a saved layer it can share; the directory is "
                                 "inconsistent: save the variant again.")
        set_module(hf, name, cls.tied(head, info["tied_to"], info.get("padding_idx"), info.get("embed_scale", 1.0)))
    if "tie_word_embeddings" in meta:
        hf.config.tie_word_embeddings = meta["tie_word_embeddings"]
    share_input_quantization(hf)
    return hf
