#!/usr/bin/env bash
# GPU check: training, evaluation and the app's sampling path on a CUDA machine, in one short run.
#
#   bash bench/gpu_check.sh            # about 5 minutes; prints figures, writes $OUT/*.json if OUT is set
#
# Uses $PYTHON, else .venv/bin/python, else python3; that interpreter needs the packages of
# requirements.txt with a CUDA build of torch (Streamlit is not needed: the app's sampling path
# is driven through `hyperrep sample --compare`, which runs the same hyperrep.pipeline.experiment calls as
# the Sample page). HYPERREP_DATA may point at a Fashion-MNIST IDX folder with at least 2,000
# training images. Nothing is downloaded.
#
# Exits non-zero as soon as a step fails (the step is named on stderr), including when torch sees
# no CUDA device and when the zoo-training bench misses a CUDA goal (its --check); exits 0 only
# when every step passed. The benches also --record their figures, to
# $HYPERREP_BENCH_RESULTS (default $OUT/bench-results, so they come back with $OUT; copy them into
# docs/bench-results/ to commit them).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
OUT_DIR="${OUT:-/tmp/gpu_check}"; mkdir -p "$OUT_DIR"
export HYPERREP_DEVICE="${HYPERREP_DEVICE:-cuda}" PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HYPERREP_BENCH_RESULTS="${HYPERREP_BENCH_RESULTS:-$OUT_DIR/bench-results}"
section() { echo; echo "== $1 ($(date -u +%H:%M:%S) UTC)"; }
# step NAME COMMAND...: run COMMAND; on failure name the step and exit with its status
step() {
  local name=$1 rc=0; shift
  "$@" || rc=$?
  [ "$rc" -eq 0 ] || { echo "gpu_check: FAILED (exit $rc): $name" >&2; exit "$rc"; }
}

section machine
step "torch sees a CUDA device" "$PYTHON" -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available()); sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch: this check needs a GPU')"
step "nvidia-smi" nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

section "tests on CUDA: population training, evaluation, sampling, guided sampler, autoencoder training, frontier"
step "tests on CUDA" timeout 200 "$PYTHON" -m pytest -q -p no:cacheprovider -m "not browser and not slow" \
  tests/test_population_training.py tests/test_evaluate.py tests/test_sampling.py tests/test_guided.py \
  tests/test_model.py tests/test_train.py tests/test_frontier.py

section "zoo training: stacked population trainer vs the plain per-model loop (goal on CUDA: >= 50x at batch 10)"
step "bench/gpu_conv_paths.py" timeout 40 "$PYTHON" bench/gpu_conv_paths.py --record
step "bench/zoo_train.py" timeout 200 "$PYTHON" bench/zoo_train.py --models 1000 --loop-models 2 --images 2000 --repeats 1 \
  --check --record

section "population evaluation: 100 and 1000 models x 10,000 test images"
step "bench/eval_throughput.py, 100 models" timeout 60 "$PYTHON" bench/eval_throughput.py --models 100 --images 10000 \
  --repeats 3 --json "$OUT_DIR/eval_gpu_100.json" --record
step "bench/eval_throughput.py, 1000 models" timeout 60 "$PYTHON" bench/eval_throughput.py --models 1000 --images 10000 \
  --repeats 2 --json "$OUT_DIR/eval_gpu_1000.json" --record

section "the app's sampling path: 100 samples decoded, evaluated on 10,000 images and compared (hyperrep sample --compare)"
start=$(date +%s%N) rc=0
timeout 120 "$PYTHON" -m hyperrep.cli sample data/hyperrep "$OUT_DIR/app_path_kde" --method kde -n 100 --seed 0 --compare \
  > "$OUT_DIR/app_path_kde.log" 2>&1 || rc=$?
tr "\r" "\n" < "$OUT_DIR/app_path_kde.log" | sed '/\/s\]/d' | tail -25  # without the progress bars
[ "$rc" -eq 0 ] || { echo "gpu_check: FAILED (exit $rc): hyperrep sample --compare (log: $OUT_DIR/app_path_kde.log)" >&2; exit "$rc"; }
echo "sample --compare: $(( ($(date +%s%N) - start) / 1000000 )) ms wall (process start, model load and CUDA init included)"
section done
echo "gpu_check: every step passed"
