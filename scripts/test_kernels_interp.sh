#!/usr/bin/env bash
# The decode kernels' logic on the CPU: Triton's interpreter (TRITON_INTERPRET=1) runs the kernels of
# tardis/kernels/decode.py, attention_triton.py, norm_triton.py, gemv_triton.py and greedy_triton.py on small
# shapes against the float64 reference (inline-PTX instructions have pure-Triton stand-ins there). Triton is the
# device image's version, installed into .cache/triton-<version> (not into .venv: the CPU torch does not use it).
# About 5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
TRITON_SPEC=triton==3.6.0
DIR=.cache/triton-${TRITON_SPEC#triton==}
if [ ! -f "$DIR/.complete" ]; then
  echo "setup: installing $TRITON_SPEC into $DIR (for its interpreter)"
  rm -rf "$DIR"
  .venv/bin/python -m pip install -q --target "$DIR" "$TRITON_SPEC"
  touch "$DIR/.complete"
fi
cd python-worker
TRITON_INTERPRET=1 PYTHONPATH="$PWD/../$DIR" ../.venv/bin/python -m pytest -p no:cacheprovider \
  tests/test_kernels.py tests/test_attention.py tests/test_norm.py tests/test_gemv.py tests/test_greedy.py tests/test_e2e_bench.py \
  -k "interpreter or kernel_launch_choices or refused"
# kernel 1 compiled offline for sm_90 (Triton's compiler, no GPU) and its loops read (bench/sass_mix.py); every
# decode-attention and GEMV launch compiled offline for sm_90; the FFN layer bench's pure parts (bench/ffn_bench.py
# imports the kernels)
PYTHONPATH="$PWD/../$DIR" ../.venv/bin/python -m pytest -p no:cacheprovider tests/test_sass_mix.py tests/test_ffn_bench.py
PYTHONPATH="$PWD/../$DIR" ../.venv/bin/python -m pytest -p no:cacheprovider tests/test_attention.py tests/test_gemv.py tests/test_norm.py \
  tests/test_greedy.py -k offline
