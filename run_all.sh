#!/usr/bin/env bash
# Set up the environment (idempotently) and run a setting end to end, or the tests.
#   bash run_all.sh test [pytest args]
#   bash run_all.sh demo|demo-wsol|voc12|voc12-moana|cub|ilsvrc [--from STAGE] [--only STAGE] [--force STAGE]
#                  [--set key=value ...] [--run-dir DIR]
set -euo pipefail
cd "$(dirname "$0")"
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  # The stamp covers the pinned requirements, the package metadata and this checkout's path
  # (the editable install points at it), so any change reinstalls and nothing else does.
  local stamp="$VENV/.requirements.sha256" want
  want="$( (cat requirements.txt pyproject.toml; pwd) | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    echo "requirements already installed in $VENV"
  else
    echo "installing requirements.txt and this package (editable) into $VENV (first time: a few minutes)"
    "$VENV/bin/python" -m pip install --quiet -r requirements.txt
    "$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
    echo "$want" > "$stamp"
  fi
}

if [ $# -lt 1 ]; then
  sed -n '2,5p' "$0"
  exit 2
fi
setting="$1"; shift
setup
case "$setting" in
  test)
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  *)
    exec "$VENV/bin/python" pipelines/run_pipeline.py "$setting" "$@"
    ;;
esac
