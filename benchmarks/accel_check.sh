#!/usr/bin/env bash
# One-shot check of the jax backbone on an accelerator (issue 10): installs nothing, ends within
# 8 minutes (hard limit), prints the figures, and writes them under $OUT when it is set (else
# benchmarks/results/). Run it from anywhere:
#
#     bash benchmarks/accel_check.sh
#
# It needs a Python whose jax sees the GPU (jax[cuda]); numpy is enough besides (flowc's own
# dependencies and optax are used where installed). Pick the interpreter with PYTHON=...; extra
# arguments for the benchmark go in ACCEL_CHECK_ARGS (e.g. "--quick" to try the script on a CPU).
set -u
cd "$(dirname "$0")/.."
dest="${OUT:-benchmarks/results}"
mkdir -p "$dest"
log="$dest/accel_check.log"

python=""
for candidate in "${PYTHON:-}" python3 python; do
    if [ -n "$candidate" ] && "$candidate" -c "import jax, numpy" >/dev/null 2>&1; then
        python="$candidate"
        break
    fi
done
if [ -z "$python" ]; then
    echo "accel_check: no Python with jax and numpy found (set PYTHON=...)" | tee "$log"
    exit 2
fi

{
    echo "== accel_check $(date -u +%Y-%m-%dT%H:%M:%SZ), $python, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "(no nvidia-smi)"
    "$python" -c "import jax; print('jax', jax.__version__, jax.default_backend(), jax.devices())"
} 2>&1 | tee "$log"

# Let jax take most of the GPU's memory (its default is 75%): the no-remat step at B=16, T=1024 is
# the point of the check. New configurations stop starting after 360 s; the whole run is killed
# at 480 s. The JSON is rewritten after every configuration, so a kill loses only the one running.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"
export PYTHONUNBUFFERED=1
timeout -k 10 480 "$python" benchmarks/bench_backbone_accel.py \
    --budget-seconds 360 --min-seconds 1 --out "$dest/backbone_accel.json" ${ACCEL_CHECK_ARGS:-} 2>&1 | tee -a "$log"
status=${PIPESTATUS[0]}
echo "== accel_check exit status $status (124: the 480 s limit; figures so far are in $dest/backbone_accel.json)" | tee -a "$log"
exit "$status"
