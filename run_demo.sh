#!/usr/bin/env bash
# nnQC end to end on synthetic phantoms (CPU): convert, plan and preprocess, train, predict, evaluate, report.
# Sets up the project-local virtual environment (.venv) first if it is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
scripts/ensure_venv.sh
export PATH="$PWD/.venv/bin:$PATH" nnUNet_def_n_proc="${nnUNet_def_n_proc:-2}"
exec .venv/bin/python scripts/demo.py "$@"
