#!/usr/bin/env bash
# All checks: setup if needed, then lint + types (Python and TypeScript) and both test suites.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
echo "== ruff"; (cd python-worker && ruff check tardis tests && ruff format --check tardis tests)
echo "== mypy"; (cd python-worker && mypy tardis)
echo "== pytest"; (cd python-worker && python -m pytest -p no:cacheprovider)
echo "== Triton interpreter (decode kernels on the CPU)"; bash scripts/test_kernels_interp.sh
echo "== npm run check (biome, tsc --noEmit, vitest)"; npm run check
# The vLLM plugin against a real vLLM CPU engine, in its own virtualenv (.venv-vllm: vLLM's CPU
# build needs its own dependency set; about 4 minutes to install, 5 to run). TARDIS_SKIP_VLLM=1 skips it.
if [ "${TARDIS_SKIP_VLLM:-0}" != "1" ]; then
  echo "== vLLM plugin (scripts/test_vllm.sh)"; bash scripts/test_vllm.sh
fi
