#!/usr/bin/env bash
# Setup if needed, then fold the project's smallest trained model and compare it with the dense one
# and with Wanda (`tardis quickstart`: starts a worker, calibrates, evaluates, registers the variant).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node control-plane/bin/tardis.js quickstart "$@"
