#!/usr/bin/env bash
# Reproduce docs/course.md: every claim's sweeps (3 seeds each, Ray on this machine),
# `stride compare` figures in docs/img/course-*.png, and the claim tables and
# summary.json in docs/_course/. The plan (configs, grids, overrides) is in
# stride/commands/course.py. Usage: bash configs/course/run.sh [RUNS_DIR] [--only NAME]...
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-runs/course}
shift || true
STRIDE=${STRIDE:-.venv/bin/stride}
exec "$STRIDE" course --runs "$RUNS" "$@"
