"""The CPU a figure was measured on: model and the ISA flags that change int8 speed (print with every figure)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def describe() -> str:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            if key.strip() in ("flags", "Features"):
                flags = set(value.split())
    except OSError:
        pass
    isa = " ".join(f for f in FLAGS if f in flags) or "none of " + ",".join(FLAGS)
    return f"CPU: {model}; {os.cpu_count()} CPUs; ISA: {isa}"
