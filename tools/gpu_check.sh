#!/usr/bin/env bash
# Prepared GPU check (a few minutes): train_cam and train_deeplab for a fixed number of steps at fp32
# and at the automatic precision, make_cams (fp32, auto) and make_pseudo_masks on a small synthetic set, printing
# images/s and peak GPU memory per check. See tools/gpu_check.py.
#   bash tools/gpu_check.sh [--steps 30] [--images 64] [--work-dir DIR]
# Exit status: 0 every check passed, 1 a check failed, 3 no CUDA GPU (nothing was run).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" tools/gpu_check.py "$@"
