#!/usr/bin/env bash
# Train and ship the project's three small decoder LMs (models/tardis-tiny-{gpt2,neox,opt}).
#
#   bash bench/train_models.sh prepare   # here: build .corpus/ (text, tokenizer, token ids)
#   bash bench/train_models.sh           # on one H200, with .corpus/ carried: train all three
#
# `prepare` needs apt (Debian bible-kjv, bible-kjv-text) and PyPI (the gensim wheel, downloaded,
# never installed) plus ../shared/data (WikiText-2, Tiny Shakespeare). .corpus/ is third-party text:
# keep it out of git (it is listed in .git/info/exclude). Training writes one tar per model
# directory and the JSON log train_log.json into $OUT (the device tool's output folder).
# Knobs: BUDGET (training seconds per model), EXTRA (more tardis.train.lm flags, for smoke runs).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=python-worker${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY=${PY:-python3}

if [ "${1:-}" = prepare ]; then
  set -e
  DATA=${DATA:-../shared/data}
  apt-get install -y bible-kjv bible-kjv-text >/dev/null
  "$PY" -m pip download -q --no-deps gensim==4.4.0 -d /tmp/gensim
  "$PY" -m tardis.train.corpus --data "$DATA" --gensim-wheel /tmp/gensim/gensim-4.4.0-*.whl --out .corpus
  "$PY" -m tardis.train.tokenizer --corpus .corpus
  exit 0
fi

OUT=${OUT:-$PWD/out}
BUDGET=${BUDGET:-70}
mkdir -p "$OUT"
work=$(mktemp -d)
"$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__,
  torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")'
status=0
for arch in gpt2 neox opt; do
  name=tardis-tiny-$arch
  # shellcheck disable=SC2086  # EXTRA is a list of flags
  # run the file, not `-m tardis.train.lm`: it needs only torch and transformers, not the rest of tardis
  if "$PY" python-worker/tardis/train/lm.py --arch "$arch" --corpus .corpus --time-budget "$BUDGET" \
      --out "$work/$name" --log "$OUT/train_log.json" ${EXTRA:-}; then
    tar -C "$work" -cf "$OUT/$name.tar" "$name"
  else
    echo "FAILED: $name" >&2
    status=1
  fi
done
exit $status
