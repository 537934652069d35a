#!/usr/bin/env bash
# GPU check for classifier/ml: the tests marked `gpu` and the inference benchmark on CUDA.
# Needs only the repository and its virtual environment (PYTHON=... to use another interpreter),
# on a machine where torch sees a CUDA device. Real images: PBC_DEV=<folder of class folders>
# (default ../shared/data/pbc-dev). Extra arguments go to benchmarks/inference.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" - <<'PYEOF'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA device")
print(f"gpu_check: torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
PYEOF
echo "== tests marked gpu (classifier/ml; no database, no Django) =="
# --confcutdir keeps the Django conftest of tests/ out: these tests are pure.
"$PY" -m pytest -q -m gpu tests/classifier_ml --confcutdir=tests/classifier_ml -p no:django -p no:cacheprovider \
    -o addopts="" -rs
echo "== inference benchmark on CUDA =="
"$PY" benchmarks/inference.py --device cuda --images "${IMAGES:-512}" --naive-images "${NAIVE_IMAGES:-64}" "$@"
