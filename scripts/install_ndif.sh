#!/usr/bin/env bash
# Install NDIF's server (ndif==0.1.2) and a Debian redis-server so tests/test_remote.py can
# run the real NDIF API service on loopback. Idempotent: re-running changes nothing.
#
# ndif 0.1.2 declares Requires-Python >=3.12 but imports and runs on 3.11, so it is installed
# with --ignore-requires-python --no-deps; its import-time needs for the API service and the
# CPU worker are listed below, pinned, with torch/transformers/nnsight/numpy held where they are
# (a plain `pip install ndif[api,ray]` would pull ray and, on 3.12, a multi-GB CUDA torch).
set -euo pipefail

PY="${PYTHON:-python}"
PINS="$(mktemp)"
trap 'rm -f "$PINS"' EXIT

# Never changed by this script: the versions the harness is built and tested with.
"$PY" - >"$PINS" <<'PYEOF'
from importlib.metadata import version, PackageNotFoundError
for name in ("torch", "transformers", "nnsight", "numpy", "datasets", "tokenizers", "safetensors"):
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        pass
PYEOF
cat >>"$PINS" <<'PINEOF'
ndif==0.1.2
fastapi==0.165.0
starlette==1.10.0
opentelemetry-api==1.45.2
uvicorn==0.54.0
websockets==17.4
python-multipart==0.0.34
redis==8.1.0
PINEOF

# 1. redis-server (Debian package); the tests start their own instance on a random port.
if ! command -v redis-server >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server
fi

# 2. The API service's and the worker's import-time dependencies (skipped when present).
#    ndif.services.api.app: fastapi (+starlette), python-multipart (Form/File), redis (queue,
#    pub/sub), boto3 (object store provider, lazy client); uvicorn + websockets serve /subscribe.
#    Worker: zstandard (result compression), already an nnsight dependency.
#    Non-blocking submission: moto[server] (S3 stand-in) if it is not installed already.
"$PY" -m pip install -q -c "$PINS" \
    fastapi starlette opentelemetry-api uvicorn websockets python-multipart redis \
    boto3 zstandard
if ! "$PY" -c "import moto.server, flask, flask_cors" >/dev/null 2>&1; then
    "$PY" -m pip install -q -c "$PINS" "moto[server]"
fi

# 3. ndif itself, without its declared dependencies (ray, a second torch, ...).
if ! "$PY" -c "import importlib.metadata as m; assert m.version('ndif') == '0.1.2'" >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-deps --ignore-requires-python -c "$PINS" ndif==0.1.2
fi

# 4. Check: the API app imports (providers connect lazily, so no server needs to be up).
NDIF_REDIS_URL="redis://127.0.0.1:1" "$PY" -c "import ndif.services.api.app" \
    && echo "ndif 0.1.2 API service importable; redis-server: $(redis-server --version | cut -d' ' -f3)"
