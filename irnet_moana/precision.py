"""Numeric precision chosen by the hardware.

bf16 halves the bytes moved and, where the processor has bf16 arithmetic
(AVX-512 bf16 or AMX on x86 CPUs, Ampere and later GPUs), doubles or
quadruples the multiply-add rate. Where it has not, every bf16 operation is
emulated through float32 conversions: a ResNet training step measured 15x
slower in bf16 than in fp32 on an AVX2-only CPU. So ``auto``, the default of
every ``amp`` and ``infer_precision`` setting, asks the hardware:

* CPU: bf16 when torch reports avx512_bf16 or AMX and ``ONEDNN_MAX_CPU_ISA``
  (oneDNN's cap on the instructions it may use) does not rule them out,
  fp32 otherwise;
* CUDA: bf16 where the GPU computes it natively, else fp16 (training then
  scales the loss, see :mod:`irnet_moana.training`).

An explicit ``bf16`` is honoured everywhere, with one warning where it is
emulated.
"""
from __future__ import annotations

import os
import platform
import warnings
from dataclasses import dataclass

import torch

from .config import ConfigError

FULL = ("none", "fp32")  # the training settings say none, the inference settings fp32
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# oneDNN ISA names below its first one with bf16 dot products (AVX512_CORE_BF16);
# any other value (DEFAULT, AVX512_CORE_BF16, the AMX and AVX10 families) keeps bf16.
ONEDNN_ISAS_WITHOUT_BF16 = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE",
                                      "AVX512_CORE_VNNI", "AVX512_MIC", "AVX512_MIC_4OPS"})


class PrecisionError(ConfigError):
    """A precision setting the device cannot run at all."""


@dataclass(frozen=True)
class Precision:
    """What a stage computes in, and why (printed and recorded with the run)."""

    name: str  # fp32 | bf16 | fp16
    reason: str

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    @property
    def reduced(self) -> bool:
        return self.name != "fp32"

    def as_dict(self) -> dict[str, str]:
        return {"precision": self.name, "reason": self.reason}


FP32 = Precision("fp32", "no precision setting")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor string elsewhere)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_kind() -> str:
    """The CPU's widest relevant instructions as torch sees them: AMX, AVX-512 bf16, AVX-512, AVX2 or older."""
    if torch.cpu._is_amx_tile_supported():
        return "AMX"
    if torch.cpu._is_avx512_bf16_supported():
        return "AVX-512 bf16"
    if torch.cpu._is_avx512_supported():
        return "AVX-512"
    if torch.cpu._is_avx2_supported():
        return "AVX2"
    return "pre-AVX2"


def onednn_cap() -> str | None:
    """``ONEDNN_MAX_CPU_ISA`` when it stops oneDNN short of bf16 instructions, else None."""
    value = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    return value if value in ONEDNN_ISAS_WITHOUT_BF16 else None


def cpu_bf16() -> tuple[bool, str]:
    """(native bf16 on this CPU, the evidence in words)."""
    kind = cpu_kind()
    described = f"{cpu_model()}, {kind}, torch kernels {torch.backends.cpu.get_cpu_capability()}"
    if kind not in ("AMX", "AVX-512 bf16"):
        return False, f"CPU without native bf16 ({described})"
    cap = onednn_cap()
    if cap is not None:
        return False, f"ONEDNN_MAX_CPU_ISA={cap} rules out the bf16 instructions of this CPU ({described})"
    return True, f"CPU with native bf16 ({described})"


def cuda_bf16(device: torch.device) -> tuple[bool, str]:
    """(native bf16 on this GPU, the evidence in words)."""
    name = torch.cuda.get_device_name(device)
    major, minor = torch.cuda.get_device_capability(device)
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    return native, f"{name}, compute capability {major}.{minor}, {'native' if native else 'no native'} bf16"


_warned: set[tuple[str, str]] = set()


def choose(setting: str, device: torch.device, key: str = "precision") -> Precision:
    """The precision for ``setting`` (auto | none | fp32 | bf16 | fp16) of config key ``key`` on ``device``."""
    if setting in FULL:
        return Precision("fp32", f"{key}={setting}")
    if setting == "fp16":
        if device.type != "cuda":
            raise PrecisionError(f"{key}=fp16 needs a CUDA GPU; use {key}=auto (or bf16) on the CPU")
        return Precision("fp16", f"{key}=fp16")
    native, evidence = cpu_bf16() if device.type == "cpu" else cuda_bf16(device)
    if setting == "auto":
        if native:
            return Precision("bf16", f"{key}=auto: {evidence}")
        if device.type == "cuda":
            return Precision("fp16", f"{key}=auto: {evidence}")
        return Precision("fp32", f"{key}=auto: {evidence}")
    if setting != "bf16":
        raise PrecisionError(f"{key} must be one of auto, none, fp32, bf16, fp16, got {setting!r}")
    if not native and (key, evidence) not in _warned:
        _warned.add((key, evidence))
        warnings.warn(f"{key}=bf16 on a {evidence}: bf16 is emulated there and several times slower than "
                      f"fp32; use {key}=auto or fp32", RuntimeWarning, stacklevel=2)
    return Precision("bf16", f"{key}=bf16" + ("" if native else f", emulated: {evidence}"))
