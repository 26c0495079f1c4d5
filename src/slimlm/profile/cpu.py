"""Does this CPU have fast int8 matrix-multiply instructions? (It decides whether int8-dynamic pays off.)

slimlm's int8-dynamic layers multiply int8 activations by int8 weights (``torch._int_mm``; ONNX Runtime's
``MatMulInteger`` does the same). Those kernels are fast only where the CPU has an int8 dot-product
instruction: x86 ``avx512_vnni``, ``avx_vnni`` or ``amx_int8``; Arm ``asimddp`` (dot product) or ``i8mm``.
Without one (an AVX2-only x86 CPU, for example) an int8 GEMM was measured ~50x slower than the fp32 one;
slimlm's layers then multiply the same integers in fp32 (`slimlm.models.qlayers.int8_matmul_is_fast`, which
measures rather than reads flags), so int8-dynamic is no faster than fp32 there, though not 50x slower. The flags are read from ``/proc/cpuinfo`` (Linux);
``torch.backends.cpu.get_cpu_capability()`` is recorded beside them. Elsewhere the answer is unknown (None)
and no warning is given.
"""

from __future__ import annotations

import platform

X86_INT8 = ("avx512_vnni", "avx_vnni", "amx_int8")
ARM_INT8 = ("asimddp", "i8mm")

INT8_SLOW_WARNING = ("int8 GEMMs on this CPU have no VNNI/AMX: expect int8-dynamic prefill to be slower than fp32 "
                     "here (decode may still gain: profile it)")
INT8_SLOW_WARNING_ARM = ("int8 GEMMs on this CPU have no dot-product/i8mm instructions: expect int8-dynamic prefill "
                         "to be slower than fp32 here (decode may still gain: profile it)")


def cpu_flags(cpuinfo: str) -> tuple[str | None, set[str]]:
    """The instruction-set family and feature flags in ``/proc/cpuinfo`` text.

    x86 lists them on ``flags`` lines, Arm on ``Features`` lines.

    Returns:
        ``("x86" | "arm" | None, flags)``; None and an empty set when the text has neither.

    Example:
        >>> cpu_flags("flags\\t\\t: fpu sse avx2 avx512_vnni\\n")
        ('x86', {'fpu', 'sse', 'avx2', 'avx512_vnni'})
    """
    for line in cpuinfo.splitlines():
        key, sep, rest = line.partition(":")
        key = key.strip().lower()
        if sep and key == "flags":
            return "x86", set(rest.split())
        if sep and key == "features":
            return "arm", set(rest.split())
    return None, set()


def int8_gemm_support(cpuinfo: str | None = None) -> dict:
    """Whether this CPU (or the one described by ``cpuinfo`` text) has fast int8 GEMM instructions.

    Args:
        cpuinfo: ``/proc/cpuinfo`` text; default: read it (Linux only).

    Returns:
        ``{"fast": True | False | None, "isa": "x86" | "arm" | None, "instructions": [found],
        "torch_capability": str | None}``; ``fast`` is None when the flags could not be read.
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    isa, flags = cpu_flags(cpuinfo)
    wanted = X86_INT8 if isa == "x86" else ARM_INT8 if isa == "arm" else ()
    found = [f for f in wanted if f in flags]
    cap = None
    try:
        import torch

        cap = torch.backends.cpu.get_cpu_capability()
    except (ImportError, AttributeError, RuntimeError):  # pragma: no cover - older torch
        pass
    if isa is None and platform.system() == "Darwin" and platform.machine() == "arm64":
        isa, found = "arm", ["asimddp"]  # every Apple Silicon core has the Armv8.4 dot product
    return {"fast": bool(found) if isa else None, "isa": isa, "instructions": found, "torch_capability": cap}


def int8_slow_warning(support: dict | None) -> str | None:
    """The one-line warning for a CPU known to lack fast int8 GEMMs (``int8_gemm_support`` output), else None."""
    if not support or support.get("fast") is not False:
        return None
    return INT8_SLOW_WARNING_ARM if support.get("isa") == "arm" else INT8_SLOW_WARNING
