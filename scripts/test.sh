#!/usr/bin/env bash
# All checks: setup if needed, then lint + types (Python and TypeScript) and both test suites.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
echo "== ruff"; (cd python-worker && ruff check tardis tests && ruff format --check tardis tests)
echo "== mypy"; (cd python-worker && mypy tardis)
echo "== pytest"; (cd python-worker && python -m pytest -p no:cacheprovider)
echo "== npm run check (biome, tsc --noEmit, vitest)"; npm run check
