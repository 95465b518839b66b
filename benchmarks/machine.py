"""The CPU a figure was measured on (print with every figure): handler/cpu.py, as /health reports it.
`twostage bench machine` prints it alone."""

from __future__ import annotations

import os

from handler.cpu import this_cpu

KERNELS_ENV = "TWOSTAGE_BENCH_KERNELS"  # set by benchmarks.kernel_cap


def describe() -> str:
    capped = os.environ.get(KERNELS_ENV)
    cap = f"; kernels capped at {capped.upper()} (benchmarks.kernel_cap)" if capped else ""
    return this_cpu().describe() + cap


def main() -> None:
    print(describe())


if __name__ == "__main__":
    main()
