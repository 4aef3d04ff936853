#!/usr/bin/env bash
# One device call: GPU checks, then timings; writes JSON and logs under $OUT, prints short tables last.
#
#   bash bench/device_run.sh kernels   # plane sweep + fused up/down at B = 1, 2, 4 and the whole-layer
#                                      # table there (--plane-best), GPU kernel tests, the bytes-only
#                                      # predictor probe (bench/pred_probe.py), ncu of kernels 1-3 (kernel 1
#                                      # with SourceCounters: where the warps stall, by source line; and
#                                      # its SASS source page as CSV: the stall samples per instruction);
#                                      # SWEEP_S, SWEEP_BATCHES, GPU_TESTS_S, PROBE_S (0: skip) trim the stages
#   bash bench/device_run.sh e2e [E2E ARGS]   # HF end to end (bench/e2e_hf.py; E2E_TESTS_S > 0: the step's GPU
#       tests first, that many seconds), e.g.
#       --kernel-launch ../bench/results/<ffn json>   the launch an ffn_bench --plane-best run chose
#       (../.cache/device/ffn_sweep.json: the last kernels/quick/sweep call's, while the machine stays warm)
#       --policy-from ../bench/results/<ffn json>     per-layer decode limits from that run's break-even
#       (paths are relative to python-worker/, where it runs)
#       --compile-batches 1   batch 1 also with torch.compile'd steps, after the CUDA-graph rows and with
#       the same calibration (dense, zero-FFN and TARDIS each compile once per batch)
#       --coverage 0.9 --band-tolerance 0   the first e2e run's calibration (the defaults are now
#       coverage 0.85 with the flag band 2: ≈ 5% fallback instead of ≈ 20% on this model, CPU estimate)
#   bash bench/device_run.sh quick [E2E ARGS]   # when one call is all there is: the plane sweep at B = 1
#       (+ whole layer), GPU kernel tests (45 s), then the e2e bench with the launch that sweep chose (and the
#       kernels of 16 batch-1 decode steps: --profile-kernels);
#       GPU_TESTS_S=0 skips the tests, SWEEP_S (150) limits the sweep, CALL_LIMIT_S (570) is when the e2e
#       bench must have stopped
#   bash bench/device_run.sh sweep     # when little device time is left: the plane sweep at B = 1 and the
#       whole-layer table only (SWEEP_S, 150), then GPU_TESTS_S seconds of GPU tests (default 0: none)
#   bash bench/device_run.sh timeline  # each kernel's start and end within a layer (batch 1; about a minute)
#   bash bench/device_run.sh ab        # an interleaved A/B of a few launches (batch 1, 5% and 10%; ffn_bench --ab:
#                                      # AB_VARIANTS, the first the reference; AB_S limits it, 200), then the layer table
#   bash bench/device_run.sh step [E2E ARGS]   # the decode step around the FFN: the GPU tests of the attention,
#       rotary / cache-write and norm kernels and of the e2e bench (STEP_TESTS_S, 90), then a batch-1 e2e run without
#       the small models (STEP_E2E_S, 240; its attention line gives each mode's zero-FFN step, its branch-streams line
#       the batch-1 step with one and two streams); E2E ARGS go to e2e_hf.py, and
#       TARDIS_CORPUS_DIR must name the carried corpus as for e2e
#   bash bench/device_run.sh shapes    # Falcon-7B, BLOOM-7B1 and Falcon-40B whole-layer tables (batch 1..64)
#   bash bench/device_run.sh all       # kernels and e2e with the defaults (may not fit one 10-minute call)
#
# REQUIRE_GPU (e.g. H200): any stage runs only on a card whose name contains it, else exits 3 at once.
# Needs: the device image (PyTorch, Triton, transformers), no install of this project; for e2e the
# Lee corpus as a carried zip (TARDIS_CORPUS_DIR, see bench/README.md). Each stage has its own time
# limit so a slow one cannot eat the others' results.
set -uo pipefail
cd "$(dirname "$0")/../python-worker"
export PYTHONPATH="$PWD"
OUT="${OUT:-/tmp/tardis-device}"
mkdir -p "$OUT"
stage="${1:-kernels}"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem --format=csv,noheader | tee "$OUT/gpu.txt"
# REQUIRE_GPU=H200: run nothing (exit 3) unless the card's name contains it, so a call that came on another card
# costs seconds, not the stage's minutes
if [ -n "${REQUIRE_GPU:-}" ] && ! grep -q -- "$REQUIRE_GPU" "$OUT/gpu.txt"; then
  echo "the card is not an $REQUIRE_GPU (REQUIRE_GPU): nothing run"
  exit 3
fi

sweep() {  # LIMIT_S BATCHES: kernel-1 and up/down launch sweeps (Falcon-7B, 5%), then the whole-layer table
  # with the fastest launches; --rate-from: the band's fallback rate on the e2e model (CPU calibration estimate);
  # SWEEP_SHAPE: another shape of ffn_bench's (bloom7b1, falcon40b) swept instead of Falcon-7B
  timeout "$1" python ../bench/ffn_bench.py --shapes "${SWEEP_SHAPE:-falcon7b}" --batches "$2" --kernel-times \
    --kernel-sets plane --plane-best --updown-sweep --out "$OUT/ffn_sweep.json" \
    --rate-from ../bench/results/e2e_calibration_only_2026-12-05_cpu_cov85_band2.json --timeline ${SWEEP_EXTRA:-} \
    >"$OUT/ffn_sweep.txt" 2>&1
  echo "ffn bench rc $?"
  # kept on the machine (an ignored path survives while it stays warm) for a following e2e call
  mkdir -p ../.cache/device && cp -f "$OUT/ffn_sweep.json" ../.cache/device/ 2>/dev/null
}
gpu_tests() {  # LIMIT_S [NAME]: the GPU kernel tests of the plane paths (GPU_TESTS_K: another pytest -k selection,
  # e.g. "folded_rows or configurations" for v11's new paths first; GPU_TESTS_FILES: other test files, e.g.
  # tests/test_attention.py with GPU_TESTS_K=gpu for the decode attention's kernels; GPU_TESTS_X: pytest's stop at
  # the first failure, -x, or "" to run them all); output in $OUT/NAME.txt
  local name="${2:-gpu_tests}"
  timeout "$1" python -m pytest ${GPU_TESTS_FILES:-tests/test_kernels.py} -p no:cacheprovider -rfE ${GPU_TESTS_X--x} \
    -k "${GPU_TESTS_K:-pdl or pipelined or int8_x or fused or fp32_layers or configurations or (match_float64_reference_on_gpu and plane)}" \
    >"$OUT/$name.txt" 2>&1
  local rc=$?
  echo "$name rc $rc: $(grep -E "passed|failed|error" "$OUT/$name.txt" | tail -1)"
  return $rc
}

if [ "$stage" = kernels ] || [ "$stage" = all ]; then
  # the sweep first (its JSON is written after every row, so a time limit keeps what ran)
  # SWEEP_S / SWEEP_BATCHES / GPU_TESTS_S / PROBE_S (0: skip) trim the stages to fit one call
  sweep "${SWEEP_S:-280}" "${SWEEP_BATCHES:-1,2,4}"
  gpu_tests "${GPU_TESTS_S:-100}"
  # the predictor words read bytes-only in kernel 1's order: memory-bound or instruction-bound?
  if [ "${PROBE_S:-60}" -gt 0 ]; then
    timeout "${PROBE_S:-60}" python ../bench/pred_probe.py --out "$OUT/pred_probe.json" >"$OUT/pred_probe.txt" 2>&1
    echo "pred probe rc $?"
  fi
  if command -v ncu >/dev/null; then
    timeout 90 ncu --clock-control none -k regex:_stacked_plane_kernel --launch-skip 1 --launch-count 5 \
      --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
      --section SchedulerStats --section ComputeWorkloadAnalysis --section Occupancy \
      --section SourceCounters --import-source yes \
      python ../bench/ncu_pred.py >"$OUT/ncu_pred.txt" 2>&1
    echo "ncu rc $?"
    # the stall samples per SASS instruction of the pipelined int8-x predictor-only launch (I8, PS 4: v9's;
    # the source page as CSV; the report itself is kept too)
    timeout 60 ncu --clock-control none -k regex:_stacked_plane_kernel --launch-skip 3 --launch-count 1 \
      --section SourceCounters --section WarpStateStats --import-source yes -f -o "$OUT/ncu_pred_src" \
      python ../bench/ncu_pred.py >"$OUT/ncu_pred_src.log" 2>&1 \
      && ncu --import "$OUT/ncu_pred_src.ncu-rep" --page source --csv --print-source sass >"$OUT/ncu_pred_sass.csv" 2>&1
    echo "ncu source page rc $?"
    timeout 50 ncu --clock-control none -k "regex:_up_(small_)?kernel|_down_(small_)?kernel|_updown_kernel" --launch-count 3 \
      --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
      python ../bench/ncu_pred.py updown >"$OUT/ncu_updown.txt" 2>&1
    echo "ncu updown rc $?"
  fi
fi

if [ "$stage" = sweep ]; then
  # when little device time is left: issue 4's batch-1 numbers (the sweep, the A/Bs and the whole layer) and,
  # with GPU_TESTS_S > 0, the GPU tests; no probe, ncu or e2e
  sweep "${SWEEP_S:-150}" 1
  [ "${GPU_TESTS_S:-0}" -gt 0 ] && gpu_tests "${GPU_TESTS_S:-0}"
fi

if [ "$stage" = quick ]; then
  # PRE_TESTS_K: a pytest -k selection of tests/test_kernels.py run first (PRE_TESTS_S, 60); if they fail or hang,
  # the sweep leaves UP_SPIN out of its PDL A/B (its new polls are what such a first run checks)
  if [ -n "${PRE_TESTS_K:-}" ]; then
    GPU_TESTS_K="$PRE_TESTS_K" GPU_TESTS_FILES=tests/test_kernels.py gpu_tests "${PRE_TESTS_S:-60}" pre_tests \
      || SWEEP_EXTRA="--no-up-spin"
  fi
  sweep "${SWEEP_S:-150}" 1
  [ "${GPU_TESTS_S:-45}" -gt 0 ] && gpu_tests "${GPU_TESTS_S:-45}"
  launch=()  # the sweep's launch choice, if it got as far as writing one
  python -c "import json,sys; sys.exit(0 if json.load(open(sys.argv[1])).get('plane_launch') else 1)" \
    "$OUT/ffn_sweep.json" 2>/dev/null && launch=(--kernel-launch "$OUT/ffn_sweep.json")
  timeout $((${CALL_LIMIT_S:-570} - SECONDS)) python ../bench/e2e_hf.py "${launch[@]}" --profile-kernels "${@:2}" \
    --out "$OUT/e2e_hf.json" >"$OUT/e2e_hf.txt" 2>&1
  echo "e2e rc $?"
fi

if [ "$stage" = timeline ]; then
  # when each kernel of a layer starts and ends (batch 1, 5% and 10%; the committed launch, PDL off, the one-step
  # up items and the W2ᵀ prefetch: ffn_bench's TIMELINE_VARIANTS), then the batch-1 whole-layer rows; SWEEP_SHAPE as
  # for the sweep
  timeout "${TIMELINE_S:-240}" python ../bench/ffn_bench.py --shapes "${SWEEP_SHAPE:-falcon7b}" --batches 1 \
    --rates 0.05,0.1 --timeline ${TIMELINE_EXTRA:---tail-trace} --out "$OUT/ffn_timeline.json" >"$OUT/ffn_timeline.txt" 2>&1
  echo "ffn timeline rc $?"
  tail -n 30 "$OUT/ffn_timeline.txt"
fi

if [ "$stage" = ab ]; then
  timeout "${AB_S:-200}" python ../bench/ffn_bench.py --shapes "${SWEEP_SHAPE:-falcon7b}" --batches 1 --rates 0.05,0.1 \
    --ab "${AB_VARIANTS:-committed,tickets,down_finish_wf34,down_finish_up_one_step}" --out "$OUT/ffn_ab.json" \
    >"$OUT/ffn_ab.txt" 2>&1
  echo "ffn ab rc $?"
  grep -E "^  ab |^falcon|^bloom" "$OUT/ffn_ab.txt"
fi

step_tests() {  # LIMIT_S: the GPU tests of the attention, rotary / cache-write, norm, GEMV and greedy kernels and the e2e bench
  GPU_TESTS_FILES="tests/test_attention.py tests/test_norm.py tests/test_gemv.py tests/test_greedy.py tests/test_e2e_bench.py" \
    GPU_TESTS_K=gpu GPU_TESTS_X="" \
    gpu_tests "$1" step_tests
}

if [ "$stage" = step ]; then
  step_tests "${STEP_TESTS_S:-90}"
  timeout "${STEP_E2E_S:-240}" python ../bench/e2e_hf.py --batches 1 --skip-small-models --profile-kernels "${@:2}" \
    --out "$OUT/e2e_hf.json" >"$OUT/e2e_hf.txt" 2>&1
  echo "e2e rc $?"
  grep -E "^attention:|^attention kernel:|^branch streams:" "$OUT/e2e_hf.txt" | cut -c1-1500
fi

if [ "$stage" = shapes ]; then
  # issue 4's three shapes, every batch (1..64) and rate, with the committed launch: the per-batch policy's
  # rows (pol/d) at every batch; each shape also at the e2e model's rate (its CPU calibration estimate, 5.42%);
  # SHAPES_S (540) limits it, and the JSON is written after every row
  timeout "${SHAPES_S:-540}" python ../bench/ffn_bench.py --shapes falcon7b,bloom7b1,falcon40b \
    --rate-from ../bench/results/e2e_calibration_only_2026-12-05_cpu_cov85_band2.json \
    --out "$OUT/ffn_shapes.json" >"$OUT/ffn_shapes.txt" 2>&1
  echo "ffn shapes rc $?"
  tail -n 80 "$OUT/ffn_shapes.txt"
fi

if [ "$stage" = e2e ] || [ "$stage" = all ]; then
  # E2E_TESTS_S > 0: the step's GPU tests first (as for step), and the e2e bench stops by CALL_LIMIT_S (580)
  [ "${E2E_TESTS_S:-0}" -gt 0 ] && step_tests "$E2E_TESTS_S"
  timeout $((${CALL_LIMIT_S:-580} - SECONDS)) python ../bench/e2e_hf.py "${@:2}" --out "$OUT/e2e_hf.json" >"$OUT/e2e_hf.txt" 2>&1
  echo "e2e rc $?"
fi

# the short tables, last
for f in "$OUT/ncu_pred.txt" "$OUT/ncu_updown.txt"; do
  [ -f "$f" ] && grep -E "^\s+(Duration|DRAM Throughput|Compute \(SM\) Throughput|Executed Ipc Active|Issue Slots Busy|Achieved Occupancy)" "$f" | head -36
done
[ -f "$OUT/ffn_sweep.txt" ] && grep -E "plane k1 sweep|up/down sweep|^kernels|^PDL|^folded rows|flags differ" "$OUT/ffn_sweep.txt" | cut -c1-400 && tail -18 "$OUT/ffn_sweep.txt"
[ -f "$OUT/pred_probe.txt" ] && tail -20 "$OUT/pred_probe.txt"
[ -f "$OUT/ffn_shapes.txt" ] && tail -30 "$OUT/ffn_shapes.txt"
[ -f "$OUT/e2e_hf.txt" ] && grep -E "^attention:|^attention kernel:|^branch streams:| kernels: " "$OUT/e2e_hf.txt" | cut -c1-400
[ -f "$OUT/e2e_hf.txt" ] && tail -12 "$OUT/e2e_hf.txt"
exit 0
