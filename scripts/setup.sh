#!/usr/bin/env bash
# Idempotent setup: project-local virtualenv, PyTorch, the worker package (editable, pinned deps),
# the public text corpus the quickstart calibrates on, and the Node dependencies (npm ci).
# GPU hosts: set TARDIS_TORCH_SPEC (e.g. "torch==2.11.0" from the CUDA index) before running.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
TORCH_SPEC=${TARDIS_TORCH_SPEC:-torch==2.13.0}
GENSIM_SPEC=gensim==4.4.0   # its wheel carries public English text (Lee news corpus, a Wikipedia excerpt)

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
VPY=$ROOT/.venv/bin/python
stamp=.venv/.tardis-setup
want="$(sha256sum python-worker/pyproject.toml | cut -c1-16) $TORCH_SPEC"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  "$VPY" -m pip install -q --upgrade pip
  "$VPY" -c "import torch" 2>/dev/null || "$VPY" -m pip install -q "$TORCH_SPEC"
  "$VPY" -m pip install -q -e "python-worker[dev]"
  echo "$want" > "$stamp"
fi

# Python code generated from protos/ (never committed, never edited by hand).
if [ -f scripts/gen_protos.sh ]; then
  PATH="$ROOT/.venv/bin:$PATH" bash scripts/gen_protos.sh
fi

mkdir -p .cache/corpora
if ! ls .cache/corpora/gensim-*.whl >/dev/null 2>&1; then
  echo "setup: fetching the gensim wheel for its bundled English text (not installed)"
  "$VPY" -m pip download -q --no-deps --only-binary=:all: "$GENSIM_SPEC" -d .cache/corpora
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi
