"""benchmarks.kernel_cap really gives onnxruntime an AVX2-only CPU's int8 kernels, and those kernels
are why our int8 weights are 7-bit: AVX2's vpmaddubsw saturates on full-range signed weights."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from benchmarks.kernel_cap import AVX_VNNI_TEST, LEVELS, XGETBV, capped_onnxruntime, patch_mlas_dispatch
from handler.cpu import this_cpu

# u8 activations at 255 against int8 weights at ±max: MatMulInteger on each ISA's kernels
SATURATION_PROBE = """
import json, numpy as np, onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
out = {}
for top in (127, 63):
    b = numpy_helper.from_array(np.full((64, 16), top, np.int8), "B")
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "g",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [None, 64])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [None, 16])], [b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out[top] = int(session.run(None, {"A": np.full((8, 64), 255, np.uint8)})[0][0, 0])
print(json.dumps({"onnxruntime": ort.__file__, "dot": out}))
"""


def probe(pythonpath: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run([sys.executable, "-c", SATURATION_PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_refuses_a_library_it_does_not_know():
    with pytest.raises(SystemExit, match="not the one this script knows"):
        patch_mlas_dispatch(b"\x90" * 1024 + XGETBV, LEVELS["avx2"])  # an XCR0 read but no AVX-VNNI test


@pytest.mark.parametrize(("level", "changed"), [("avx2", 6), ("avx512_vnni", 5)])
def test_patches_each_dispatch_copy_and_nothing_else(level, changed):
    library = b"\x90" * 64 + XGETBV + b"\x90" * 64 + AVX_VNNI_TEST + b"\x38" + b"\x90" * 64
    patched = patch_mlas_dispatch(library, LEVELS[level])
    assert len(patched) == len(library)
    # xgetbv + `mov eax, eax` become `mov eax, XCR0` (5 bytes); at avx2 the AVX-VNNI je becomes jmp
    assert sum(a != b for a, b in zip(library, patched, strict=True)) == changed
    assert patched[64 + 2 : 64 + 7] == bytes([0xB8]) + LEVELS[level].xcr0.to_bytes(4, "little")


@pytest.mark.skipif(platform.machine() != "x86_64", reason="MLAS's x86-64 dispatch")
def test_capped_kernels_saturate_full_range_weights_and_not_7_bit_ones(tmp_path):
    capped = probe(str(capped_onnxruntime("avx2", tmp_path)))
    assert capped["onnxruntime"].startswith(str(tmp_path))
    exact = {top: 64 * 255 * top for top in (127, 63)}
    assert capped["dot"]["63"] == exact[63]  # 7-bit weights: exact on AVX2 too
    assert capped["dot"]["127"] < exact[127]  # vpmaddubsw's 16-bit pair sums saturate
    host = probe()
    if this_cpu().int8 in ("avx512_vnni", "avx_vnni", "amx_int8"):
        assert host["dot"] == {str(k): v for k, v in exact.items()}  # vpdpbusd: exact at full range


@pytest.mark.skipif("avx512_vnni" not in this_cpu().isa, reason="needs AVX-512 VNNI to cap at it")
def test_the_avx512_vnni_cap_keeps_vpdpbusd(tmp_path):
    # XCR0 still names AVX-512 state (only AMX's tiles are hidden), so full-range weights stay exact
    capped = probe(str(capped_onnxruntime("avx512_vnni", tmp_path)))
    assert capped["onnxruntime"].startswith(str(tmp_path))
    assert capped["dot"] == {str(top): 64 * 255 * top for top in (127, 63)}
