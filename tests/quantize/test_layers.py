"""Each quantized layer against its fp32 Linear: SQNR thresholds, packing, GPTQ vs RTN, pruned zeros."""

import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimlm.models.qlayers import Int4WeightLinear, Int8DynamicLinear, Int8Embedding, Int8WeightLinear
from slimlm.models.qmath import int4_dequantize, pack_int4, sqnr, unpack_int4
from slimlm.quantize.gptq import gptq_int4


def _linear(in_f=128, out_f=96, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(in_f, out_f)
    return lin


def _inputs(n=64, in_f=128, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, in_f, generator=g)
    x[:, :3] *= 8  # a few outlier channels, as in real transformer activations
    return x


@pytest.mark.parametrize("make, threshold", [
    (lambda lin: Int8DynamicLinear.from_float(lin), 35.0),
    (lambda lin: Int8WeightLinear.from_float(lin), 38.0),
    (lambda lin: Int4WeightLinear.from_float(lin, 32), 18.0),
    (lambda lin: Int4WeightLinear.from_float(lin, 32, kernel="int4pack"), 18.0),
])
def test_layer_sqnr_above_threshold(make, threshold):
    lin = _linear()
    x = _inputs()
    q = make(lin)
    with torch.no_grad():
        assert sqnr(lin(x), q(x)) > threshold


def test_layer_keeps_leading_shape():
    lin = _linear()
    x = _inputs().reshape(4, 16, 128)
    for q in (Int8DynamicLinear.from_float(lin), Int8WeightLinear.from_float(lin), Int4WeightLinear.from_float(lin, 32)):
        assert q(x).shape == (4, 16, 96)


def test_int4_pack_roundtrip_and_size():
    q = torch.randint(0, 16, (8, 64), dtype=torch.uint8)
    p = pack_int4(q)
    assert p.shape == (8, 32) and p.dtype == torch.uint8
    assert torch.equal(unpack_int4(p), q)


def test_int4_kernels_agree():
    lin = _linear()
    x = _inputs()
    a = Int4WeightLinear.from_float(lin, 32)
    b = Int4WeightLinear.from_float(lin, 32, kernel="int4pack")
    assert sqnr(a(x), b(x)) > 30  # only bf16 rounding of activations and zero points differs


def test_gptq_beats_round_to_nearest_on_held_out_inputs():
    torch.manual_seed(0)
    lin = nn.Linear(128, 64, bias=False)
    mix = torch.randn(128, 128) * torch.logspace(0, -2, 128)[:, None]  # correlated, anisotropic inputs
    x_cal, x_test = torch.randn(512, 128) @ mix, torch.randn(256, 128) @ mix
    H = 2 * x_cal.t() @ x_cal / x_cal.shape[0]
    with torch.no_grad():
        ref = lin(x_test)
        rtn = Int4WeightLinear.from_float(lin, 32)(x_test)
        q, s, z = gptq_int4(lin.weight, H, 32)
        gptq = x_test @ int4_dequantize(q, s, z, 32).t()
    assert sqnr(ref, gptq) > sqnr(ref, rtn) + 3  # dB


@pytest.mark.parametrize("kind", ["int8-dynamic", "int8-weight", "int4-rtn", "int4-gptq"])
def test_pruned_zeros_survive_quantization(kind):
    lin = _linear()
    with torch.no_grad():
        mask = torch.rand_like(lin.weight) < 0.5
        lin.weight[mask] = 0
    if kind == "int8-dynamic":
        w = Int8DynamicLinear.from_float(lin).qweight
    elif kind == "int8-weight":
        w = Int8WeightLinear.from_float(lin).qweight
    elif kind == "int4-rtn":
        w = Int4WeightLinear.from_float(lin, 32).dequantized()
    else:
        x = _inputs(256)
        q, s, z = gptq_int4(lin.weight, 2 * x.t() @ x / 256, 32)
        w = int4_dequantize(q, s, z, 32)
    assert bool((w[mask] == 0).all())
    assert (w[~mask] != 0).float().mean() > 0.7


def test_int8_embedding():
    emb = nn.Embedding(300, 64)
    q = Int8Embedding.from_float(emb)
    ids = torch.randint(0, 300, (3, 7))
    assert sqnr(emb(ids), q(ids)) > 38


def test_siblings_quantize_a_shared_input_once(tiny):
    from slimlm.models.qlayers import ActCache
    from slimlm.quantize import Int8DynamicConfig, quantize_

    ids = torch.randint(0, 250, (2, 24))
    with torch.inference_mode():
        quantize_(tiny, Int8DynamicConfig())
        a = tiny.adapter.attention(tiny.adapter.layers()[0])
        assert isinstance(a.q.act_cache, ActCache) and a.q.act_cache is a.k.act_cache is a.v.act_cache
        cached = tiny.hf(ids).logits
        for m in tiny.hf.modules():
            if isinstance(m, Int8DynamicLinear):
                m.act_cache = None
        assert torch.equal(cached, tiny.hf(ids).logits)


def test_siblings_sharing_a_cache_stay_correct_when_threads_interleave():
    """A server runs forwards of one model on several threads: each must get the int8 rows of its own input.

    The cache below hands the GIL to the other thread on every attribute read and write, so the threads
    interleave inside the cache look-up on every call (without it such a collision is rare, not absent).
    """
    import threading
    import time

    from slimlm.models.qlayers import ActCache

    class Yielding(ActCache):
        __slots__ = ()

        def __getattribute__(self, name):
            time.sleep(0.0002)
            return super().__getattribute__(name)

        def __setattr__(self, name, value):
            time.sleep(0.0002)
            super().__setattr__(name, value)

    siblings = [Int8DynamicLinear.from_float(_linear(64, 32, seed=i)) for i in range(3)]  # like q, k, v
    inputs = [_inputs(n, 64, seed=n) for n in (1, 5)]  # one row (decode) and five (prefill)
    with torch.inference_mode():
        want = [[m(x) for m in siblings] for x in inputs]
        cache = Yielding()
        for m in siblings:
            m.act_cache = cache
        failures = []

        def worker(k):
            with torch.inference_mode():
                for _ in range(40):
                    x = inputs[k].clone()  # a new tensor each call, as a forward makes
                    try:
                        got = [m(x) for m in siblings]
                    except RuntimeError as exc:  # another thread's rows: the reshape fails
                        failures.append(str(exc))
                        continue
                    if not all(torch.equal(g, w) for g, w in zip(got, want[k], strict=True)):
                        failures.append("wrong values")

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not failures, failures[:3]


def test_int8_dynamic_without_a_fast_int8_kernel_computes_the_same_integer_products(tiny, ids, monkeypatch):
    """On a CPU whose int8 matmul is slow the layer sums the same int8 x int8 products in fp32: same outputs,
    so an evaluation's quality figures do not depend on which kernel this machine has."""
    from slimlm.models import qlayers
    from slimlm.quantize import Int8DynamicConfig, quantize_

    lin = _linear(in_f=256, out_f=96)
    q = Int8DynamicLinear.from_float(lin)
    x = _inputs(n=33, in_f=256)
    monkeypatch.setitem(qlayers._INT8_MATMUL, "fast", True)
    with torch.no_grad():
        fast = q(x)
    calls = []
    real = torch._int_mm
    monkeypatch.setattr(torch, "_int_mm", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setitem(qlayers._INT8_MATMUL, "fast", False)
    with torch.no_grad():
        slow = q(x)
    assert calls == []  # the fallback took the fp32 path
    torch.testing.assert_close(slow, fast, rtol=1e-6, atol=1e-6)
    monkeypatch.setitem(qlayers._INT8_MATMUL, "fast", True)
    quantize_(tiny, Int8DynamicConfig())
    with torch.no_grad():
        a = tiny.hf(ids).logits
        monkeypatch.setitem(qlayers._INT8_MATMUL, "fast", False)
        b = tiny.hf(ids).logits
    assert len(calls) > 0  # the model's first forward used the int8 kernel
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_int8_float_matmul_in_blocks_equals_the_whole_product(monkeypatch):
    """A weight above the whole-conversion limit is multiplied a block of rows at a time (one matmul per
    block): the same product as converting it whole, exactly for integer inputs, to fp32 rounding for float
    ones. A weight under the limit, or one a gradient flows through, is converted whole (no blocks)."""
    from slimlm.models.qlayers import int8_float_matmul

    calls = []
    real = torch.matmul
    monkeypatch.setattr(torch, "matmul", lambda *a, **k: calls.append(1) or real(*a, **k))
    g = torch.Generator().manual_seed(3)
    w = torch.randint(-127, 128, (1003, 96), generator=g, dtype=torch.int8)  # 1003 rows: a ragged last block
    block = 4 * 96 * 64  # 64 rows per block: 16 blocks
    for m in (1, 5, 40):
        xi = torch.randint(-127, 128, (m, 96), generator=g).float()
        whole = F.linear(xi, w.float())
        calls.clear()
        blocked = int8_float_matmul(xi, w, block_bytes=block, whole_max_bytes=block)
        assert len(calls) == 16
        assert blocked.shape == (m, 1003)
        assert torch.equal(blocked, whole)
        xf = torch.randn(m, 96, generator=g)
        torch.testing.assert_close(int8_float_matmul(xf, w, block_bytes=block, whole_max_bytes=block),
                                   F.linear(xf, w.float()))
    calls.clear()
    assert torch.equal(int8_float_matmul(xi, w, block_bytes=block), whole)  # 385 kB: under the default limit
    x = torch.randn(3, 96, generator=g, requires_grad=True)
    int8_float_matmul(x, w, block_bytes=block, whole_max_bytes=block).sum().backward()
    assert calls == []
    torch.testing.assert_close(x.grad, w.float().sum(0).expand(3, 96))


def test_int8_weight_only_layer_blocks_a_large_weight_and_keeps_its_outputs(monkeypatch):
    """A weight-only int8 layer above the whole-conversion limit runs in blocks and gives what the whole
    product gives, for 3-D activations as a model passes them."""
    from slimlm.models import qlayers

    lin = _linear(in_f=64, out_f=700)
    q = Int8WeightLinear.from_float(lin)
    x = _inputs(n=6, in_f=64).reshape(2, 3, 64)
    with torch.no_grad():
        whole = q(x)
        monkeypatch.setattr(qlayers, "FLOAT_WHOLE_MAX_BYTES", 4 * 64 * 50)
        monkeypatch.setattr(qlayers, "FLOAT_BLOCK_BYTES", 4 * 64 * 50)  # 50 rows per block: 14 blocks
        calls = []
        real = torch.matmul
        monkeypatch.setattr(torch, "matmul", lambda *a, **k: calls.append(1) or real(*a, **k))
        blocked = q(x)
    assert len(calls) == 14 and blocked.shape == (2, 3, 700)
    torch.testing.assert_close(blocked, whole)
    torch.testing.assert_close(whole, lin(x), rtol=0.02, atol=0.02)


@pytest.mark.parametrize("forced, fast", [("int", True), ("float", False), (" Float ", False)])
def test_int8_kernel_choice_can_be_forced_without_measuring(forced, fast, monkeypatch):
    from slimlm.models import qlayers

    monkeypatch.setitem(qlayers._INT8_MATMUL, "fast", None)
    monkeypatch.setenv(qlayers.INT8_MATMUL_ENV, forced)
    monkeypatch.setattr(torch, "_int_mm", lambda *a: pytest.fail("measured although the choice was forced"))
    assert qlayers.int8_matmul_is_fast() is fast
    assert qlayers._INT8_MATMUL["fast"] is fast


def test_int8_kernel_choice_is_measured_once_and_kept(monkeypatch):
    from slimlm.models import qlayers

    monkeypatch.setitem(qlayers._INT8_MATMUL, "fast", None)
    monkeypatch.delenv(qlayers.INT8_MATMUL_ENV, raising=False)
    calls = []
    real = torch._int_mm
    monkeypatch.setattr(torch, "_int_mm", lambda *a: calls.append(1) or real(*a))
    first = qlayers.int8_matmul_is_fast()
    n = len(calls)
    assert n >= 2 and isinstance(first, bool)  # a warm-up and timed runs
    assert qlayers.int8_matmul_is_fast() is first and len(calls) == n  # the answer is kept, not re-measured


def test_int8_kernel_choice_is_measured_on_one_thread_and_restores_the_count(monkeypatch):
    """With two threads on busy cores each product waits for a descheduled thread (measured: ~8 ms for a
    0.05 ms int8 product), which chose the fp32 fallback on a VNNI host; the measurement runs on one thread,
    alternating the kernels, and gives the caller its thread count back, also when a kernel fails."""
    from slimlm.models import qlayers

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        real = torch._int_mm
        monkeypatch.setattr(torch, "_int_mm", lambda *a: seen.append(torch.get_num_threads()) or real(*a))
        assert isinstance(qlayers._measure_int8_matmul(rounds=3), bool)
        assert seen == [1] * 4  # warm-up + 3 rounds, all on one thread
        assert torch.get_num_threads() == 2

        def broken(*a):
            raise RuntimeError("no int8 kernel")

        monkeypatch.setattr(torch, "_int_mm", broken)
        with pytest.raises(RuntimeError):
            qlayers._measure_int8_matmul()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_int8_kernel_choice_follows_the_faster_kernel(monkeypatch):
    """The choice is the faster kernel's: an int8 product made slower than fp32 picks fp32."""
    from slimlm.models import qlayers

    real = torch._int_mm

    def slow(*a):
        time.sleep(0.05)  # far above an fp32 64x512x512 product, even on a loaded machine
        return real(*a)

    monkeypatch.setattr(torch, "_int_mm", slow)
    assert qlayers._measure_int8_matmul(rounds=2) is False

def test_int8_int_matmul_in_column_blocks_equals_the_whole_product(monkeypatch):
    """An int32 product above the limit is computed a block of output columns at a time, scaled straight into
    the fp32 output (no whole int32 temporary): identical to the whole product, ragged last block included;
    under the limit, one call. An int8-dynamic layer gives the same outputs either way."""
    from slimlm.models import qlayers
    from slimlm.models.qlayers import int8_int_matmul

    if not hasattr(torch, "_int_mm"):
        pytest.skip("no torch._int_mm")
    calls = []
    real = torch._int_mm
    monkeypatch.setattr(torch, "_int_mm", lambda *a, **k: calls.append(a[1].shape[1]) or real(*a, **k))
    g = torch.Generator().manual_seed(5)
    w = torch.randint(-127, 128, (1003, 96), generator=g, dtype=torch.int8)  # 1003 columns out: ragged
    for m in (17, 40):
        q = torch.randint(-127, 128, (m, 96), generator=g, dtype=torch.int8)
        s = torch.rand(m, 1, generator=g)
        whole = torch.mul(real(q, w.t()), s)
        calls.clear()
        block = 4 * m * 64  # 64 columns a block
        got = int8_int_matmul(q, w, s, block_bytes=block, whole_max_bytes=block)
        assert calls == [64] * 15 + [1003 - 15 * 64] and torch.equal(got, whole)
        calls.clear()
        assert torch.equal(int8_int_matmul(q, w, s), whole) and calls == [1003]  # small: one call
    lin = _linear(in_f=64, out_f=700)
    layer = Int8DynamicLinear.from_float(lin)
    x = _inputs(n=40, in_f=64).reshape(2, 20, 64)
    with torch.no_grad():
        monkeypatch.setitem(qlayers._INT8_MATMUL, "fast", True)
        a = layer(x)
        monkeypatch.setattr(qlayers, "FLOAT_WHOLE_MAX_BYTES", 4 * 40 * 96)
        monkeypatch.setattr(qlayers, "FLOAT_BLOCK_BYTES", 4 * 40 * 96)  # 96 columns a block
        calls.clear()
        b = layer(x)
    assert len(calls) == 8 and torch.equal(a, b)
