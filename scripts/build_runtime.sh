#!/bin/sh
# The Lambda image's runtime tree: this project's runtime dependencies only (no torch, no extras)
# installed into DIR, then pruned by slim_runtime.sh. The Dockerfile builds /asset with it, and
# benchmarks/cold_start.py --site DIR measures the same tree here. Usage: scripts/build_runtime.sh DIR
# (PIP defaults to `python3 -m pip`; CFLAGS picks hnswlib's target, portable x86-64-v2 unless set;
# EXTRAS=qdrant adds qdrant-client for the image that serves stage 1 from a Qdrant cluster.)
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
export HNSWLIB_NO_NATIVE=1 CFLAGS="${CFLAGS:--O3 -march=x86-64-v2}"
${PIP:-python3 -m pip} install --target "$1" "$here${EXTRAS:+[$EXTRAS]}"
sh "$here/scripts/slim_runtime.sh" "$1"
