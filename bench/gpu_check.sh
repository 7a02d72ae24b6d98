#!/usr/bin/env bash
# GPU check: the test suite, population evaluation and zoo training benchmarks on a CUDA machine.
#
#   bash bench/gpu_check.sh            # a few minutes; prints figures, writes $OUT/eval_gpu.json if OUT is set
#
# Uses $PYTHON, else .venv/bin/python, else python3; that interpreter needs the packages of
# requirements.txt with a CUDA build of torch. Nothing is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export HYPERREP_DEVICE="${HYPERREP_DEVICE:-cuda}"

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch')"

echo "== tests (HYPERREP_DEVICE=$HYPERREP_DEVICE; browser tests skipped)"
timeout 420 "$PYTHON" -m pytest -q -x -m "not browser" -p no:cacheprovider tests/ || echo "TESTS FAILED (rc $?)"

echo "== population evaluation: 100 and 1000 models x 10,000 test images"
JSON_DIR="${OUT:-/tmp}"
timeout 150 "$PYTHON" bench/eval_throughput.py --models 100 --images 10000 --repeats 3 --json "$JSON_DIR/eval_gpu_100.json"
timeout 150 "$PYTHON" bench/eval_throughput.py --models 1000 --images 10000 --repeats 2 --json "$JSON_DIR/eval_gpu_1000.json"

echo "== zoo training: stacked population trainer vs the plain per-model loop (issue 10: >= 50x on CUDA)"
timeout 240 "$PYTHON" bench/zoo_train.py --models 1000 --loop-models 2 --images 2000 --repeats 1
