"""The CPU a figure was measured on (print with every figure): handler/cpu.py, as /health reports it."""

from __future__ import annotations

from handler.cpu import this_cpu


def describe() -> str:
    return this_cpu().describe()
