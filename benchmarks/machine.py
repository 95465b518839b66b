"""The CPU a figure was measured on (print with every figure): handler/cpu.py, as /health reports it.
`twostage bench machine` prints it alone."""

from __future__ import annotations

from handler.cpu import this_cpu


def describe() -> str:
    return this_cpu().describe()


def main() -> None:
    print(describe())


if __name__ == "__main__":
    main()
