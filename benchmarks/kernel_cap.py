"""Run a benchmark on the kernels an older x86 CPU gets, from a newer one: AVX2-only (an older EPYC),
or AVX-512 VNNI without AMX (an Intel host's kernels before Sapphire Rapids, a Zen 4/5's).

    python -m benchmarks.kernel_cap avx2 rerank-peers --threads 2    (or: twostage bench kernel-cap avx2 …)
    python -m benchmarks.kernel_cap avx512_vnni int8-ceiling         (on an AMX host: its int8 without AMX)

onnxruntime's MLAS picks its kernels once, from CPUID and XCR0, and has no setting to cap them. This
copies the installed onnxruntime to artifacts/bench/kernel-cap/LEVEL/ and patches each inlined copy of
that choice: the XCR0 read (`xgetbv`) becomes a constant that says which register state the OS saves.
At `avx2` it names no AVX-512 and no AMX state and the AVX-VNNI branch is never taken, so MLAS runs
what it runs on an AVX2-only EPYC: vpmaddubsw u8×s8 GEMMs, FMA3 sgemm, the AVX2/FMA3 elementwise
kernels. At `avx512_vnni` it names AVX-512 state but no AMX tiles, so u8×s8 GEMMs run vpdpbusd on zmm
registers instead of AMX tiles. torch is capped by its own switches. The benchmark then runs with that
onnxruntime first on the path, and `benchmarks.machine.describe` says the kernels are capped.

What it measures: those code paths, on this core. What it cannot: another CPU's own speed (older cores
have other pipes and caches). Compare its rows with each other, within one run.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks.machine import KERNELS_ENV

CAP_DIR = Path("artifacts/bench/kernel-cap")


@dataclass(frozen=True)
class Cap:
    xcr0: int  # the state-component bitmap MLAS is shown: x87|SSE|AVX = 0x7; + opmask|ZMM = 0xE7
    skip_avx_vnni: bool  # AVX-VNNI (ymm vpdpbusd) is chosen on the AVX2 branch, so capping needs it off
    torch: dict[str, str]


LEVELS = {
    "avx2": Cap(
        0x07, True, {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    ),
    "avx512_vnni": Cap(0xE7, False, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"}),
}

# `xor ecx, ecx; xgetbv; mov eax, eax; shl rdx, 32`: MLAS reading XCR0. `xgetbv; mov eax, eax` (5 bytes)
# becomes `mov eax, imm32` (5 bytes): XCR0's low half reads as the level's bitmap.
XGETBV = bytes.fromhex("31c9 0f01d0 89c0 48c1e220")
MOV_EAX = 0xB8
# `mov eax, 7; mov ecx, 1; cpuid; test al, 0x10; je …`: the AVX-VNNI test. je becomes jmp.
AVX_VNNI_TEST = bytes.fromhex("b807000000 b901000000 0fa2 a810 74")
JMP_SHORT = 0xEB


def patch_mlas_dispatch(library: bytes, cap: Cap) -> bytes:
    """The library with every MLAS kernel choice capped at `cap`; refuses a build whose code differs."""
    xgetbv = [m.start() for m in re.finditer(re.escape(XGETBV), library)]
    vnni = [m.start() for m in re.finditer(re.escape(AVX_VNNI_TEST), library)]
    if not xgetbv or len(xgetbv) != len(vnni):
        raise SystemExit(
            f"this onnxruntime's MLAS dispatch is not the one this script knows ({len(xgetbv)} XCR0 reads, "
            f"{len(vnni)} AVX-VNNI tests; patterns from onnxruntime 1.31.1, x86-64 Linux)"
        )
    patched = bytearray(library)
    for offset in xgetbv:
        patched[offset + 2 : offset + 7] = bytes([MOV_EAX]) + cap.xcr0.to_bytes(4, "little")
    for offset in vnni if cap.skip_avx_vnni else ():
        patched[offset + len(AVX_VNNI_TEST) - 1] = JMP_SHORT
    return bytes(patched)


def capped_onnxruntime(level: str, cap_dir: Path = CAP_DIR) -> Path:
    """A patched copy of the installed onnxruntime package under cap_dir/level/<version>; returns the
    directory to put first on the path."""
    import onnxruntime

    site = cap_dir / level / onnxruntime.__version__
    package = site / "onnxruntime"
    if not (site / ".patched").is_file():
        shutil.rmtree(site, ignore_errors=True)
        shutil.copytree(Path(onnxruntime.__file__).parent, package)
        library = next((package / "capi").glob("onnxruntime_pybind11_state*.so"))
        library.write_bytes(patch_mlas_dispatch(library.read_bytes(), LEVELS[level]))
        (site / ".patched").touch()
    return site.resolve()


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[1] not in LEVELS or sys.argv[2].startswith("-"):
        raise SystemExit(__doc__ + f"\nLEVEL: one of {', '.join(LEVELS)}")
    level = sys.argv[1]
    site = capped_onnxruntime(level)
    os.environ.update(LEVELS[level].torch, **{KERNELS_ENV: level})
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    # a fresh interpreter: torch reads its caps at import, and onnxruntime must not be loaded yet
    module = sys.argv[2] if "." in sys.argv[2] else "benchmarks." + sys.argv[2].replace("-", "_")
    os.execv(sys.executable, [sys.executable, "-m", module, *sys.argv[3:]])


if __name__ == "__main__":
    main()
