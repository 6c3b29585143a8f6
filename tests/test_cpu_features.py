"""bf16 detection reads the CPU's flags and honours the override."""
from nnqc import cpu_features


def test_flags_decide(tmp_path):
    with_amx = tmp_path / "amx"
    with_amx.write_text("processor: 0\nflags\t\t: fpu sse2 avx512f amx_bf16 amx_tile\n")
    without = tmp_path / "old"
    without.write_text("processor: 0\nflags\t\t: fpu sse2 avx2\n")
    assert cpu_features._cpu_flags(str(with_amx)) & set(cpu_features.BF16_FLAGS) == {"amx_bf16"}
    assert not cpu_features._cpu_flags(str(without)) & set(cpu_features.BF16_FLAGS)
    assert cpu_features._cpu_flags(str(tmp_path / "missing")) == set()


def test_override(monkeypatch):
    for value, expected in (("0", False), ("1", True)):
        monkeypatch.setenv(cpu_features.OVERRIDE_VARIABLE, value)
        cpu_features.cpu_has_native_bf16.cache_clear()
        assert cpu_features.cpu_has_native_bf16() is expected
    cpu_features.cpu_has_native_bf16.cache_clear()
