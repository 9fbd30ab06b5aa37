#!/usr/bin/env bash
# Every GPU check of hba, prepared for a lent H100/H200 (the device tool: one command at most
# 10 minutes, 15 minutes of device time in all, the machine's start included). Two commands,
# most important first; each step has a time limit, cut to what is left of its part's budget:
#
#   part1  (script budget 300 s; device tool timeout_s 330)
#     setup            install the carried wheels (.whl/), then `import pydantic, hbacli`:
#                      stops everything with a clear message (and says so in summary.txt)
#     cuda_tests  150  tests/test_cuda.py: CPU-equal pixels, no host syncs, bf16, channels_last;
#                      the stn space's kernels and per-example dropout on CUDA, without syncs
#     augment     120  benchmarks/augment.py: the batched policy on CPU and CUDA (eager and
#                      compiled), batch 128/1024, real CIFAR-10 images from .data/
#   part2  (script budget 390 s; device tool timeout_s 420)
#     search       90  benchmarks/search.py on reduced CIFAR-10 (WRN-40-2), eager, 10 epochs
#     search_compiled 200  the same with --compile: the search/plain ratio (≤ 1.35) after the
#                      compiling epoch; per-epoch figures extrapolate the 200-epoch ≤ 60 s target
#     quality     100  benchmarks/quality.py on reduced CIFAR-10, searches cut to 10 epochs,
#                      3 seeds, accuracy check skipped (~30 GPU-minutes: not here); runs only
#                      with what is left (at least 45 s), else is recorded as skipped
#   part3  (script budget 270 s; device tool timeout_s 300): for a second lent session, or
#          what a first one has left after part1 and part2 (it needs more than 15 minutes)
#     regularisation 270  benchmarks/regularisation.py: the paper's Table 6 (§4.3) at GPU scale
#                      — HBA (conv), STN-style (all) and fixed hyperparameters, AlexNet on
#                      CIFAR-10 (10,000 training, 2,000 validation images, 15 epochs, batch 128,
#                      lr 0.01: STN's SGD), 3 seeds; validation loss, test loss, test error
# 330 + 420 s = 12.5 minutes, leaving ~2.5 minutes of the 15 for the machine's start. Run part2
# right after part1 (a warm machine keeps the torch.compile cache in .cache/inductor).
#
# Prepare here, once per checkout (.data/ and .whl/ are git-ignored; ~22 MiB together):
#   mkdir -p .data && cp ../shared/datasets/cifar10-jpeg.tar.gz .data/
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_17_x86_64 -d .whl \
#       pydantic==2.13.4 pydantic-core==2.46.4 annotated-types typing-inspection \
#       'typing-extensions>=4.15'
# (the GPU machine's image has torch, typer, rich, pillow, pyyaml and pytest, not pydantic,
# and maybe an older typing-extensions than pydantic 2.13 needs).
# Then, with the device tool, carrying [".data", ".whl"]:
#   run(command="bash benchmarks/gpu_checks.sh part1", timeout_s=330, carry=[".data", ".whl"])
#   run(command="bash benchmarks/gpu_checks.sh part2", timeout_s=420, carry=[".data", ".whl"])
#   run(command="bash benchmarks/gpu_checks.sh part3", timeout_s=300, carry=[".data", ".whl"])
# Steps can also be named: bash benchmarks/gpu_checks.sh search quality (budget: the sum of
# their limits). Nothing named: all three parts.
#
# --dry-run: the same steps on the CPU at tiny sizes (digits, 1 epoch, one seed), no wheels
# installed (this checkout's environment), a few minutes on 2 cores; tests/test_gpu_checks.py
# runs it.
#
# Output, in $OUT (else ./gpu-checks), written as the steps go, so a timeout keeps what was
# printed: NAME.log (everything the step printed), NAME.jsonl (its JSON lines, appended as soon
# as printed), steps.jsonl (one line per step: exit status, seconds, limit), setup.log,
# machine.txt, and summary.txt: each step's start, its JSON lines, and its exit status.
set -u -o pipefail
dry_run=0
named=()
for arg in "$@"; do
    case $arg in
        --dry-run) dry_run=1 ;;
        part1) named+=(cuda_tests augment) ;;
        part2) named+=(search search_compiled quality) ;;
        part3) named+=(regularisation) ;;
        cuda_tests|augment|search|search_compiled|quality|regularisation) named+=("$arg") ;;
        *) echo "usage: bash benchmarks/gpu_checks.sh [--dry-run] [part1|part2|part3|STEP...]" >&2
           exit 2 ;;
    esac
done
[ ${#named[@]} -eq 0 ] && named=(cuda_tests augment search search_compiled quality regularisation)
declare -A limit=([cuda_tests]=150 [augment]=120 [search]=90 [search_compiled]=200 [quality]=100
                  [regularisation]=270)
budget=0
for name in "${named[@]}"; do budget=$((budget + ${limit[$name]})); done
if [[ " ${named[*]} " == " cuda_tests augment " ]]; then budget=300; fi      # part1
if [[ " ${named[*]} " == " search search_compiled quality " ]]; then budget=390; fi  # part2
if [ ${#named[@]} -eq 6 ]; then budget=960; fi
deadline=$((SECONDS + budget))

out=${OUT:-gpu-checks}
mkdir -p "$out"
out=$(cd "$out" && pwd)
summary=$out/summary.txt
: >"$summary"
: >"$out/steps.jsonl"
scratch=$(mktemp -d "${TMPDIR:-/tmp}/hba-gpu-checks.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
say() { echo "$*" | tee -a "$summary"; }
mode=""
[ $dry_run = 1 ] && mode="; DRY RUN (CPU, tiny sizes)"
say "gpu_checks: steps ${named[*]}; budget ${budget} s$mode"

# ---------------------------------------------------------------- setup: wheels, imports
setup_failed() {
    say "SETUP FAILED: $* (see $out/setup.log); no step was run"
    echo "setup exit 3" >>"$summary"
    exit 3
}
wheels=${HBA_WHEELS:-.whl}
if [ $dry_run = 1 ]; then
    say "setup: dry run: wheels not installed, this checkout's environment is used"
    export HBA_CACHE=${HBA_CACHE:-$scratch/hba-cache}
else
    export HBA_DATA="$PWD/.data" HBA_CACHE=/tmp/hba-cache
    export TORCHINDUCTOR_CACHE_DIR="$PWD/.cache/inductor"  # kept by a warm machine for part2
    if [ -d "$wheels" ]; then
        site=$scratch/site  # removed at exit; every part installs afresh
        ls "$wheels"/*.whl >/dev/null 2>&1 || setup_failed "no wheels in $wheels"
        python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" \
            "$wheels"/*.whl >"$out/setup.log" 2>&1 \
            || setup_failed "pip could not install the wheels in $wheels: re-download them with \
the header's pip download command (pydantic, pydantic-core, annotated-types, typing-inspection, \
typing-extensions>=4.15, for Python 3.12)"
        export PYTHONPATH="$PYTHONPATH:$site"
        say "setup: wheels from $wheels installed in $site"
    else
        say "setup: no $wheels folder: relying on the image's own pydantic (carry .whl if it" \
            "has none)"
    fi
fi
python3 - >>"$out/setup.log" 2>&1 <<'EOF' \
    || setup_failed "import pydantic, hbacli fails after the wheel install"
from importlib.metadata import version
import pydantic, typing_extensions, hbacli  # noqa: F401
print("pydantic", pydantic.VERSION, "typing-extensions", version("typing_extensions"),
      "hbacli from", hbacli.__file__)
EOF
say "setup: $(tail -n 1 "$out/setup.log")"

{ if [ $dry_run = 0 ]; then
      nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  fi
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'available', torch.cuda.is_available())"
} 2>&1 | tee "$out/machine.txt"

# ---------------------------------------------------------------- steps
failures=0
skip() {  # skip NAME REASON: recorded in summary.txt and steps.jsonl
    say "== $1 skipped: $2"
    printf '{"step": "%s", "exit": null, "skipped": "%s", "seconds": 0}\n' "$1" "$2" \
        | tee -a "$out/steps.jsonl" >>"$summary"
}
step() {  # step NAME COMPILE_ESTIMATE COMMAND...: run within its limit and the budget's rest
    local name=$1 estimate=$2
    shift 2
    local cap=${limit[$name]} left=$((deadline - SECONDS - 5))
    local min=30
    [ "$name" = quality ] && min=45
    if [ $dry_run = 0 ] && [ $left -lt $min ]; then
        skip "$name" "${left} s left of the budget, needs ${min} s"
        return
    fi
    [ $dry_run = 0 ] && [ $left -lt $cap ] && cap=$left
    say "== $name (limit ${cap} s) started at +${SECONDS} s: $*"
    if [ "$estimate" != 0 ]; then
        say "   cold-compile estimate: $estimate; the step's seconds in steps.jsonl are the" \
            "measurement"
    fi
    local started=$SECONDS
    : >"$out/$name.jsonl"
    timeout -k 10 "$cap" "$@" 2>&1 | tee "$out/$name.log" \
        | awk -v j="$out/$name.jsonl" -v s="$summary" \
              '{ print; fflush() } /^\{/ { print >> j; fflush(j); print >> s; fflush(s) }'
    local status=${PIPESTATUS[0]} seconds=$((SECONDS - started))
    local note=""
    [ "$status" = 124 ] || [ "$status" = 137 ] && note=" (timed out)"
    [ "$status" != 0 ] && failures=$((failures + 1))
    echo "$name exit $status$note after ${seconds} s" >>"$summary"
    printf '{"step": "%s", "exit": %d, "seconds": %d, "limit": %d}\n' \
        "$name" "$status" "$seconds" "$cap" | tee -a "$out/steps.jsonl" >>"$summary"
}
wanted() { [[ " ${named[*]} " == *" $1 "* ]]; }

# Cold-compile estimates (an empty inductor cache): guesses on the GPU, not yet measured there;
# the dry run's digits search measured ~60 s cold on 2 busy CPU cores, ~15 s with a warm cache.
compile_policy="~30-60 s (guess: the policy's kernels, batch 128)"
compile_policy2="~30-60 s per batch size (guess: the compiled policy, 2 sizes)"
compile_search="~60-150 s in all (guess: WRN-40-2 plain, then the search's network and λ step)"
compiled=1
if [ $dry_run = 1 ]; then
    compile_policy=0 compile_policy2=0
    compile_search="~60 s cold on 2 CPU cores (digits, wrn16_1), ~15 s warm"
    python3 -c "from hbacli.runtime import has_cpp_compiler as h; raise SystemExit(not h())" \
        || compiled=0
    data=(--dataset digits --device cpu) device=cpu
    augment_sizes=(--seconds 0.05 --batches 16 32)
    epochs=1 quality_sizes=(--seeds 0 --harm-epochs 1 --search-epochs 1 --jobs 1)
    regularisation_sizes=(--dataset digits --seeds 0 --epochs 1 --train-size 64 --val-size 32
                          --jobs 1)
else
    data=(--dataset reduced-cifar10 --device cuda) device=cuda
    augment_sizes=(--seconds 0.5 --batches 128 1024)
    epochs=10 quality_sizes=(--seeds 0,1,2 --harm-epochs 10 --search-epochs 10 --jobs 3)
    regularisation_sizes=(--data-dir "$PWD/.data" --seeds 0,1,2 --epochs 15 --train-size 10000
                          --val-size 2000 --batch-size 128 --lr 0.01 --jobs 3)
    if [ ! -f .data/cifar10-jpeg.tar.gz ]; then
        say "WARNING: no .data/cifar10-jpeg.tar.gz (carry .data, see the header): augment" \
            "falls back to the shipped 1,000 images; search, search_compiled, quality will fail"
    fi
fi
wanted cuda_tests && step cuda_tests "$compile_policy" \
    python3 -m pytest tests/test_cuda.py \
    tests/test_stn_ops.py::test_kernels_on_cuda_give_the_cpu_pixels_without_host_sync \
    tests/test_dropout.py::test_per_example_dropout_on_cuda_without_host_sync \
    -q -rs -p no:cacheprovider \
    --junitxml "$out/cuda_tests.xml"
wanted augment && step augment "$compile_policy2" \
    python3 benchmarks/augment.py "${augment_sizes[@]}"
wanted search && step search 0 \
    python3 benchmarks/search.py "${data[@]}" --epochs "$epochs"
if wanted search_compiled && [ $compiled = 0 ]; then
    skip search_compiled "dry run: no C++ compiler for torch.compile on the CPU"
elif wanted search_compiled; then step search_compiled "$compile_search" \
    python3 benchmarks/search.py "${data[@]}" --epochs "$epochs" --compile
fi
wanted quality && step quality 0 \
    python3 benchmarks/quality.py "${data[@]}" "${quality_sizes[@]}" --skip-accuracy \
    --out "$scratch/quality"
wanted regularisation && step regularisation 0 \
    python3 benchmarks/regularisation.py --device "$device" "${regularisation_sizes[@]}" \
    --out "$scratch/regularisation"
say "done at +${SECONDS} s; ${failures} step(s) failed; summary: $summary"
[ $failures = 0 ]
