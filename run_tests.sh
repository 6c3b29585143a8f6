#!/usr/bin/env bash
# Runs nnQC's whole test suite in the project-local virtual environment (created if missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
scripts/ensure_venv.sh
export nnUNet_def_n_proc="${nnUNet_def_n_proc:-2}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
exec .venv/bin/python -m pytest -q tests "$@"
