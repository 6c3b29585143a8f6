#!/usr/bin/env bash
# Creates the project-local virtual environment (.venv) if missing and installs nnQC into it.
# Re-running is cheap: the install is skipped while setup.py and the constraints are unchanged.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  echo "[nnQC] creating virtual environment in $venv"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
fi
stamp="$venv/.nnqc_install_stamp"
want="$(cat "$root/setup.py" "$root/scripts/constraints.txt" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[nnQC] installing torch (CPU build) and nnQC with its dependencies"
  # torch first and pinned: a looser spec would pull a multi-GB CUDA build; the constraint file
  # keeps nnunetv2's dependencies from replacing it.
  "$venv/bin/python" -m pip install --quiet -c "$root/scripts/constraints.txt" torch
  "$venv/bin/python" -m pip install --quiet -c "$root/scripts/constraints.txt" -e "$root[test]"
  echo "$want" > "$stamp"
fi
