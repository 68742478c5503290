#!/usr/bin/env bash
# The GPU figures on a lent machine, in one command (README "GPU", BENCHMARKS.md): the machine has torch, torchvision,
# numpy, PIL and PyYAML but not efficientnet_pytorch or cityscapesscripts, which travel as pure-Python wheels in .whl/
# (made here by `bash benchmarks/gpu_run.sh --wheels`). Results: $OUT/gpu_suite.json and $OUT/gpu_suite.log.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--wheels" ]]; then  # here, once: the wheels, and .whl/ kept out of git
    python3 -m pip wheel --quiet --no-deps efficientnet-pytorch==0.7.1 cityscapesscripts==2.3.0 -w .whl
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    ls .whl
    exit 0
fi
OUT="${OUT:-/tmp}"
python3 -m pip install --quiet --no-deps --target /tmp/lpsctl-wheels .whl/*.whl
export PYTHONPATH="$PWD:/tmp/lpsctl-wheels"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 420 python3 benchmarks/gpu_suite.py --out "$OUT/gpu_suite.json" 2>&1 | tee "$OUT/gpu_suite.log"
