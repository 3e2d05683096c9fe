#!/usr/bin/env bash
# Reproduce docs/course.md: the course's sweeps, then the comparisons and figures.
# Runs on the local Ray instance, two runs at a time; 15-30 minutes on 2 busy CPU
# cores. Usage: bash configs/course/run.sh [RUNS_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-runs/course}
STRIDE=${STRIDE:-.venv/bin/stride}
sweep() { "$STRIDE" sweep --runs "$RUNS" --max-concurrent 2 "$@"; }

# 1. optimizers: 5 optimizers x seeds 1-3, 10 epochs, registered default learning rates
sweep --config configs/course/optimizers.yaml --experiment optimizers \
  --grid optimizer.name=sgd,momentum,adagrad,rmsprop,adam --seeds 3

# 2. activations in a 9-layer network without batch norm: 3 activations x seeds 1-2
sweep --config configs/course/activations.yaml --experiment activations \
  --grid model.activation.name=sigmoid,tanh,relu --seeds 2

# 3. batch norm x dropout: 2 files x 2 dropout rates x seeds 1-2, 20 epochs
sweep --config configs/course/regularisation.yaml --experiment regularisation \
  --grid model.head.dropout=0.0,0.5 --seeds 2
sweep --config configs/course/regularisation-bn.yaml --experiment regularisation \
  --grid model.head.dropout=0.0,0.5 --seeds 2

"$STRIDE" compare optimizers --runs "$RUNS" --by optimizer.name --target 0.95 \
  --plot docs/img/course-optimizers.png
"$STRIDE" compare activations --runs "$RUNS" --by model.activation.name \
  --rank-by final_val_accuracy --plot docs/img/course-activations.png
"$STRIDE" compare regularisation --runs "$RUNS" --by model.name,model.head.dropout \
  --rank-by test_accuracy --plot docs/img/course-regularisation.png
