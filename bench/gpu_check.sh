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
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export HYPERREP_DEVICE="${HYPERREP_DEVICE:-cuda}" PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT_DIR="${OUT:-/tmp/gpu_check}"; mkdir -p "$OUT_DIR"
section() { echo; echo "== $1 ($(date -u +%H:%M:%S) UTC)"; }

section machine
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available()); sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch')" || exit 1

section "tests on CUDA: population training, evaluation, sampling, guided sampler, autoencoder training, frontier"
timeout 200 "$PYTHON" -m pytest -q -p no:cacheprovider -m "not browser and not slow" \
  tests/test_population_training.py tests/test_evaluate.py tests/test_sampling.py tests/test_guided.py \
  tests/test_model.py tests/test_train.py tests/test_frontier.py || echo "TESTS FAILED (rc $?)"

section "zoo training: stacked population trainer vs the plain per-model loop (issue 10: >= 50x on CUDA)"
timeout 40 "$PYTHON" bench/gpu_conv_paths.py
timeout 200 "$PYTHON" bench/zoo_train.py --models 1000 --loop-models 2 --images 2000 --repeats 1

section "population evaluation: 100 and 1000 models x 10,000 test images"
timeout 60 "$PYTHON" bench/eval_throughput.py --models 100 --images 10000 --repeats 3 --json "$OUT_DIR/eval_gpu_100.json"
timeout 60 "$PYTHON" bench/eval_throughput.py --models 1000 --images 10000 --repeats 2 --json "$OUT_DIR/eval_gpu_1000.json"

section "the app's sampling path: 100 samples decoded, evaluated on 10,000 images and compared (hyperrep sample --compare)"
start=$(date +%s%N)
timeout 120 "$PYTHON" -m hyperrep.cli sample data/hyperrep "$OUT_DIR/app_path_kde" --method kde -n 100 --seed 0 --compare 2>&1 | tr "\r" "\n" | grep -v "/s\]" | tail -25
echo "sample --compare: $(( ($(date +%s%N) - start) / 1000000 )) ms wall (process start, model load and CUDA init included)"
section done
