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
# Two pytest workers (pytest-xdist), one file each at a time so that module fixtures are built once, the longest
# files first (tests/conftest.py orders them), one thread each: on 2 cores this takes about 9 minutes against 12
# for one process with two threads (much of the suite waits on subprocesses and small tensors).
# NNQC_TEST_WORKERS=0 runs in one process.
workers="${NNQC_TEST_WORKERS:-2}"
export nnUNet_def_n_proc="${nnUNet_def_n_proc:-2}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# the whole suite unless the arguments name test files or folders (a node id names its file before "::")
targets=(tests)
for argument in "$@"; do
  if [ -e "${argument%%::*}" ]; then targets=(); fi
done
if [ "$workers" = 0 ]; then
  exec .venv/bin/python -m pytest -q "${targets[@]}" "$@"
fi
exec .venv/bin/python -m pytest -q -n "$workers" --dist loadfile --no-loadscope-reorder "${targets[@]}" "$@"
