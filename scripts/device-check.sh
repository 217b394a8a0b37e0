#!/usr/bin/env bash
# device-check.sh — the CUDA path's checks and benchmarks, in one run of at most 4 minutes by
# default (issue 24), so that a fix and a rerun fit in 15 minutes of GPU time with the
# machine's start-ups. Run it on a machine with an NVIDIA GPU and no network (torch and
# transformers installed, nothing else) from the repository root, after
# scripts/device-prepare.sh has put the release binaries and the small inputs into .device/
# here and that folder was carried over:
#
#   bash scripts/device-check.sh
#
# Stages, in order of value (the time budget cuts the last ones first), after the env probe:
# 1. throughput — training seq/s of randomly initialised DistilBERT-base (max_len 128 and 512,
#                 f16 and bf16) and BERT-base (512, bf16) with the notebook's batches (32 at 128,
#                 8 at 512), fixed padding; the same batches in PyTorch (scripts/torch_bench.py:
#                 transformers, autocast + GradScaler, AdamW) after each row; one table with
#                 seq/s, the bertlab/PyTorch ratio and MFU;
# 2. first run  — a user's first fine-tuning (scripts/device_first_run.py, issue 23): one epoch
#                 of a random DistilBERT-base on 6998 carried IMDB reviews at 32 × 128 in bf16,
#                 then validation and test, `bertlab train` from empty caches (cold) and again
#                 (warm), against PyTorch's whole process (import, tokenize, the epoch under
#                 autocast, evaluation) on the same rows: one line with bertlab_cold_s,
#                 bertlab_warm_s and torch_s;
#    end-to-end — the real commands (scripts/device_e2e.py): transformers makes a randomly
#                 initialised DistilBERT-base snapshot (the carried vocabulary), `bertlab train`
#                 fine-tunes it 1 epoch on a carried IMDB sample (524 reviews, max_len 256) in
#                 f16 and in bf16, the train-split loss must fall, `bertlab eval` and `bertlab
#                 predict` run on best/, whose logits transformers must reproduce; a batch of
#                 65536 at max_len 512 must hit CUDA out-of-memory and exit 3;
# 3. parity     — CUDA f32 logits and hidden states vs the transformers fixtures (≤ 1e-3), one
#                 AdamW step vs PyTorch's, f16/bf16 vs f32 (max abs and relative error), on the
#                 fixtures and on randomly initialised DistilBERT-base and BERT-base; then
#                 `bench kernels` (bertlab's CubeCL kernels against the reference decomposition
#                 on the GPU, outputs and gradients);
# Opt-in (DEVICE_CHECK_EXTRA, a comma list, or `all`); `pipeline`: a user's `cargo xtask all` on
#    random base-size snapshots from empty caches, its wall time beside the plan's estimate
#    (scripts/device_pipeline.py, issue 23); `attention`: the first model's throughput rows again
#    with attention's products on tensor cores (BERTLAB_ATTENTION=tensor-cores, issue 24);
# 4. numerics   — up to 200 AdamW steps on fixed IMDB batches with a randomly initialised
#                 DistilBERT-base in f32, f16 and bf16: largest gap between the loss curves and
#                 the f16 steps lost to overflow (none allowed after the first 10); it stops
#                 early, with a summary of the steps done, when the budget runs short
#                 (`numerics`; issue 22's several initialisations: DEVICE_CHECK_NUMERICS_SEEDS);
# 5. a profiled run that times the phases of a step, one that reads the logits back every step,
#    and `bench step-profile` with and without `--kernel-times` (launches, host waits, and the
#    device's milliseconds a step by kernel against the step's wall time) (`profile`), and the other build's env probe and f16 rows (`alt`, see DEVICE_CHECK_PRIMARY
#    below).
# Measured on an H200 (2026-11-30, BENCHMARKS.md), unfused build first: env 2 s, parity 28 s,
# end-to-end 108 s, throughput with PyTorch 52 s, numerics 29 s; then the build that also
# autotuned (the default until issue 23): its env probe 30 s and its first f16 row, which did not
# finish within 94 s (its autotuning compiles about 1 s a kernel). Each stage prints how many
# kernels CubeCL compiled in it (its compilation log): on a bare machine that, not the maths, is
# most of a stage's time.
#
# Without nvidia-smi (or with DEVICE_CHECK_MODE=cpu) it runs the same stages on the CPU build
# with the tiny fixture models and a few steps, to test the script itself; the GPU-only parts
# (CUDA, peak FLOP/s, the base-size models, out-of-memory) are skipped. The end-to-end stage
# needs python3 with torch and transformers, and skips with a printed reason without them.
#
# Everything printed also goes to $OUT/device-check.txt (or .device/results/ when OUT is unset),
# with the JSON lines of each stage next to it and the table in table.md (8 files at most).
#
# Inputs (first found): BERTLAB_BIN | .device/bertlab.gz (GPU mode) |
# $CARGO_TARGET_DIR/release/bertlab | target/release/bertlab; BERTLAB_FIXTURES |
# .device/fixtures | ../shared/fixtures; BERTLAB_IDS | .device/imdb-ids.json (made from
# ../shared when missing); BERTLAB_SAMPLE | .device/imdb-sample (made from ../shared when
# missing); BERTLAB_TOKENIZER | .device/tokenizer | the fixtures' tiny-distilbert.
# Knobs: DEVICE_CHECK_QUICK=1 (fewest steps), DEVICE_CHECK_BUDGET_S (default 240: stages are cut
# to fit), DEVICE_CHECK_EXTRA (opt-in stages: numerics, pipeline, attention, profile, alt, or all), DEVICE_CHECK_STEPS (timed throughput steps, default 10 on GPU),
# DEVICE_CHECK_NUMERICS_STEPS (default 200 on GPU), DEVICE_CHECK_NUMERICS_SEEDS (opt-in: issue
# 22's numerics over these initialisations, each replayed in PyTorch), DEVICE_CHECK_SKIP (comma list of kernels,
# parity, first-run, e2e, numerics, pipeline, throughput, torch, alt, attention, profile), DEVICE_CHECK_TORCH=0 (no
# PyTorch rows), BERTLAB_FIRST_RUN_SAMPLE (the first-run stage's data),
# DEVICE_CHECK_PADDING (throughput paddings; default fixed on GPU, fixed,bucket on CPU),
# DEVICE_CHECK_PRIMARY (unfused | fused: which CUDA build runs the stages, default fused),
# BERTLAB_ALT_BIN (with BERTLAB_BIN or on the CPU: a second build run last, like the other
# CUDA build).
set -uo pipefail # no -e: a failed stage is reported and the next one runs

cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
STARTED=$(date +%s)
BUDGET=${DEVICE_CHECK_BUDGET_S:-240}
QUICK=${DEVICE_CHECK_QUICK:-0}
SKIP=",${DEVICE_CHECK_SKIP:-},"
TORCH=${DEVICE_CHECK_TORCH:-1}

if [[ -n "${DEVICE_CHECK_MODE:-}" ]]; then
    MODE=$DEVICE_CHECK_MODE
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    MODE=gpu
else
    MODE=cpu
fi

RESULTS=${OUT:-$ROOT/.device/results}
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
LOG=$RESULTS/device-check.txt
: >"$LOG"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK" "$WORK-first-run" "$WORK-pipeline"' EXIT

say() { printf '%s\n' "$*" | tee -a "$LOG"; }
elapsed() { echo $(($(date +%s) - STARTED)); }
remaining() { echo $((BUDGET - $(elapsed))); }
skipped() { [[ "$SKIP" == *",$1,"* ]]; }
EXTRA=",${DEVICE_CHECK_EXTRA:-},"
extra() { [[ "$EXTRA" == *",$1,"* || "$EXTRA" == ",all," ]]; }

first_file() {
    local f
    for f in "$@"; do
        if [[ -n "$f" && -f "$f" ]]; then
            echo "$f"
            return 0
        fi
    done
    return 1
}

# The first of the folders (empty names skipped) holding every one of the comma-separated names
# in $1, as an absolute path.
first_dir_with() {
    local names d n
    IFS=, read -ra names <<<"$1"
    shift
    for d in "$@"; do
        [[ -n "$d" ]] || continue
        for n in "${names[@]}"; do
            [[ -e "$d/$n" ]] || continue 2
        done
        realpath "$d"
        return 0
    done
    return 1
}

# device-prepare.sh ships the CUDA binaries gzipped: unpack them into $WORK. On the CPU the
# CPU build is used (the CUDA one would stop at its driver check).
unpack() {
    gzip -dc "$1" >"$2" && chmod +x "$2"
}
# Two CUDA builds travel: .device/bertlab.gz (--features cuda: fusion without autotuning, what
# users build since issue 23) and .device/bertlab-alt.gz (--features cuda-unfused: neither).
# DEVICE_CHECK_PRIMARY says which one runs the stages (default fused); the other runs last,
# while time is left: its env probe and the first row's f16 throughput. (Before issue 23 the
# default build also autotuned, and on the H200 of issue 13 its NVRTC compilation of every
# matmul candidate, about 1 s a kernel, kept it from ending any stage: the unfused build ran
# first then. BERTLAB_CUDA_ALT_FEATURES=cuda-tuned in device-prepare.sh ships the tuned build
# as the second instead.)
PRIMARY=${DEVICE_CHECK_PRIMARY:-fused}
if [[ $PRIMARY != unfused && $PRIMARY != fused ]]; then
    say "error: DEVICE_CHECK_PRIMARY must be unfused or fused, not '$PRIMARY'"
    exit 2
fi
BIN_LABEL=given
ALT_BIN=""
ALT_LABEL="second"
if [[ -n "${BERTLAB_BIN:-}" ]]; then
    BIN=$(first_file "$BERTLAB_BIN") || BIN=""
    [[ -n "${BERTLAB_ALT_BIN:-}" ]] && ALT_BIN=$(realpath "$BERTLAB_ALT_BIN")
elif [[ $MODE == gpu && -f "$ROOT/.device/bertlab.gz" ]]; then
    unpack "$ROOT/.device/bertlab.gz" "$WORK/bertlab-fused" && BIN=$WORK/bertlab-fused
    BIN_LABEL=fused
    if [[ -f "$ROOT/.device/bertlab-alt.gz" ]] &&
        unpack "$ROOT/.device/bertlab-alt.gz" "$WORK/bertlab-unfused"; then
        ALT_BIN=$WORK/bertlab-unfused
        ALT_LABEL=unfused
        if [[ $PRIMARY == unfused ]]; then
            ALT_BIN=$BIN
            ALT_LABEL=fused
            BIN=$WORK/bertlab-unfused
            BIN_LABEL=unfused
        fi
    fi
else
    BIN=$(first_file "${CARGO_TARGET_DIR:-/tmp/bertlab-target}/release/bertlab" \
        "$ROOT/target/release/bertlab") || BIN=""
    BIN_LABEL=cpu
    [[ -n "${BERTLAB_ALT_BIN:-}" ]] && ALT_BIN=$(realpath "$BERTLAB_ALT_BIN")
fi
if [[ -z "$BIN" ]]; then
    say "error: no bertlab binary (run scripts/device-prepare.sh, or set BERTLAB_BIN)"
    exit 2
fi
BIN=$(realpath "$BIN")
# (the binary itself: a PTX shim below may wrap it in a script naming this run's $WORK)
BIN_HASH=$(sha256sum "$BIN" | cut -c1-16)
SHARED=${BERTLAB_SHARED:-$ROOT/../shared}
[[ -d "$SHARED" ]] && SHARED=$(cd "$SHARED" && pwd)
FIXTURES=$(first_dir_with tiny-bert/expected.json "${BERTLAB_FIXTURES:-}" "$ROOT/.device/fixtures" \
    "$SHARED/fixtures") || FIXTURES=""
IDS=$(first_file "${BERTLAB_IDS:-}" "$ROOT/.device/imdb-ids.json") && IDS=$(realpath "$IDS") || IDS=""
# The end-to-end stage's IMDB sample (`bertlab data sample`) and the vocabulary of its snapshot.
SAMPLE=$(first_dir_with plain_text "${BERTLAB_SAMPLE:-}" "$ROOT/.device/imdb-sample") || SAMPLE=""
TOKENIZER=$(first_dir_with vocab.txt,tokenizer.json "${BERTLAB_TOKENIZER:-}" "$ROOT/.device/tokenizer" \
    "${FIXTURES:+$FIXTURES/tiny-distilbert}" "$SHARED/fixtures/tiny-distilbert") || TOKENIZER=""
# The first-run and pipeline stages' data: 9998 carried reviews on the GPU; on the CPU, whose
# rehearsal sizes its runs for the small sample, only one given by BERTLAB_FIRST_RUN_SAMPLE.
if [[ $MODE == gpu ]]; then
    FIRST_SAMPLE=$(first_dir_with plain_text "${BERTLAB_FIRST_RUN_SAMPLE:-}" "$ROOT/.device/imdb-first-run") ||
        FIRST_SAMPLE=""
else
    FIRST_SAMPLE=$(first_dir_with plain_text "${BERTLAB_FIRST_RUN_SAMPLE:-}") || FIRST_SAMPLE=""
fi
# The commit the carried binaries were built from, for the JSON lines.
BUILD_COMMIT=$(grep -o '"git": "[^"]*"' "$ROOT/.device/build-info.json" 2>/dev/null | cut -d'"' -f4)
BUILD_COMMIT=${BUILD_COMMIT:-unknown}
# Without a carried sample (a CPU rehearsal), the end-to-end, first-run and pipeline stages share
# one made from ../shared's IMDB, made at most once.
sample_from_shared() {
    if [[ -z "$SAMPLE" && -d "$SHARED/data/hf-imdb" ]]; then
        SAMPLE=$WORK/imdb-sample
        [[ -d "$SAMPLE/plain_text" ]] || stage "make-sample" 60 - "$BIN" data sample \
            --source "$SHARED/data/hf-imdb" --subset 0.04 --seed 42 --out "$SAMPLE"
    fi
}
# On the CPU without the first-run data, the first-run and pipeline stages use the small sample.
first_sample_on_cpu() {
    if [[ $MODE != gpu && -z "$FIRST_SAMPLE" ]]; then
        sample_from_shared
        FIRST_SAMPLE=$SAMPLE
    fi
}
# Say that stage $1 is skipped and why ($2; $3, shorter, for the summary).
skip_stage() {
    say "==> $1: skipped ($2)"
    STATUS+=("$1: skipped (${3:-$2})")
}
# Whether stage $1, a script on a snapshot transformers makes, can run (python3 with torch and
# transformers, and the carried vocabulary); says why not.
snapshot_stage_ready() {
    if [[ $HAVE_TORCH == 0 ]]; then
        skip_stage "$1" "it needs python3 with torch and transformers" "no python3 with torch and transformers"
    elif [[ -z "$TOKENIZER" ]]; then
        skip_stage "$1" "no vocabulary: .device/tokenizer or the fixtures' tiny-distilbert" "no vocabulary"
    else
        return 0
    fi
    return 1
}

# Kernels CubeCL has compiled so far in this run (its compilation log, see cubecl.toml below).
compiled_kernels() {
    if [[ -f "$WORK/compile.log" ]]; then
        grep -c '^\[Compiling kernel\]' "$WORK/compile.log" || true
    else
        echo 0
    fi
}

# STAGE NAME CAP JSONL CMD...: run CMD with a timeout of min(CAP, what is left of the budget),
# show and log its output, and append its JSON lines to JSONL (unless JSONL is "-").
STATUS=()
stage() {
    local name=$1 cap=$2 jsonl=$3
    shift 3
    local left
    left=$(($(remaining) - 3))
    if ((left < 5)); then
        say "==> $name: skipped (time budget of ${BUDGET}s used up)"
        STATUS+=("$name: skipped (budget)")
        return 0
    fi
    local limit=$((cap < left ? cap : left))
    say ""
    say "==> $name (limit ${limit}s)"
    say "\$ $*"
    local t0=$SECONDS rc compiled_before
    compiled_before=$(compiled_kernels)
    # From $WORK, where cubecl.toml is (CubeCL reads it from the working directory).
    (cd "$WORK" && timeout --kill-after=10 "$limit" "$@") >"$WORK/stage.out" 2>&1
    rc=$?
    tee -a "$LOG" <"$WORK/stage.out"
    if [[ "$jsonl" != "-" ]]; then
        grep '^{' "$WORK/stage.out" >>"$jsonl"
    fi
    local took=$((SECONDS - t0))
    say "    ($name: $(($(compiled_kernels) - compiled_before)) kernels compiled in ${took}s)"
    if ((rc == 0)); then
        STATUS+=("$name: ok (${took}s)")
    elif ((rc == 124 || rc == 137)); then
        say "==> $name: TIMED OUT after ${limit}s"
        STATUS+=("$name: TIMED OUT (${limit}s)")
    else
        say "==> $name: FAILED (exit $rc, ${took}s)"
        STATUS+=("$name: FAILED (exit $rc)")
    fi
    return 0
}

say "bertlab device check — mode $MODE$([[ $QUICK == 1 ]] && echo ', quick'), $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
say "binary:   $BIN ($BIN_LABEL, $(du -h "$BIN" | cut -f1))${ALT_BIN:+; last, while time is left: $ALT_BIN ($ALT_LABEL)}"
say "fixtures: ${FIXTURES:-none}"
if [[ -f "$ROOT/.device/build-info.json" ]]; then
    say "build:    $(cat "$ROOT/.device/build-info.json")"
fi

# The PTX ISA version a CUDA version's driver reads at most.
ptx_isa() {
    case $1 in
    13.*) echo "9.${1#13.}" ;;
    12.9) echo 8.8 ;;
    12.8) echo 8.7 ;;
    12.5 | 12.6) echo 8.5 ;;
    12.[0-4]) echo "8.${1#12.}" ;;
    *) echo "" ;;
    esac
}
# WITH_SHIM BIN WRAPPER SHIM ISA: a wrapper script that runs BIN with the PTX shim preloaded.
with_shim() {
    printf '#!/usr/bin/env bash\nexec env LD_PRELOAD=%q PTX_SHIM_VERSION=%q %q "$@"\n' "$3" "$4" "$1" >"$2"
    chmod +x "$2"
    echo "$2"
}

GPU_NAME=""
if [[ $MODE == gpu ]]; then
    GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
    say "gpu:      $(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv,noheader | head -1)"
    DRIVER_CUDA=$(nvidia-smi | grep -o 'CUDA Version: [0-9.]*' | grep -o '[0-9.]*$' || true)
    say "driver:   supports CUDA ${DRIVER_CUDA:-?}"
    # Burn's CUDA backend compiles its kernels at run time with NVRTC and includes CUDA's
    # headers (cuda_runtime.h, cuda_fp16.h, mma.h, cccl) from $CUDA_PATH/include. A machine
    # with only PyTorch has both inside its pip wheels (site-packages/nvidia/cu13/{lib,include},
    # or nvidia/cuda_nvrtc + nvidia/cuda_runtime for CUDA 12 wheels): point the loader and
    # CUDA_PATH there when the system has no CUDA toolkit.
    search=(/usr/local/cuda /usr/local/cuda-* /opt/cuda)
    if command -v python3 >/dev/null 2>&1; then
        while IFS= read -r d; do search+=("$d/nvidia"); done < <(python3 -c 'import site; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null)
    fi
    if ! ldconfig -p 2>/dev/null | grep -q 'libnvrtc\.so'; then
        nvrtc=$(find "${search[@]}" -maxdepth 4 -name 'libnvrtc.so*' ! -name '*builtins*' 2>/dev/null | sort -V | tail -1)
        if [[ -n "$nvrtc" ]]; then
            export LD_LIBRARY_PATH="$(dirname "$nvrtc")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        fi
    fi
    if [[ -z "${CUDA_PATH:-}" && ! -d /usr/local/cuda && ! -d /opt/cuda ]]; then
        header=$(find "${search[@]}" -maxdepth 4 -path '*/include/cuda_runtime.h' 2>/dev/null | head -1)
        if [[ -n "$header" ]]; then
            export CUDA_PATH=$(dirname "$(dirname "$header")")
        fi
    fi
    builtins=$(find $(tr : " " <<<"${LD_LIBRARY_PATH:-}") /usr/lib/x86_64-linux-gnu /usr/local/cuda/lib64 -maxdepth 1 -name 'libnvrtc-builtins.so.*.*' 2>/dev/null | head -1)
    NVRTC_VERSION=$(basename "${builtins:-none}" | grep -o '[0-9]*\.[0-9]*$' || true)
    say "nvrtc:    ${NVRTC_VERSION:-version unknown} (LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}); CUDA_PATH=${CUDA_PATH:-unset}"
    if [[ -n "$NVRTC_VERSION" && -n "$DRIVER_CUDA" ]] &&
        [[ "$(printf '%s\n%s\n' "$NVRTC_VERSION" "$DRIVER_CUDA" | sort -V | tail -1)" != "$DRIVER_CUDA" ]]; then
        # NVRTC writes the PTX ISA of its own CUDA version (13.2 → 9.2), which a driver of an
        # older CUDA refuses (CUDA_ERROR_UNSUPPORTED_PTX_VERSION). Preload the shim that lowers
        # the PTX `.version` line to the driver's ISA (scripts/ptx_version_shim.c).
        isa=$(ptx_isa "$DRIVER_CUDA")
        shim=$ROOT/.device/ptx-shim.so
        if [[ ${DEVICE_CHECK_PTX_SHIM:-1} != 0 && -n "$isa" && -f "$shim" ]]; then
            say "note:     NVRTC $NVRTC_VERSION is newer than the driver's CUDA $DRIVER_CUDA: bertlab runs with"
            say "          LD_PRELOAD=ptx-shim.so, which lowers NVRTC's PTX .version to $isa (DEVICE_CHECK_PTX_SHIM=0: off)"
            BIN=$(with_shim "$BIN" "$WORK/bertlab-shim" "$shim" "$isa")
            [[ -n "$ALT_BIN" ]] && ALT_BIN=$(with_shim "$ALT_BIN" "$WORK/bertlab-alt-shim" "$shim" "$isa")
        else
            say "warning: NVRTC $NVRTC_VERSION is newer than the driver's CUDA $DRIVER_CUDA: the driver may refuse its"
            say "         PTX (CUDA_ERROR_UNSUPPORTED_PTX_VERSION); an NVRTC of CUDA $DRIVER_CUDA on LD_LIBRARY_PATH avoids that"
        fi
    fi
fi
# CubeCL (Burn's GPU runtime) settings: keep the kernels it compiles (PTX) on disk, so the
# stages after the first, each a new process, do not recompile them with NVRTC. On the GPU the
# cache outlives the run in .device-cache/ (git-ignored, not carried), so that a second call
# on the still-warm machine (opt-in stages after the default run) does not pay NVRTC again;
# it is keyed by the binary's hash, since CubeCL's cache key is a kernel's name and arguments,
# not its code: a rebuilt binary with a fixed kernel must not load the old PTX.
KERNEL_CACHE=$WORK/cubecl-cache
if [[ $MODE == gpu ]]; then
    KERNEL_CACHE=$ROOT/.device-cache/cubecl-$BIN_HASH
    mkdir -p "$KERNEL_CACHE"
fi
cat >"$WORK/cubecl.toml" <<EOF
[compilation]
cache = { file = "$KERNEL_CACHE" }
# One line per kernel compiled with NVRTC (not per one loaded from the cache above): the
# stages report how many they compiled, the cost that dominates a first run.
logger = { file = "$WORK/compile.log", level = "basic" }
EOF
if [[ $TORCH != 0 ]] && command -v python3 >/dev/null 2>&1; then
    say "python:   $(python3 -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)' 2>&1 | tail -1)"
fi
stage "env" 60 - "$BIN" bench env
if grep -q 'UNSUPPORTED_PTX_VERSION\|Unable to load the PTX' "$WORK/stage.out"; then
    say "hint: the driver refused the PTX that NVRTC made: put an NVRTC no newer than the driver's CUDA"
    say "      (nvidia-smi's 'CUDA Version') first on LD_LIBRARY_PATH, or build .device/ptx-shim.so"
    say "      (scripts/device-prepare.sh does, with gcc) so that this script preloads it"
fi
# Sizes per mode. GPU: the real models and the notebook's shapes. CPU: tiny models, few steps.
# THROUGHPUT rows are MODEL|MAX_LENS|PRECISIONS: each is timed in bertlab, then in PyTorch on
# the same batches, before the next row starts (so a budget cut leaves complete rows).
if [[ $MODE == gpu ]]; then
    THROUGHPUT=("distilbert|128,512|f16,bf16" "bert|512|bf16")
    PADDING=${DEVICE_CHECK_PADDING:-fixed}
    BATCH=auto
    STEPS=${DEVICE_CHECK_STEPS:-10}
    WARMUP=2
    NUM_ARCH=distilbert
    NUM_STEPS=${DEVICE_CHECK_NUMERICS_STEPS:-200}
    NUM_ARGS=(--batch 16 --max-len 128 --batches 32)
    PARITY_IDS=1
    if [[ $QUICK == 1 ]]; then
        STEPS=${DEVICE_CHECK_STEPS:-5}
        NUM_STEPS=${DEVICE_CHECK_NUMERICS_STEPS:-40}
    fi
else
    if [[ -z "$FIXTURES" ]]; then
        say "error: no fixtures (set BERTLAB_FIXTURES or put ../shared beside the repository)"
        exit 2
    fi
    PADDING=${DEVICE_CHECK_PADDING:-fixed,bucket}
    BATCH=8
    WARMUP=1
    NUM_ARCH=$FIXTURES/tiny-distilbert
    NUM_ARGS=(--batch 8 --max-len 64 --batches 8)
    if [[ $QUICK == 1 ]]; then
        LENS=64
        STEPS=${DEVICE_CHECK_STEPS:-2}
        NUM_STEPS=${DEVICE_CHECK_NUMERICS_STEPS:-20}
        PARITY_IDS=0
    else
        LENS=64,128
        STEPS=${DEVICE_CHECK_STEPS:-5}
        NUM_STEPS=${DEVICE_CHECK_NUMERICS_STEPS:-60}
        # (the base-size models' f16/bf16 parity takes over a minute on a small CPU)
        PARITY_IDS=0
    fi
    THROUGHPUT=("$FIXTURES/tiny-distilbert|$LENS|f16,bf16" "$FIXTURES/tiny-bert|$LENS|f16,bf16")
fi
FIRST_MODEL=${THROUGHPUT[0]%%|*}
FIRST_LEN=${THROUGHPUT[0]#*|}
FIRST_LEN=${FIRST_LEN%%[,|]*}

if [[ -z "$IDS" && -d "$SHARED/data/hf-imdb" ]]; then
    IDS=$WORK/imdb-ids.json
    stage "make-ids" 120 - "$BIN" bench make-ids --source "$SHARED/data/hf-imdb" \
        --model "$SHARED/models/all-MiniLM-L6-v2" --rows 1024 --out "$IDS"
fi
if [[ -z "$IDS" || ! -f "$IDS" ]]; then
    say "warning: no IMDB ids file (.device/imdb-ids.json): numerics and throughput are skipped"
    SKIP="$SKIP,numerics,throughput,torch,profile,"
    IDS=""
fi

# The bertlab vs PyTorch table, from the JSON lines so far (printed again when rows are added).
print_table() {
    if [[ -s "$BERTLAB_JSONL" ]]; then
        local table_args=(--bertlab "$BERTLAB_JSONL")
        [[ -s "$TORCH_JSONL" ]] && table_args+=(--torch "$TORCH_JSONL")
        [[ -n "$GPU_NAME" ]] && table_args+=(--gpu "$GPU_NAME")
        say ""
        say "==> table"
        "$BIN" bench table "${table_args[@]}" 2>&1 | tee "$RESULTS/table.md" | tee -a "$LOG"
    fi
}
BERTLAB_JSONL=$RESULTS/throughput-bertlab.jsonl
TORCH_JSONL=$RESULTS/throughput-torch.jsonl
PLAN=$RESULTS/plan.jsonl

HAVE_TORCH=0
if command -v python3 >/dev/null 2>&1 && python3 -c 'import torch, transformers' >/dev/null 2>&1; then
    HAVE_TORCH=1
fi

# 1. throughput: bertlab and PyTorch on the same batch plans, row by row, so that a budget cut
# still leaves complete rows.
TORCH_ROWS=$HAVE_TORCH
if [[ $TORCH == 0 ]] || skipped torch; then
    TORCH_ROWS=0
fi
common=(--ids-file "$IDS" --batch "$BATCH" --padding "$PADDING" --steps "$STEPS" --warmup "$WARMUP")
if ! skipped throughput; then
    for row in "${THROUGHPUT[@]}"; do
        IFS='|' read -r model lens precisions <<<"$row"
        label=$(basename "$model")
        plan=$WORK/plan-$label.jsonl
        stage "plan $label" 30 - "$BIN" bench train-throughput "${common[@]}" --max-len "$lens" \
            --plan-out "$plan" --plan-only
        # (rows share plans: the results keep each once)
        [[ -f "$plan" ]] && cat "$plan" >>"$PLAN" && sort -u -o "$PLAN" "$PLAN"
        for precision in ${precisions//,/ }; do
            stage "throughput $label $precision" 100 "$BERTLAB_JSONL" "$BIN" bench train-throughput \
                "${common[@]}" --max-len "$lens" --arch "$model" --precision "$precision"
        done
        if [[ $TORCH_ROWS == 1 ]]; then
            stage "torch $label" 100 "$TORCH_JSONL" python3 "$ROOT/scripts/torch_bench.py" \
                --plan "$plan" --ids-file "$IDS" --arch "$model" --precision "$precisions"
        fi
    done
    if [[ $TORCH_ROWS == 0 ]]; then
        say "==> torch: skipped (DEVICE_CHECK_TORCH=0, or no python3 with torch and transformers)"
        STATUS+=("torch: skipped")
    fi
    print_table
fi

# 2a. first run (issue 23): a user's first fine-tuning, cold and warm, against PyTorch's whole
# process on the same rows (scripts/device_first_run.py); its JSON line goes in e2e.jsonl (the
# device tool brings back 8 files at most).
if ! skipped first-run && snapshot_stage_ready first-run; then
    # GPU: the issue's run, 6998 reviews at 32 × 128 in bf16 (.device/imdb-first-run). CPU: the
    # script's rehearsal, a tenth of the small sample at 8 × 64.
    first_args=(--batch 32 --max-len 128 --precision bf16 --subset 1)
    [[ $MODE != gpu ]] && first_args=(--batch 8 --max-len 64 --precision bf16 --subset 0.1)
    first_sample_on_cpu
    if [[ -z "$FIRST_SAMPLE" ]]; then
        skip_stage first-run "no IMDB sample: .device/imdb-first-run" "no IMDB sample"
    else
        # Outside $WORK: CubeCL reads a cubecl.toml in the working folder or above it, and
        # $WORK's names this script's own kernel cache; the first run is a user's, cold.
        cap=200
        left=$(($(remaining) - 3))
        limit=$((cap < left ? cap : left))
        stage "first-run" "$cap" "$RESULTS/e2e.jsonl" python3 "$ROOT/scripts/device_first_run.py" \
            --bin "$BIN" --sample "$FIRST_SAMPLE" --tokenizer "$TOKENIZER" --work "$WORK-first-run" \
            --mode "$MODE" --commit "$BUILD_COMMIT" --max-seconds "$((limit > 20 ? limit - 5 : 15))" \
            "${first_args[@]}"
    fi
fi

# 2b. end-to-end: the commands a user runs, on a base-size model that transformers makes here.
if ! skipped e2e && snapshot_stage_ready end-to-end; then
    sample_from_shared
    if [[ -z "$SAMPLE" || ! -d "$SAMPLE/plain_text" ]]; then
        skip_stage end-to-end "no IMDB sample: .device/imdb-sample" "no IMDB sample"
    else
        # The script stops starting steps 10 s before the stage's limit, to print its summary.
        cap=150
        left=$(($(remaining) - 3))
        limit=$((cap < left ? cap : left))
        stage "end-to-end" "$cap" "$RESULTS/e2e.jsonl" python3 "$ROOT/scripts/device_e2e.py" --bin "$BIN" \
            --sample "$SAMPLE" --tokenizer "$TOKENIZER" --work "$WORK/e2e" --mode "$MODE" \
            --max-seconds "$((limit > 20 ? limit - 10 : 10))"
    fi
fi

# 3. parity, then bertlab's kernels against the reference decomposition on this device
if ! skipped parity; then
    if [[ -z "$FIXTURES" ]]; then
        skip_stage parity "no fixtures"
    else
        args=(--fixtures "$FIXTURES")
        if [[ $PARITY_IDS == 1 && -n "$IDS" ]]; then
            args+=(--ids-file "$IDS")
        fi
        stage "parity" 90 "$RESULTS/parity.jsonl" "$BIN" bench parity "${args[@]}"
    fi
fi

# The ops seam's fast path (bertlab's CubeCL kernels) against the reference decomposition on
# this device: outputs and gradients of each op (issue 24), and attention under each
# BERTLAB_ATTENTION choice (rows, tiles, tensor-cores: ~24 kernels more to compile on a cold
# cache, hence 90 s); the stage fails on a mismatch.
if ! skipped kernels; then
    stage "kernels" 90 - "$BIN" bench kernels
fi

# The rest is opt-in (DEVICE_CHECK_EXTRA=numerics,pipeline,profile,alt or all): the default run fits 4
# minutes, so that two tries fit 15 minutes of device time with the machine's start-ups.

# 3b. The step profile, opt-in (`profile`): what a step asks of the device and how long the
# device computes in it (issue 24). The launches, host waits and wall time of the asynchronous
# step, then every kernel timed on the device (CubeCL's profiler; each kernel waited for, so that run's own wall time is not the
# step's). A step's wall time less its kernels' sum is the device waiting on the host. The
# lines go with the throughput rows (`bench table` reads only those). First of the opt-in
# stages: a minute or two, where the pipeline stage takes whatever time is left. On the GPU at
# 128 and 512 tokens (the notebook's batches, 32 and 8): attention's share grows with length.
# From an empty kernel cache (a cold machine: ~1 s of NVRTC a kernel) bf16 alone; f16's
# kernels too where the default run's are cached.
if extra profile && ! skipped profile; then
    sp_lens=$FIRST_LEN
    sp_precisions=bf16,f16
    if [[ $MODE == gpu ]]; then
        sp_lens=128,512
        [[ -z "$(ls -A "$KERNEL_CACHE" 2>/dev/null)" ]] && sp_precisions=bf16
    fi
    sp_args=(bench step-profile --arch "$FIRST_MODEL" --max-len "$sp_lens" --batch "$BATCH"
        --precision "$sp_precisions" --warmup 3 --steps 4)
    stage "step profile ${FIRST_MODEL##*/}" 150 "$BERTLAB_JSONL" "$BIN" "${sp_args[@]}"
    stage "kernel times ${FIRST_MODEL##*/}" 60 "$BERTLAB_JSONL" "$BIN" "${sp_args[@]}" --kernel-times
fi

# 4. numerics, opt-in (after the table: its 3 × 200 steps stop early, with a summary of the steps done,
# when the budget runs short).
if extra numerics && ! skipped numerics; then
    left=$(($(remaining) - 10))
    cap=$((left < 150 ? left : 150))
    stage "numerics" 160 "$RESULTS/numerics.jsonl" "$BIN" bench numerics --arch "$NUM_ARCH" \
        --ids-file "$IDS" --steps "$NUM_STEPS" "${NUM_ARGS[@]}" --max-seconds "$((cap > 20 ? cap - 15 : 5))"
fi

# 4b. Issue 22's experiment, opt-in (DEVICE_CHECK_NUMERICS_SEEDS=1,2,3,4,5): the numerics curves
# from several initialisations with bertlab's f32 control, each replayed in PyTorch (autocast +
# GradScaler, on the GPU in GPU mode) on the same weights and batches; the table of gaps from
# scripts/numerics_seeds.py. A 200-step DistilBERT-base run takes ~10 s a precision on an H200.
if [[ -n "${DEVICE_CHECK_NUMERICS_SEEDS:-}" && -n "$IDS" ]]; then
    torch_device=cpu
    [[ "$MODE" == gpu ]] && torch_device=cuda
    IFS=, read -ra seeds <<<"$DEVICE_CHECK_NUMERICS_SEEDS"
    for seed in "${seeds[@]}"; do
        if (($(remaining) < 60)); then
            say "numerics seeds: out of budget before seed $seed"
            break
        fi
        exp="$WORK/numerics-seed-$seed"
        stage "numerics seed $seed" 150 "$RESULTS/numerics-seeds.jsonl" "$BIN" bench numerics \
            --arch "$NUM_ARCH" --ids-file "$IDS" --steps "$NUM_STEPS" "${NUM_ARGS[@]}" --seed "$seed" \
            --control --export-dir "$exp"
        if ((TORCH)); then
            stage "torch numerics seed $seed" 150 "$RESULTS/numerics-seeds-torch.jsonl" python3 \
                "$ROOT/scripts/torch_numerics.py" --export-dir "$exp" --ids-file "$IDS" \
                --steps "$NUM_STEPS" "${NUM_ARGS[@]}" --precision f32,f16,bf16 --device "$torch_device"
        fi
    done
    if [[ -f "$RESULTS/numerics-seeds-torch.jsonl" ]]; then
        python3 "$ROOT/scripts/numerics_seeds.py" "$RESULTS/numerics-seeds.jsonl" \
            "$RESULTS/numerics-seeds-torch.jsonl" | tee -a "$LOG"
    fi
fi

# 4c. A user's pipeline, opt-in (`pipeline`, issue 23): `cargo xtask all` with random
# DistilBERT-base and BERT-base snapshots on the first-run stage's 9998 reviews (--subset 1 of
# them, one epoch, bf16), from empty caches, its wall time beside the plan's estimate
# (scripts/device_pipeline.py; its JSON line goes in e2e.jsonl). DEVICE_CHECK_PIPELINE and
# DEVICE_CHECK_PIPELINE_SUBSET choose another pipeline or subset. On the CPU: the tiny sizes
# on a fifth of the small sample.
if extra pipeline && ! skipped pipeline && snapshot_stage_ready pipeline; then
    if [[ -n "${BERTLAB_XTASK:-}" ]]; then
        XTASK=$(first_file "$BERTLAB_XTASK") || XTASK=""
    elif [[ $MODE == gpu && -f "$ROOT/.device/xtask.gz" ]]; then
        unpack "$ROOT/.device/xtask.gz" "$WORK/xtask" && XTASK=$WORK/xtask || XTASK=""
    else
        XTASK=$(first_file "${CARGO_TARGET_DIR:-/tmp/bertlab-target}/release/xtask" \
            "$ROOT/target/release/xtask") || XTASK=""
    fi
    pipe_args=(--pipeline "${DEVICE_CHECK_PIPELINE:-all}" --subset "${DEVICE_CHECK_PIPELINE_SUBSET:-1}"
        --epochs 1 --precision bf16)
    [[ $MODE != gpu ]] && pipe_args=(--pipeline all --subset 0.2 --epochs 1 --precision bf16)
    first_sample_on_cpu
    if [[ -z "$XTASK" ]]; then
        skip_stage pipeline "no xtask binary: .device/xtask.gz, or set BERTLAB_XTASK" "no xtask"
    elif [[ -z "$FIRST_SAMPLE" ]]; then
        skip_stage pipeline "no IMDB sample: .device/imdb-first-run" "no IMDB sample"
    else
        left=$(($(remaining) - 3))
        stage "pipeline" "$left" "$RESULTS/e2e.jsonl" python3 "$ROOT/scripts/device_pipeline.py" \
            --xtask "$XTASK" --bin "$BIN" --sample "$FIRST_SAMPLE" --tokenizer "$TOKENIZER" \
            --work "$WORK-pipeline" --mode "$MODE" --commit "$BUILD_COMMIT" \
            --max-seconds "$((left > 20 ? left - 5 : 15))" "${pipe_args[@]}"
    fi
fi

# Opt-in `attention` (issue 24): the first model's throughput rows again with attention's
# products on tensor cores (BERTLAB_ATTENTION=tensor-cores: the tile kernels on `cmma`; its rows'
# build reads `+attention-tensor-cores`), beside the default row kernels' in the same table
# (measured here too when the throughput stage was skipped, so the comparison is always one
# run's). The kernels stage checks those kernels against the reference on this GPU (its
# `products tensor-cores, ran …` cases say whether tensor cores ran).
if [[ -n "$IDS" ]] && extra attention && ! skipped attention; then
    IFS='|' read -r model lens precisions <<<"${THROUGHPUT[0]}"
    for precision in ${precisions//,/ }; do
        if skipped throughput; then
            stage "throughput $(basename "$model") $precision" 100 "$BERTLAB_JSONL" "$BIN" \
                bench train-throughput "${common[@]}" --max-len "$lens" --arch "$model" --precision "$precision"
        fi
        stage "throughput $(basename "$model") $precision (tensor-core attention)" 100 "$BERTLAB_JSONL" \
            env BERTLAB_ATTENTION=tensor-cores "$BIN" bench train-throughput "${common[@]}" \
            --max-len "$lens" --arch "$model" --precision "$precision"
    done
    print_table
fi

# Where a step's time goes (the device is synced between phases, so this run is slower).
if [[ -n "$IDS" ]] && extra profile && ! skipped profile && ! skipped throughput; then
    stage "profile ${FIRST_MODEL##*/} f16" 60 - "$BIN" bench train-throughput --ids-file "$IDS" \
        --max-len "$FIRST_LEN" --batch "$BATCH" --padding fixed --steps "$STEPS" --warmup "$WARMUP" \
        --arch "$FIRST_MODEL" --precision f16 --profile
    # The same steps with each step's logits read back before its optimizer step (as the
    # trainer did before it read them in groups): what a per-step device→host sync costs;
    # compare seq_per_s with the table's fixed rows (bf16 has no loss-scale sync either).
    stage "eager readback ${FIRST_MODEL##*/}" 60 - "$BIN" bench train-throughput --ids-file "$IDS" \
        --max-len "$FIRST_LEN" --batch "$BATCH" --padding fixed --steps "$STEPS" --warmup "$WARMUP" \
        --arch "$FIRST_MODEL" --precision f16,bf16 --eager-readback
fi

# Last, while time is left: the other build's env probe and its f16 rows of the first model
# (same plans, same seeds), then the table again.
if [[ -n "$ALT_BIN" ]] && extra alt && ! skipped alt; then
    stage "env ($ALT_LABEL build)" 60 - "$ALT_BIN" bench env
    if ! skipped throughput; then
        IFS='|' read -r model lens _ <<<"${THROUGHPUT[0]}"
        stage "throughput $(basename "$model") f16 ($ALT_LABEL build)" 100 "$BERTLAB_JSONL" \
            "$ALT_BIN" bench train-throughput "${common[@]}" --max-len "$lens" --arch "$model" --precision f16
        print_table
    fi
fi

say ""
say "==> summary ($(elapsed)s of a ${BUDGET}s budget, mode $MODE${GPU_NAME:+, $GPU_NAME})"
for s in "${STATUS[@]}"; do
    say "  $s"
done
fail=0
if [[ -f "$RESULTS/parity.jsonl" ]]; then
    pass=$(grep -c '"pass":true' "$RESULTS/parity.jsonl")
    failed=$(grep -c '"pass":false' "$RESULTS/parity.jsonl")
    say "  parity checks: $pass passed, $failed failed"
    ((failed > 0)) && fail=1
fi
if grep -q '"first-run"' "$RESULTS/e2e.jsonl" 2>/dev/null; then
    say "  first run: $(grep '"first-run"' "$RESULTS/e2e.jsonl")"
fi
if grep -q '"bench": "pipeline"' "$RESULTS/e2e.jsonl" 2>/dev/null; then
    say "  pipeline: $(grep '"bench": "pipeline"' "$RESULTS/e2e.jsonl")"
fi
# The step profile's two runs side by side: the device's share of a step's wall time.
if grep -q '"device_ms_per_step":[0-9]' "$BERTLAB_JSONL" 2>/dev/null && command -v python3 >/dev/null; then
    python3 - "$BERTLAB_JSONL" <<'PY' | tee -a "$LOG"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"step-profile"' in l]
key = lambda r: (r["model"], r.get("batch"), r.get("max_len"), r["precision"])
wall = {key(r): r for r in rows if not r.get("kernel_times") and "seconds_per_step" in r}
for r in rows:
    plain = wall.get(key(r))
    if r.get("device_ms_per_step") is None or plain is None:
        continue
    ms = 1e3 * plain["seconds_per_step"]
    print(f"  step {r['model']} {r['batch']} x {r['max_len']} {r['precision']}: {plain['launches_per_step']:g} "
          f"launches, {ms:.1f} ms a step, kernels {r['device_ms_per_step']:.1f} ms "
          f"(device busy {100 * r['device_ms_per_step'] / ms:.0f} %)")
PY
fi
if grep -q '"bench": "e2e' "$RESULTS/e2e.jsonl" 2>/dev/null; then
    # (the stage itself fails when a check fails)
    say "  end-to-end: $(grep '"e2e-summary"' "$RESULTS/e2e.jsonl" || echo 'no summary')"
fi
if [[ -f "$RESULTS/numerics.jsonl" ]]; then
    # (the stage itself fails when a curve drifts or f16 loses late steps)
    say "  numerics: $(grep '"numerics-summary"' "$RESULTS/numerics.jsonl" || echo 'no summary')"
fi
for s in "${STATUS[@]}"; do
    [[ "$s" == *FAILED* || "$s" == *"TIMED OUT"* ]] && fail=1
done
say "  results: $RESULTS"
exit $fail
