#!/bin/sh
# Prune a runtime install (pip install --target DIR .) down to what the handler imports.
# Each removal is something the serving path never imports; benchmarks/cold_start.py run against the
# pruned tree proves it (docs/results.md). Usage: scripts/slim_runtime.sh DIR
set -eu
cd "$1"
# installers and the hub client that tokenizers pulls in (the runtime reads tokenizer.json from disk)
rm -rf pip pip-* setuptools setuptools-* pkg_resources _distutils_hack distutils-precedence.pth \
  hf_xet hf_xet-* huggingface_hub huggingface_hub-* fsspec fsspec-* filelock filelock-* \
  yaml _yaml pyyaml-* tqdm tqdm-* httpx2 httpx2-* httpcore2 httpcore2-* truststore truststore-* click click-*
# onnxruntime's offline tools (quantisation, transformer optimiser, training datasets) and numpy's build tools
rm -rf onnxruntime/transformers onnxruntime/tools onnxruntime/quantization onnxruntime/datasets \
  onnxruntime/backend numpy/f2py numpy/distutils numpy/_pyinstaller numpy/testing numpy/typing/tests
find . -type d -name tests -path "*numpy*" -prune -exec rm -rf {} +
# onnxruntime's C-API library: the Python bindings link onnxruntime statically and never load it; the
# wheel carries it for other packages' native code (onnxruntime-genai), 29 MB on 1.31
rm -f onnxruntime/capi/libonnxruntime.so*
# build-time-only packages of this project (export, index build, evaluation, training, benchmarks)
rm -rf model_export evaluation training benchmarks
# debug symbols of hnswlib, compiled from source in the image (wheels' vendored libraries are
# patchelf-ed by auditwheel and break when stripped: numpy.libs' OpenBLAS did)
find . -maxdepth 1 -name "hnswlib*.so" -exec strip --strip-unneeded {} +
