"""Precision chosen by the hardware (irnet_moana.precision), with the CPU's and GPU's capabilities mocked."""
import warnings

import pytest
import torch

from irnet_moana import precision as P
from irnet_moana.precision import Precision, PrecisionError, choose
from irnet_moana.training import autocast

CPU = torch.device("cpu")
CUDA = torch.device("cuda", 0)
# (AMX tiles, avx512_bf16, AVX-512, AVX2) as torch.cpu reports them
KINDS = {"AMX": (True, True, True, True), "AVX-512 bf16": (False, True, True, True),
         "AVX-512": (False, False, True, True), "AVX2": (False, False, False, True)}


@pytest.fixture
def cpu_of_kind(monkeypatch):
    def make(kind: str, onednn_isa: str | None = None) -> None:
        amx, bf16, avx512, avx2 = KINDS[kind]
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16)
        monkeypatch.setattr(torch.cpu, "_is_avx512_supported", lambda: avx512)
        monkeypatch.setattr(torch.cpu, "_is_avx2_supported", lambda: avx2)
        if onednn_isa is None:
            monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
        else:
            monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", onednn_isa)
        monkeypatch.setattr(P, "_warned", set())

    return make


@pytest.fixture
def gpu(monkeypatch):
    def make(native_bf16: bool) -> None:
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Mock GPU")
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0) if native_bf16 else (7, 0))
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native_bf16)

    return make


@pytest.mark.parametrize("kind, expected", [("AVX2", "fp32"), ("AVX-512", "fp32"), ("AVX-512 bf16", "bf16"),
                                            ("AMX", "bf16")])
def test_auto_on_the_cpu_follows_native_bf16(cpu_of_kind, kind, expected):
    cpu_of_kind(kind)
    chosen = choose("auto", CPU, "cam.amp")
    assert chosen.name == expected
    assert chosen.reason.startswith("cam.amp=auto: ") and kind in chosen.reason


@pytest.mark.parametrize("isa, expected", [("AVX2", "fp32"), ("avx512_core", "fp32"), ("AVX512_CORE_VNNI", "fp32"),
                                           ("AVX512_CORE_BF16", "bf16"), ("AVX512_CORE_AMX", "bf16"),
                                           ("DEFAULT", "bf16")])
def test_auto_respects_onednn_cap(cpu_of_kind, isa, expected):
    cpu_of_kind("AMX", onednn_isa=isa)
    chosen = choose("auto", CPU, "cam.infer_precision")
    assert chosen.name == expected
    if expected == "fp32":
        assert f"ONEDNN_MAX_CPU_ISA={isa.upper()}" in chosen.reason


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp16")])
def test_auto_on_cuda_is_bf16_or_fp16(gpu, native, expected):
    gpu(native)
    chosen = choose("auto", CUDA, "deeplab.amp")
    assert chosen.name == expected and "Mock GPU" in chosen.reason


@pytest.mark.parametrize("setting", ["none", "fp32"])
def test_full_precision_settings(cpu_of_kind, setting):
    cpu_of_kind("AMX")
    assert choose(setting, CPU, "irn.amp") == Precision("fp32", f"irn.amp={setting}")


def test_explicit_bf16_on_a_cpu_without_it_runs_with_one_warning(cpu_of_kind):
    cpu_of_kind("AVX2")
    with pytest.warns(RuntimeWarning, match="emulated there and several times slower than fp32"):
        first = choose("bf16", CPU, "cam.amp")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = choose("bf16", CPU, "cam.amp")
    assert first.name == again.name == "bf16" and "emulated" in first.reason


def test_explicit_bf16_on_a_native_cpu_is_silent(cpu_of_kind):
    cpu_of_kind("AVX-512 bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose("bf16", CPU, "cam.amp") == Precision("bf16", "cam.amp=bf16")


def test_fp16_needs_cuda(gpu):
    with pytest.raises(PrecisionError, match="cam.amp=fp16 needs a CUDA GPU"):
        choose("fp16", CPU, "cam.amp")
    gpu(False)
    assert choose("fp16", CUDA, "cam.amp").name == "fp16"


def test_unknown_setting_names_the_key():
    with pytest.raises(PrecisionError, match="wsol.amp must be one of"):
        choose("fp8", CPU, "wsol.amp")


def test_autocast_follows_the_precision():
    with autocast(CPU, Precision("fp32", "test")):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with autocast(CPU, Precision("bf16", "test")):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_stage_prints_and_records_its_precision(tmp_path, capsys, cpu_of_kind):
    from irnet_moana.config import load_config
    from irnet_moana.io import read_json
    from irnet_moana.run import PRECISIONS, start_run

    cpu_of_kind("AVX2")
    cfg = load_config(None, [f"run_dir={tmp_path}", "device=cpu"])
    run = start_run(cfg, "train_cam", precision_key="cam.amp")
    first_line = capsys.readouterr().out.splitlines()[0]
    assert first_line.startswith("[train_cam] precision fp32 (cam.amp=auto: CPU without native bf16 (")
    assert run.precision.name == "fp32"
    assert read_json(tmp_path / PRECISIONS)["train_cam"] == run.precision.as_dict()
    assert read_json(tmp_path / "logs" / "train_cam.provenance.json")["precision"]["precision"] == "fp32"
