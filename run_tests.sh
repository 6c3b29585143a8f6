#!/usr/bin/env bash
# Runs nnQC's whole test suite in the project-local virtual environment (created if missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
scripts/ensure_venv.sh
# The HTML report is rendered in headless Chromium when it is installed; install Debian's where we can
# (the report test checks the page structurally otherwise).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[nnQC] installing chromium for the report rendering test"
  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) >/dev/null 2>&1 \
    || echo "[nnQC] could not install chromium; the report test will check the page structurally"
fi
export nnUNet_def_n_proc="${nnUNet_def_n_proc:-2}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
exec .venv/bin/python -m pytest -q tests "$@"
