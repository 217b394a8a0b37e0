#!/usr/bin/env bash
# What a first run costs a GPU build, counted without a GPU (issue 23): one `bertlab train` of
# one epoch and a `bertlab eval` of its best/, with the wgpu build on Mesa's lavapipe (a Vulkan
# driver on the CPU), from an empty kernel cache and an empty autotune cache, CubeCL's
# compilation log on. Prints one JSON line per binary: the kernels compiled (each a JIT
# compilation; with autotuning, every candidate of every tuned shape too) by each process,
# the distinct ones over both (what a kernel cache, on by default in the CUDA builds, would
# have spared the second), the batch shapes the run met (from its record, when the binary
# keeps them) and the seconds.
#
#   scripts/first-run-cost.sh BIN [OTHER_BIN ...]
#
# BIN is a wgpu build (`cargo build --release -p bertlab --no-default-features --features wgpu`,
# CI copies it to $CARGO_TARGET_DIR/wgpu/bertlab). Each OTHER_BIN (the wgpu build of an older
# commit, or the same commit's `wgpu-tuned` and `wgpu-unfused` builds) is run the same way, one
# after the other, for ratios in the same command. FIRST_RUN_LABELS names them (a comma list;
# default new, baseline, baseline2, ...). Needs ../shared (or BERTLAB_SHARED) and
# mesa-vulkan-drivers. The run: the tiny DistilBERT fixture, IMDB subset 0.01 (350 train, 50
# validation, 100 test reviews), max_len 128, batch 16, default padding, f32. FIRST_RUN_EXTRA
# adds flags to every train (e.g. `--pad-multiple 8 --eval-batch 64`, the settings before
# issue 23).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 1 ]] || { sed -n 2,22p "$0" >&2; exit 2; }
SHARED="${BERTLAB_SHARED:-$(cd .. && pwd)/shared}"
[[ -d "$SHARED/fixtures/tiny-distilbert-classifier" ]] || { echo "error: $SHARED has no fixtures (set BERTLAB_SHARED)" >&2; exit 1; }
icd=$(compgen -G '/usr/share/vulkan/icd.d/lvp_icd.*.json' | head -1 || true)
[[ -n "$icd" ]] || { echo "error: lavapipe is not installed (apt-get install mesa-vulkan-drivers)" >&2; exit 1; }
export VK_DRIVER_FILES="$icd" VK_ICD_FILENAMES="$icd" HF_HUB_OFFLINE=1
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$WORK}"

measure() {
    local label=$1 bin=$2 dir="$WORK/$1"
    mkdir -p "$dir/cwd" "$dir/home"
    # Empty caches: no kernel cache, autotune results in this run's own folder; a cubecl.toml
    # in the working directory turns the compilation log on (one line per kernel compiled).
    cat >"$dir/cwd/cubecl.toml" <<EOF
[compilation]
logger = { file = "$dir/compile.log", level = "full" }
[autotune]
cache = { file = "$dir/autotune" }
EOF
    local t0=$SECONDS
    # shellcheck disable=SC2086
    (cd "$dir/cwd" && HOME="$dir/home" XDG_CACHE_HOME="$dir/home/.cache" BERTLAB_KERNEL_CACHE=off \
        "$bin" train --model "$SHARED/fixtures/tiny-distilbert-classifier" --source "$SHARED/data/hf-imdb" \
        --subset 0.01 --seed 42 --epochs 1 --lr 1e-3 --batch 16 --max-len 128 --quiet \
        --out "$dir/run" ${FIRST_RUN_EXTRA:-} >"$dir/train.out" 2>&1) || { cat "$dir/train.out" >&2; exit 1; }
    local train_s=$((SECONDS - t0)) train_kernels
    train_kernels=$(grep -c '^\[START_KERNEL_COMPILATION\]' "$dir/compile.log" 2>/dev/null || true)
    (cd "$dir/cwd" && HOME="$dir/home" XDG_CACHE_HOME="$dir/home/.cache" BERTLAB_KERNEL_CACHE=off \
        "$bin" eval --model "$dir/run/best" --json >"$dir/eval.out" 2>&1) || { cat "$dir/eval.out" >&2; exit 1; }
    local total
    total=$(grep -c '^\[START_KERNEL_COMPILATION\]' "$dir/compile.log" 2>/dev/null || true)
    python3 - "$label" "$bin" "$dir/run/record.json" "$train_kernels" "$total" "$train_s" "$((SECONDS - t0))" "${FIRST_RUN_EXTRA:-}" "$dir/compile.log" <<'PY'
import json, sys
label, binary, record, train_k, total_k, train_s, total_s, extra, log = sys.argv[1:]
r = json.load(open(record))
shapes = r.get("shapes")
# Each compilation's kernel id (type, launch configuration, compile-time arguments): the
# distinct ones are what a kernel cache keeps, all a second process would not compile again.
ids = [b.split("\nsource:")[0] for b in open(log).read().split("[START_KERNEL_COMPILATION]")[1:]]
print(json.dumps({
    "label": label, "binary": binary, "extra_flags": extra,
    "pad_multiple": r["spec"].get("pad_multiple"), "eval_batch": r["spec"].get("eval_batch"),
    "train_kernels_compiled": int(train_k), "eval_kernels_compiled": int(total_k) - int(train_k),
    "distinct_kernels_compiled": len(set(ids)),
    "shapes": shapes, "shape_count": None if shapes is None else len(shapes),
    "train_seconds": int(train_s), "total_seconds": int(total_s),
    "test_accuracy": r["test"]["accuracy"],
}))
PY
}

IFS=, read -r -a labels <<<"${FIRST_RUN_LABELS:-new,baseline}"
for i in $(seq 1 $#); do
    label=${labels[$((i - 1))]:-baseline$((i - 1))}
    measure "$label" "${!i}"
done
exit 0
