#!/usr/bin/env bash
# Setup if needed, then fold the project's smallest trained model and compare it with the dense one.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m tardis.quickstart "$@"
