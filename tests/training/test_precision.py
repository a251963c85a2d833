"""Native bf16 / fp16 detection and the training script's warning when a requested mixed precision is emulated."""

import logging

import pytest
import torch

import asintrovae_hf.training.precision as precision
from asintrovae_hf.training.loop import train
from asintrovae_hf.training.args import parse_args
from helpers import TINY

AVX2 = frozenset({"fpu", "sse2", "avx", "avx2", "fma", "f16c"})
SAPPHIRE_RAPIDS = AVX2 | {"avx512f", "avx512bw", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16", "amx_fp16"}


@pytest.fixture
def cpu_with(monkeypatch):
    def set_flags(flags):
        monkeypatch.setattr(precision, "cpu_flags", lambda path="/proc/cpuinfo": frozenset(flags))

    return set_flags


def test_cpu_detection(cpu_with):
    cpu_with(AVX2)
    assert precision.native_formats("cpu") == {"bf16": False, "fp16": False}
    cpu_with(AVX2 | {"avx512f", "avx512bw", "avx512_bf16"})
    assert precision.native_formats("cpu") == {"bf16": True, "fp16": False}
    cpu_with(SAPPHIRE_RAPIDS)
    assert precision.native_formats("cpu") == {"bf16": True, "fp16": True}
    cpu_with({"fp", "asimd", "asimdhp", "fphp", "bf16"})  # an Arm CPU with both
    assert precision.native_formats("cpu") == {"bf16": True, "fp16": True}
    cpu_with(set())  # flags unreadable: cannot tell, no warning
    assert precision.native_formats("cpu") == {"bf16": None, "fp16": None}
    assert precision.precision_warning("bf16", "cpu") is None


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 fma\n\nprocessor\t: 1\n")
    assert precision.cpu_flags(str(cpuinfo)) == {"fpu", "sse2", "avx2", "fma"}
    assert precision.cpu_flags(str(tmp_path / "missing")) == frozenset()


@pytest.mark.parametrize("capability,native", [((7, 0), {"bf16": False, "fp16": True}),
                                               ((8, 0), {"bf16": True, "fp16": True}),
                                               ((6, 1), {"bf16": False, "fp16": False})])
def test_cuda_detection(monkeypatch, capability, native):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some GPU")
    assert precision.native_formats("cuda") == native
    warning = precision.precision_warning("bf16", "cuda")
    assert (warning is None) == native["bf16"]
    if warning:
        assert "compute capability" in warning and "--mixed_precision no" in warning


def test_warning_text(cpu_with):
    cpu_with(AVX2)
    warning = precision.precision_warning("bf16", "cpu")
    assert warning.startswith("--mixed_precision bf16 will be emulated on this CPU")
    assert "avx512_bf16 or amx_bf16" in warning and "slower than in full precision" in warning
    assert precision.precision_warning("no", "cpu") is None and precision.precision_warning(None, "cpu") is None
    cpu_with(SAPPHIRE_RAPIDS)
    assert precision.precision_warning("bf16", "cpu") is None and precision.precision_warning("fp16", "cpu") is None


@pytest.mark.usefixtures("fresh_accelerate")
@pytest.mark.parametrize("flags,warned", [(AVX2, True), (SAPPHIRE_RAPIDS, False)])
def test_training_script_warns_when_bf16_is_emulated(tmp_path, cpu_with, caplog, flags, warned):
    cpu_with(flags)
    with caplog.at_level(logging.WARNING, logger="asintrovae_hf.training"):
        train(parse_args(TINY + ["--output_dir", str(tmp_path / "out"), "--max_train_steps", "1",
                                 "--mixed_precision", "bf16"]))
    messages = [r.getMessage() for r in caplog.records if "will be emulated" in r.getMessage()]
    assert len(messages) == int(warned)
