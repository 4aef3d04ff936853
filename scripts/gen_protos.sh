#!/usr/bin/env bash
# Generate the Python gRPC code for protos/tardis/v1/*.proto into python-worker/tardis/worker/gen/.
# Idempotent: the folder is rebuilt from scratch each run. Generated code is never committed or edited;
# imports are rewritten to be package-relative so they do not collide with the `tardis` package.
#   usage: scripts/gen_protos.sh   (uses $PYTHON, else <repo>/.venv/bin/python, else python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
if ! "$PY" -c 'import grpc_tools' 2>/dev/null; then
  echo "gen_protos.sh: $PY has no grpc_tools; install grpcio-tools (pip install -e 'python-worker[dev]') or set PYTHON" >&2
  exit 1
fi
PROTOS="$ROOT/protos"
OUT="$ROOT/python-worker/tardis/worker/gen"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# protoc's own well-known types (google/protobuf/*.proto) ship inside grpc_tools.
WKT="$("$PY" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')"

"$PY" -m grpc_tools.protoc -I "$PROTOS" -I "$WKT" \
  --python_out="$TMP" --pyi_out="$TMP" --grpc_python_out="$TMP" \
  "$PROTOS"/tardis/v1/*.proto

rm -rf "$OUT"
mkdir -p "$OUT"
for f in "$TMP"/tardis/v1/*.py "$TMP"/tardis/v1/*.pyi; do
  # `from tardis.v1 import x_pb2` → `from . import x_pb2` (the generated files live side by side).
  sed -e 's/^from tardis\.v1 import /from . import /' "$f" > "$OUT/$(basename "$f")"
done
cat > "$OUT/__init__.py" <<'PY'
"""Generated from protos/tardis/v1 by scripts/gen_protos.sh; do not edit."""
PY
echo "generated $(ls "$OUT" | wc -l) files in ${OUT#"$ROOT"/}"
