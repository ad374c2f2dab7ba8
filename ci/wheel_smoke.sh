#!/usr/bin/env bash
# The packaged optix: `python -m build` makes the sdist, then the wheel from the sdist (in an
# isolated build environment, as a user's pip does); the wheel goes into a fresh venv with its
# declared dependencies (pip's cache holds them after CI's first install), and a fused step runs
# there, outside the checkout (ci/wheel_smoke.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.venv/bin/python -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
ls "$work"/dist/*.tar.gz "$work"/dist/*.whl
.venv/bin/python -c 'import sys, zipfile
sys.exit(not any("_fused_kernels" in n for n in zipfile.ZipFile(sys.argv[1]).namelist()))' \
  "$work"/dist/*.whl || { echo "the wheel has no kernels"; exit 1; }
$PYTHON -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet "$work"/dist/*.whl
cp ci/wheel_smoke.py "$work/"
(cd "$work" && "$work/venv/bin/python" wheel_smoke.py)
