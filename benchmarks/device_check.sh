#!/usr/bin/env bash
# The checks a lent GPU is for, in one command (see benchmarks/device_check.py):
#   benchmarks/device_check.sh OUT               on the GPU; OUT/device_check.json holds the numbers
#   benchmarks/device_check.sh OUT --device cpu --quick   every step small, on the CPU
set -euo pipefail
cd "$(dirname "$0")/.."
python=python3
if [ -x .venv/bin/python ]; then python=.venv/bin/python; fi
exec "$python" benchmarks/device_check.py "$@"
