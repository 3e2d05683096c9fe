#!/usr/bin/env bash
# The GPU check, in one run on a CUDA machine that has PyTorch but no Ray and no network.
#
#   bash ../shared/gpu-host/wheels.sh .whl     # here: Ray and its pure-Python needs (< 50 MB)
#   bash tools/gpu_check.sh [OUT]              # there, in the repository root
#
# It runs what a GPU user runs, each step under its own time limit, and keeps every log
# under OUT (default ./gpu-check): the `gpu` tests, `stride train --gpu` on Ray Train,
# a 5-optimizer x 2-seed `stride sweep --gpu` sharing the one GPU (fractional GPUs), the
# export of the GPU-trained run, and the training throughput bench on CUDA (Ray against
# the plain loop against a hand-written PyTorch loop). A step that fails does not stop the
# later ones; the exit status counts the failed steps.
set -uo pipefail
out=$(realpath -m "${1:-${OUT:-gpu-check}}")
mkdir -p "$out"
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$root
else
  export PYTHONPATH=$root
fi
export PYTHONUNBUFFERED=1
failed=0
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2 start
  shift 2
  case " ${STEPS:-$name} " in *" $name "*) ;; *) return 0 ;; esac
  start=$(date +%s)
  echo "=== $name (limit ${limit}s)"
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$out/$name.log"
  echo "=== $name: exit $rc in $(($(date +%s) - start))s"
  [ "$rc" -eq 0 ] || failed=$((failed + 1))
}
bin=$(mktemp -d)  # `stride` as a command (timeout runs commands, not shell functions)
printf '#!/bin/sh\nexec python3 -c "import sys; from stride.cli import main; sys.exit(main())" "$@"\n' \
  >"$bin/stride"
chmod +x "$bin/stride"
export PATH=$bin:$PATH

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 - <<'EOF'
import numpy, onnxruntime, ray, sklearn, torch
print(f"python torch {torch.__version__} cuda {torch.version.cuda} available {torch.cuda.is_available()}"
      f" bf16 {torch.cuda.is_available() and torch.cuda.is_bf16_supported()}; ray {ray.__version__};"
      f" onnxruntime {onnxruntime.__version__} {onnxruntime.get_available_providers()};"
      f" numpy {numpy.__version__}; scikit-learn {sklearn.__version__}")
EOF
runs=$(mktemp -d)/runs
step pytest-gpu 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/pipeline/test_gpu.py
step train-gpu 120 stride train --config configs/digits.yaml --gpu --runs "$runs" \
  --experiment gpu --name digits --quiet
step summary-gpu 10 cat "$runs/gpu/digits/summary.json"
step export-gpu 60 stride export "$runs/gpu/digits" --repository "$runs/../repo"
step sweep-gpu 150 stride sweep --config configs/digits.yaml --gpu --runs "$runs" \
  --experiment sweep --grid optimizer.name=sgd,momentum,adagrad,rmsprop,adam --seeds 2 \
  --set training.epochs=8 --set scaling.gpus_per_worker=0.2
step compare-sweep 60 stride compare --runs "$runs" --by optimizer.name sweep
step bench-training-gpu 180 python3 - <<EOF
import json, tempfile
from pathlib import Path
from bench.training import throughput
with tempfile.TemporaryDirectory() as tmp:
    figures = throughput(quick=False, gpu=True, store=Path(tmp))
print(json.dumps(figures, indent=1))
Path("$out/bench-training-gpu.json").write_text(json.dumps(figures, indent=1))
EOF
echo "failed steps: $failed"
exit "$failed"
