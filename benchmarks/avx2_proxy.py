"""Run a benchmark on the kernels an AVX2-only CPU gets, from a newer x86 CPU (AVX-512, AVX-VNNI).

    python -m benchmarks.avx2_proxy rerank-peers --threads 2    (or: twostage bench avx2-proxy rerank-peers …)
    python -m benchmarks.avx2_proxy int8-variants --json artifacts/reports/int8-variants-avx2-proxy.json

onnxruntime's MLAS picks its kernels once, from CPUID and XCR0, and has no setting to cap them. This
copies the installed onnxruntime to artifacts/bench/avx2-proxy/ and patches each inlined copy of that
choice: XCR0 reads as x87|SSE|AVX (no AVX-512 state, so no AVX-512 kernels) and the AVX-VNNI branch is
never taken. MLAS then runs what it runs on an AVX2-only EPYC: vpmaddubsw u8×s8 GEMMs, FMA3 sgemm,
the AVX2/FMA3 elementwise kernels. torch is capped by its own switches. The module then runs with
that onnxruntime first on the path, and `benchmarks.machine.describe` says the kernels are capped.

What it measures: the AVX2 code paths, on this core. What it cannot: an AVX2-only CPU's own speed
(older cores have other pipes and caches). Compare its rows with each other, within one run.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

from benchmarks.machine import KERNELS_ENV

PROXY_DIR = Path("artifacts/bench/avx2-proxy")
TORCH_CAPS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}

# `xor ecx, ecx; xgetbv; mov eax, eax; shl rdx, 32`: MLAS reading XCR0. xgetbv becomes
# `lea eax, [rcx + 7]` (ecx is 0 there), so the OS seems to save no AVX-512 state.
XGETBV = bytes.fromhex("31c9 0f01d0 89c0 48c1e220")
NO_AVX512_STATE = b"\x8d\x41\x07"
# `mov eax, 7; mov ecx, 1; cpuid; test al, 0x10; je …`: the AVX-VNNI test. je becomes jmp.
AVX_VNNI_TEST = bytes.fromhex("b807000000 b901000000 0fa2 a810 74")
JMP_SHORT = 0xEB


def patch_mlas_dispatch(library: bytes) -> bytes:
    """The library with every MLAS kernel choice capped at AVX2; refuses a build whose code differs."""
    xgetbv = [m.start() for m in re.finditer(re.escape(XGETBV), library)]
    vnni = [m.start() for m in re.finditer(re.escape(AVX_VNNI_TEST), library)]
    if not xgetbv or len(xgetbv) != len(vnni):
        raise SystemExit(
            f"this onnxruntime's MLAS dispatch is not the one this proxy knows ({len(xgetbv)} XCR0 reads, "
            f"{len(vnni)} AVX-VNNI tests; patterns from onnxruntime 1.31.1, x86-64 Linux)"
        )
    patched = bytearray(library)
    for offset in xgetbv:
        patched[offset + 2 : offset + 5] = NO_AVX512_STATE
    for offset in vnni:
        patched[offset + len(AVX_VNNI_TEST) - 1] = JMP_SHORT
    return bytes(patched)


def capped_onnxruntime(proxy_dir: Path = PROXY_DIR) -> Path:
    """A patched copy of the installed onnxruntime package under proxy_dir/<version>; returns the
    directory to put first on the path."""
    import onnxruntime

    site = proxy_dir / onnxruntime.__version__
    package = site / "onnxruntime"
    if not (site / ".patched").is_file():
        shutil.rmtree(site, ignore_errors=True)
        shutil.copytree(Path(onnxruntime.__file__).parent, package)
        library = next((package / "capi").glob("onnxruntime_pybind11_state*.so"))
        library.write_bytes(patch_mlas_dispatch(library.read_bytes()))
        (site / ".patched").touch()
    return site.resolve()


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        raise SystemExit(__doc__)
    site = capped_onnxruntime()
    os.environ.update(TORCH_CAPS, **{KERNELS_ENV: "avx2"})
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    # a fresh interpreter: torch reads its caps at import, and onnxruntime must not be loaded yet
    module = sys.argv[1] if "." in sys.argv[1] else "benchmarks." + sys.argv[1].replace("-", "_")
    os.execv(sys.executable, [sys.executable, "-m", module, *sys.argv[2:]])


if __name__ == "__main__":
    main()
