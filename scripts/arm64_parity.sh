#!/bin/sh
# The x86-exported int8 models on arm64's onnxruntime kernels, emulated by qemu-user: Debian's arm64
# python3.11 with onnxruntime's aarch64 wheel, as Graviton2 (neoverse-n1: dot product) and Graviton3
# (neoverse-v1: i8mm, SVE). Correctness only; emulated speed means nothing. Needs Debian 12, root and
# the package registries. qemu comes from bookworm-backports (10.0): 7.2's `max` CPU gave the reranker
# wrong int8 results that 10.0 and the x86 host do not (docs/results.md §11).
# Usage: scripts/arm64_parity.sh [MODELS_DIR]   (default artifacts/models; run from the checkout)
set -eu
models=${1:-artifacts/models}
work=${WORK:-/tmp/twostage-arm64}
python=.venv/bin/python
mkdir -p "$work/debs" "$work/root"

if [ ! -x /usr/bin/qemu-aarch64-static ] || ! qemu-aarch64-static -cpu help | grep -q neoverse-v1; then
  echo "deb http://deb.debian.org/debian bookworm-backports main" > /etc/apt/sources.list.d/backports.list
  apt-get update -qq && apt-get install -y -qq -t bookworm-backports qemu-user-static
fi
if [ ! -x "$work/root/usr/bin/python3.11" ]; then
  dpkg --add-architecture arm64 && apt-get update -qq
  (cd "$work/debs" && apt-get download python3.11-minimal:arm64 libpython3.11-minimal:arm64 \
    libpython3.11-stdlib:arm64 libc6:arm64 libstdc++6:arm64 libgcc-s1:arm64 zlib1g:arm64 libffi8:arm64 \
    libssl3:arm64 libexpat1:arm64 libbz2-1.0:arm64 liblzma5:arm64 libuuid1:arm64 libsqlite3-0:arm64 \
    libncursesw6:arm64 libtinfo6:arm64 libcrypt1:arm64)
  for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$work/root"; done
fi
# The runtime's own pins, as aarch64 wheels
$python -m pip install -q --target "$work/site" --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 \
  --python-version 3.11 --implementation cp --only-binary=:all: \
  "onnxruntime>=1.20,<1.32" tokenizers numpy pydantic pydantic-settings

[ -f "$work/fp32/bi/manifest.json" ] || $python -m twostage.cli export --quantize none --models-dir "$work/fp32"
$python -m benchmarks.cpu_parity save --models "$work/fp32" --out "$work/fp32-x86_64.npz"
$python -m benchmarks.cpu_parity save --models "$models" --out "$work/int8-x86_64.npz"
for cpu in neoverse-n1 neoverse-v1; do
  # onnxruntime's cpuinfo parses /proc/cpuinfo, which qemu-user leaves the host's: show it an arm64 one
  features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
  [ "$cpu" = neoverse-v1 ] && features="$features sve i8mm bf16 svei8mm"
  printf 'processor\t: 0\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\n\n' "$features" > "$work/cpuinfo"
  unshare -m sh -c "mount --bind $work/cpuinfo /proc/cpuinfo && PYTHONPATH=$PWD:$work/site \
    qemu-aarch64-static -cpu $cpu -L $work/root $work/root/usr/bin/python3.11 \
    -m benchmarks.cpu_parity save --models $models --out $work/int8-arm64-$cpu-qemu.npz"
done
$python -m benchmarks.cpu_parity compare "$work/fp32-x86_64.npz" "$work/int8-x86_64.npz" \
  "$work/int8-arm64-neoverse-n1-qemu.npz" "$work/int8-arm64-neoverse-v1-qemu.npz"
