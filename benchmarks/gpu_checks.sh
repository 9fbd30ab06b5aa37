#!/usr/bin/env bash
# Every GPU check of hba in one prepared run on a lent H100, in order of importance:
#   augment          benchmarks/augment.py: the batched policy on CPU and CUDA (eager and
#                    compiled), batch 128/1024
#   search_compiled  benchmarks/search.py --compile on reduced CIFAR-10 (WRN-40-2, 200 epochs):
#                    the ≤ 60 s target, and the search/plain ratio (≤ 1.35)
#   search           the same, eager, 50 epochs: what compilation buys
#   cuda_tests       tests/test_cuda.py: CPU-equal pixels, no host syncs, bf16, channels_last
#   quality          benchmarks/quality.py on reduced CIFAR-10 (WRN-40-2): is a destructive op
#                    pushed down, do the two copies of an op agree (3 seeds; searches cut to
#                    20/50 epochs to fit; the accuracy check needs ~30 GPU-minutes: not here)
# Each step has its own time limit; name steps to run only those (the device tool allows one
# 10-minute command per call and 15 minutes in all): bash benchmarks/gpu_checks.sh augment search
#
# Prepare here, once per checkout (.data/ and .whl/ are git-ignored):
#   mkdir -p .data && cp ../shared/datasets/cifar10-jpeg.tar.gz .data/
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_17_x86_64 -d .whl \
#       pydantic==2.13.4 pydantic-core==2.46.4 annotated-types typing-inspection
# (the GPU machine's image has torch, typer, rich, pillow, pyyaml and pytest, not pydantic).
# Run there, carrying .data and .whl:
#   bash benchmarks/gpu_checks.sh [STEP...]
# Logs and the benchmarks' JSON lines go to $OUT (else ./gpu-checks); summary.txt gathers the
# JSON lines and each step's exit status.
set -u -o pipefail
out=${OUT:-gpu-checks}
mkdir -p "$out"
: >"$out/summary.txt"
export PYTHONUNBUFFERED=1 HBA_DATA="$PWD/.data" HBA_CACHE=/tmp/hba-cache
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log, keep the last JSON line
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s): $*"
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
    local status=$?
    echo "$name exit $status" >>"$out/summary.txt"
    grep '^{' "$out/$name.log" | tail -n 1 >>"$out/summary.txt"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} 2>&1 | tee "$out/machine.txt"
named=("$@")
wanted() {  # wanted STEP: no steps were named, or this is one of them
    [ ${#named[@]} -eq 0 ] || [[ " ${named[*]} " == *" $1 "* ]]
}
cifar=(--dataset reduced-cifar10 --device cuda)
wanted augment && step augment 240 python3 benchmarks/augment.py --seconds 0.5
wanted search_compiled && step search_compiled 300 python3 benchmarks/search.py "${cifar[@]}" --compile
wanted search && step search 180 python3 benchmarks/search.py "${cifar[@]}" --epochs 50
wanted cuda_tests && step cuda_tests 240 python3 -m pytest tests/test_cuda.py -q -p no:cacheprovider
wanted quality && step quality 300 python3 benchmarks/quality.py "${cifar[@]}" --jobs 1 \
    --harm-epochs 20 --search-epochs 50 --skip-accuracy --out "$out/quality"
cat "$out/summary.txt"
