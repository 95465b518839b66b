"""The CPU this process landed on: its model, the CPUs it may use, and the instruction-set features that
decide int8 speed (docs/results.md §8, §15). Read once from /proc/cpuinfo and the cgroup quota, logged at
init, reported by /health, printed by every benchmark; `available_cpus` sizes every thread pool."""

from __future__ import annotations

import functools
import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path

# Best first: the first one present names the int8 kernels onnxruntime's MLAS picks on this CPU.
INT8_FEATURES = ("amx_int8", "avx512_vnni", "avx_vnni", "avx512bw", "avx2", "i8mm", "asimddp")
SHOWN = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


@dataclass(frozen=True)
class Cpu:
    model: str
    arch: str
    cpus: int
    isa: tuple[str, ...]  # the SHOWN features it has
    int8: str  # the best int8 feature it has (INT8_FEATURES), or "none"

    def describe(self) -> str:
        isa = " ".join(self.isa) or "none of " + ",".join(SHOWN)
        return f"CPU: {self.model}; {self.cpus} CPUs; ISA: {isa}"

    def as_dict(self) -> dict:
        return {"model": self.model, "arch": self.arch, "cpus": self.cpus, "isa": list(self.isa), "int8": self.int8}


def available_cpus() -> int:
    """CPUs this process may really use: affinity and the cgroup quota (Lambda, containers)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


@functools.cache
def this_cpu() -> Cpu:
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name" and not model:
                model = value
            elif key in ("flags", "Features") and not flags:  # x86 / arm64
                flags = set(value.split())
    except OSError:  # not Linux: the model from platform, features unknown
        pass
    return Cpu(
        model=model or platform.processor() or platform.machine(),
        arch=platform.machine(),
        cpus=available_cpus(),
        isa=tuple(f for f in SHOWN if f in flags),
        int8=next((f for f in INT8_FEATURES if f in flags), "none"),
    )
