"""CPU flag parsing for the int8 warning: fake /proc/cpuinfo text for each kind of CPU."""

from slimlm.profile.cpu import INT8_SLOW_WARNING, cpu_flags, int8_gemm_support, int8_slow_warning

AVX2_ONLY = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu vme de pse sse sse2 ssse3 sse4_1 sse4_2 avx f16c avx2 fma bmi2
"""
ICELAKE = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw avx512_vnni avx512_vbmi\n"
ALDERLAKE = "flags\t\t: fpu sse avx2 avx_vnni\n"
SAPPHIRE = "flags\t\t: avx2 avx512f amx_bf16 amx_tile amx_int8\n"
GRAVITON2 = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 asimddp\n"
CORTEX_A53 = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"


def test_avx2_only_cpu_has_no_fast_int8_and_gets_the_warning():
    s = int8_gemm_support(AVX2_ONLY)
    assert s["isa"] == "x86" and s["fast"] is False and s["instructions"] == []
    assert int8_slow_warning(s) == INT8_SLOW_WARNING
    assert "VNNI/AMX" in INT8_SLOW_WARNING and "slower than fp32" in INT8_SLOW_WARNING


def test_vnni_or_amx_on_x86_counts_as_fast():
    assert int8_gemm_support(ICELAKE)["instructions"] == ["avx512_vnni"]
    assert int8_gemm_support(ALDERLAKE)["instructions"] == ["avx_vnni"]
    assert int8_gemm_support(SAPPHIRE)["instructions"] == ["amx_int8"]
    assert all(int8_slow_warning(int8_gemm_support(t)) is None for t in (ICELAKE, ALDERLAKE, SAPPHIRE))


def test_arm_features_line_dot_product_is_fast_and_without_it_warns():
    assert cpu_flags(GRAVITON2)[0] == "arm"
    assert int8_gemm_support(GRAVITON2)["fast"] is True
    slow = int8_gemm_support(CORTEX_A53)
    assert slow["fast"] is False and "dot-product" in int8_slow_warning(slow)


def test_unreadable_cpuinfo_is_unknown_and_silent():
    s = int8_gemm_support("")
    assert s["fast"] is None or s["isa"] == "arm"  # Apple Silicon is known without /proc/cpuinfo
    assert int8_slow_warning({"fast": None}) is None and int8_slow_warning(None) is None


def test_machine_description_records_the_int8_kernel_the_layers_use(monkeypatch):
    from slimlm.models import qlayers
    from slimlm.profile import machine_info

    for forced, expected in (("float", "fp32"), ("int", "int8")):
        monkeypatch.setitem(qlayers._INT8_MATMUL, "fast", None)
        monkeypatch.setenv(qlayers.INT8_MATMUL_ENV, forced)
        assert machine_info()["int8_matmul"] == expected
