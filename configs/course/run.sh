#!/usr/bin/env bash
# Reproduce docs/course.md: train every course run, then compare. About 15-25
# minutes on 2 CPU cores. Usage: bash configs/course/run.sh [RUNS_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-runs/course}
STRIDE=${STRIDE:-.venv/bin/stride}
train() { "$STRIDE" train --quiet --runs "$RUNS" "$@"; }

# 1. optimizers: 5 optimizers x 3 seeds, 10 epochs each
for opt in sgd momentum adagrad rmsprop adam; do
  for seed in 1 2 3; do
    train --config configs/course/optimizers.yaml --experiment course-optimizers \
      --name "$opt-s$seed" --set optimizer.name=$opt --set seed=$seed
  done
done

# 2. activations in a 9-layer network without batch norm: 3 activations x 2 seeds
for act in sigmoid tanh relu; do
  for seed in 1 2; do
    train --config configs/course/activations.yaml --experiment course-activations \
      --name "$act-s$seed" --set model.activation.name=$act --set seed=$seed
  done
done

# 3. batch norm and dropout: 4 variants x 2 seeds
for seed in 1 2; do
  train --config configs/course/regularisation.yaml --experiment course-regularisation \
    --name "plain-s$seed" --set seed=$seed
  train --config configs/course/regularisation.yaml --experiment course-regularisation \
    --name "dropout-s$seed" --set seed=$seed --set model.name=dropout --set model.head.dropout=0.5
  train --config configs/course/regularisation-bn.yaml --experiment course-regularisation \
    --name "batchnorm-s$seed" --set seed=$seed
  train --config configs/course/regularisation-bn.yaml --experiment course-regularisation \
    --name "bn-dropout-s$seed" --set seed=$seed --set model.name=bn-dropout \
    --set model.head.dropout=0.5
done

"$STRIDE" compare course-optimizers --runs "$RUNS" --by optimizer.name --target 0.95 \
  --plot docs/img/course-optimizers.png
"$STRIDE" compare course-activations --runs "$RUNS" --by model.activation.name \
  --rank-by final_val_accuracy --plot docs/img/course-activations.png
"$STRIDE" compare course-regularisation --runs "$RUNS" --by model.name \
  --rank-by test_accuracy --plot docs/img/course-regularisation.png
