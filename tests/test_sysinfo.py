"""runtime.sysinfo: the machine line every benchmark and report carries."""
from __future__ import annotations

from runtime import sysinfo

EPYC = ("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx avx2 fma bmi2\n\n"
        "processor\t: 1\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu\n")
SPR = "model name\t: Intel(R) Xeon(R) Platinum 8481C\nflags\t: avx2 fma avx512f avx512_vnni avx512_bf16 amx_tile amx_bf16 amx_int8\n"


def _info(tmp_path, text):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return sysinfo._cpuinfo(str(path))


def test_avx2_only_cpu(tmp_path):
    info = _info(tmp_path, EPYC)
    feats = sysinfo.isa_features(info)
    assert sysinfo.cpu_model(info) == "AMD EPYC 7B13"
    assert feats == ["AVX2", "FMA"] and sysinfo.isa_class(feats) == "avx2"


def test_amx_cpu(tmp_path):
    feats = sysinfo.isa_features(_info(tmp_path, SPR))
    assert {"AVX-512", "AVX512-VNNI", "AVX512-BF16", "AMX-BF16", "AMX-INT8"} <= set(feats)
    assert sysinfo.isa_class(feats) == "amx"


def test_missing_cpuinfo_is_not_an_error(tmp_path):
    assert sysinfo._cpuinfo(str(tmp_path / "absent")) == {}
    assert sysinfo.isa_class(sysinfo.isa_features({})) == "baseline"


def test_describe_names_cpu_isa_threads_and_versions():
    info = sysinfo.machine_info()
    line = sysinfo.describe(info)
    assert info["cpu"] in line and f"{info['threads']} threads" in line and "numpy" in line
    assert info["threads"] >= 1


def test_native_bf16_only_with_bf16_hardware_and_caps_are_named(tmp_path, monkeypatch):
    assert not sysinfo.native_bf16(sysinfo.isa_features(_info(tmp_path, EPYC)))
    assert sysinfo.native_bf16(sysinfo.isa_features(_info(tmp_path, SPR)))
    assert not sysinfo.native_bf16(["AVX2", "FMA", "AVX-512", "AVX512-VNNI"])   # AVX-512 alone: emulated
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    info = sysinfo.machine_info()
    assert info["isa_caps"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert "ISA capped: ONEDNN_MAX_CPU_ISA=AVX2; ONNX Runtime is not capped" in sysinfo.describe(info)
