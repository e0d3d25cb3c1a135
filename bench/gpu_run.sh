#!/usr/bin/env bash
# Issue 13 on a many-core GPU machine: the NVDEC tests, then bench/bench_extract_scale.py on the issue's
# archive (144 x 30 s 720p), everything written to $OUT as it happens. Each step has its own time limit,
# and one failing does not stop the next. Run from the repository root:
#     OUT=/some/dir bash bench/gpu_run.sh        (PYTHON=python3.12 to pick the interpreter)
# Needs vtm importable (pip install -e . or PYTHONPATH), ray, av, decord, polars, scenedetect;
# pytest only for step 2 (without it that step says so and the benchmark's own NVDEC check still runs).
set -u
OUT=${OUT:-$(mktemp -d /tmp/vtm-gpu-run-XXXX)}
PY=${PYTHON:-python}
mkdir -p "$OUT"
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
echo "results in $OUT"

# 1. what machine this is (seconds)
{
    date -u; nproc; free -g; df -h /dev/shm /tmp; nvidia-smi
    $PY -c "import sys, av; from av.codec.hwaccel import hwdevices_available; print(sys.version); print('av', av.__version__, hwdevices_available())"
    $PY -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
    $PY -c "from vtm.stages.decode import cuda_hwaccel; print('NVDEC through PyAV:', cuda_hwaccel() is not None)"
} > "$OUT/1_machine.txt" 2>&1

# 2. every gpu-marked test (about two minutes: they generate the small sample archive first)
if $PY -c "import pytest" 2>/dev/null; then
    timeout ${TESTS_LIMIT_S:-150} $PY -m pytest tests/stages tests/models -m gpu -q -rs -p no:cacheprovider > "$OUT/2_gpu_tests.txt" 2>&1
    echo "exit status $?" >> "$OUT/2_gpu_tests.txt"
else
    echo "pytest is not installed here: skipped (the benchmark's nvdec step checks the same decode)" > "$OUT/2_gpu_tests.txt"
fi

# 3. the benchmark (about 5-6 minutes on 16 cores, cut at 7 unless BENCH_LIMIT_S says otherwise); its JSON is rewritten after every step, most telling steps first
timeout ${BENCH_LIMIT_S:-420} $PY bench/bench_extract_scale.py --videos 144 --seconds 30 --out "$OUT" > "$OUT/3_bench.txt" 2>&1
echo "exit status $?" >> "$OUT/3_bench.txt"
tail -n 40 "$OUT/3_bench.txt"
