"""The machine a benchmark or a build measurement ran on: CPU model, cores and the instruction sets INT8
speed depends on."""

from __future__ import annotations

import os
import platform
from pathlib import Path

# x86 features that decide INT8 and FP32 convolution speed in ONNX Runtime (MLAS kernels)
FEATURES = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")


def cpu_model_and_flags(cpuinfo: str | None = None) -> tuple[str, set[str]]:
    """(model name, flags) from /proc/cpuinfo (ARM: ``Features``); empty on other systems."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text(errors="replace") if path.is_file() else ""
    model, flags = platform.processor() or platform.machine(), set[str]()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware") and value.strip():
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, flags


def cpu_summary(cpuinfo: str | None = None) -> str:
    """One line: model, logical CPUs, and which of :data:`FEATURES` the CPU has."""
    model, flags = cpu_model_and_flags(cpuinfo)
    have = " ".join(f for f in FEATURES if f in flags) or "none of " + " ".join(FEATURES)
    return f"CPU: {model}, {os.cpu_count()} logical CPUs, {platform.machine()}; features: {have}"


def usable_cores() -> int:
    """The logical CPUs this process may run on (its affinity mask, else the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def machine_key(cpuinfo: str | None = None, cores: int | None = None) -> str:
    """What a speed measurement holds for: CPU model, its features, the usable cores and the architecture
    (a measurement from another machine, or the same one with fewer cores, is not this machine's)."""
    model, flags = cpu_model_and_flags(cpuinfo)
    have = "+".join(f for f in FEATURES if f in flags) or "-"
    return f"{model}|{platform.machine()}|{have}|{usable_cores() if cores is None else cores} cores"
