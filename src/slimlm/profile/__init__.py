"""Profile: size, memory, latency percentiles, decode speed, FLOPs, roofline share, energy and CO2e."""

from slimlm.profile.core import DEFAULT_SHAPES, compare, dir_mb, disk_mb, parse_shapes, profile
from slimlm.profile.cpu import int8_gemm_support, int8_slow_warning
from slimlm.profile.energy import co2e_grams
from slimlm.profile.flops import decode_bytes_per_token, prefill_flops, tensor_bytes
from slimlm.profile.machine import machine_info, roofline

__all__ = [
    "DEFAULT_SHAPES", "co2e_grams", "compare", "dir_mb", "disk_mb", "decode_bytes_per_token", "int8_gemm_support",
    "int8_slow_warning", "machine_info", "parse_shapes",
    "prefill_flops", "profile", "roofline", "tensor_bytes",
]

from slimlm._verbs import make_callable  # noqa: E402

make_callable(__name__, "slimlm.profile:profile")  # `slimlm.profile(...)` calls the public verb
