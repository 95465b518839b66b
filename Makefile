# README's two commands: `make demo` (offline, embedded defaults) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DEMO_QUERY ?= How much Veltrazine should a 7-year-old child take?

# hnswlib has no wheel; without this it compiles with -march=native (not portable).
export HNSWLIB_NO_NATIVE := 1
# Offline by default: the packaged MiniLM and sample corpus need no hub.
export HF_HUB_OFFLINE ?= 1

.PHONY: install artifacts demo test lint clean bench-deps bench-isa

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[build,server,dev,qdrant,distributed]"
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

artifacts/models/bi/manifest.json: $(STAMP)
	$(BIN)/twostage export

artifacts/index/manifest.json: artifacts/models/bi/manifest.json sample_data/corpus.jsonl
	$(BIN)/twostage index

artifacts: artifacts/index/manifest.json

demo: artifacts
	$(BIN)/twostage query "$(DEMO_QUERY)"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/pytest

# rerank-peers compares against fastembed and FlashRank: the [bench] extra
bench-deps: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[bench]"

# Issue 18's per-CPU figures, on whatever CPU this is (each prints it first; compare runs between hosts:
# docs/results.md §15). The eval index of SciFact must exist (`twostage eval` builds it).
bench-isa: artifacts bench-deps
	$(BIN)/twostage bench int8-variants --json artifacts/reports/int8-variants-$$($(BIN)/python -c "from handler.cpu import this_cpu; print(this_cpu().int8)").json
	$(BIN)/twostage bench rerank-peers --threads 2
	$(BIN)/twostage bench rerank-batch
	$(BIN)/twostage bench int8-ceiling
	$(BIN)/twostage bench skip-layer-norm
	$(BIN)/twostage bench deadline --queries 30 --deadline-ms 500
	$(BIN)/twostage bench search-latency

# The same on the MLAS kernels an older x86 CPU runs, from a newer host (docs/results.md §15):
# `make bench-cap-avx2` (AVX2-only, from any AVX-512 or AVX-VNNI host), `make bench-cap-avx512_vnni`
# (AVX-512 VNNI without AMX, from an AMX host)
bench-cap-%: artifacts bench-deps
	$(BIN)/twostage bench kernel-cap $* int8-variants --json artifacts/reports/int8-variants-$*-cap.json
	$(BIN)/twostage bench kernel-cap $* rerank-peers --threads 2
	$(BIN)/twostage bench kernel-cap $* rerank-batch
	$(BIN)/twostage bench kernel-cap $* int8-ceiling
	$(BIN)/twostage bench kernel-cap $* skip-layer-norm
	$(BIN)/twostage bench kernel-cap $* deadline --queries 30 --deadline-ms 500

clean:
	rm -rf artifacts
