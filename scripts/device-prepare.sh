#!/usr/bin/env bash
# device-prepare.sh — run HERE (no GPU needed) before a session on a GPU machine: puts into
# .device/ (ignored by git) everything scripts/device-check.sh needs there, and prints the exact
# command to run. What travels to the GPU machine is the repository's files plus .device/, at
# most 64 MiB, so the binaries are stripped and gzipped and only small inputs are carried:
#
#   .device/bertlab.gz        the release binary built with --features cuda (Burn's CUDA backend
#                             with kernel fusion, no autotuning: the default GPU build)
#   .device/bertlab-alt.gz    the same without fusion (--features cuda-unfused): what fusion is
#                             worth, and a fallback if it misbehaves (or, with
#                             BERTLAB_CUDA_ALT_FEATURES=cuda-tuned, the autotuning build)
#   .device/xtask.gz          `cargo xtask` (no GPU code), for the opt-in pipeline stage
#   .device/fixtures/tiny-*/  config.json, model.safetensors, expected.json (, adamw_step.json)
#   .device/imdb-ids.json     1024 IMDB train reviews tokenized (bert-base-uncased vocabulary)
#   .device/imdb-sample/      1999 IMDB reviews (the pool of --subset 0.04 --seed 42) in the Hub
#                             parquet layout, which `bertlab train --source` reads: the
#                             end-to-end stage trains on 524 of them
#   .device/imdb-first-run/   9998 IMDB reviews (the pool of --subset 0.2 --seed 42), the
#                             first-run stage's data: 6998 train, 1000 validation, 2000 test
#   .device/tokenizer/        the bert-base-uncased vocabulary and tokenizer files (from the
#                             fixtures) of the end-to-end stage's DistilBERT-base snapshot
#   .device/ptx-shim.so       scripts/ptx_version_shim.c, preloaded by device-check.sh when the
#                             machine's NVRTC is newer than its driver
#   .device/build-info.json   how the binaries were built
#
# The builds need no CUDA: cudarc is told the GPU machine's CUDA version (driver 580 = CUDA 13.0,
# CUDARC_CUDA_VERSION=13000) so the binary never looks up a newer driver symbol.
#
# Knobs: BERTLAB_SHARED (default ../shared), BERTLAB_CUDA_TARGET_DIR (default
# /tmp/bertlab-cuda-target, apart from the CPU builds' target), BERTLAB_CUDA_FEATURES (default
# "cuda"), BERTLAB_CUDA_ALT_FEATURES (default "cuda-unfused"; set it empty for
# no second binary), CUDARC_CUDA_VERSION (default 13000), JOBS (cargo -j, default 1: the build
# machine is shared).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
SHARED=${BERTLAB_SHARED:-$ROOT/../shared}
TARGET=${BERTLAB_CUDA_TARGET_DIR:-/tmp/bertlab-cuda-target}
FEATURES=${BERTLAB_CUDA_FEATURES:-cuda}
ALT_FEATURES=${BERTLAB_CUDA_ALT_FEATURES-cuda-unfused}
CUDA_VERSION=${CUDARC_CUDA_VERSION:-13000}
JOBS=${JOBS:-1}
LIMIT=$((64 * 1024 * 1024))
DEV=$ROOT/.device
# Assembled outside the repository (nothing half-made where git could pick it up), then moved in.
NEW=$(mktemp -d "${TMPDIR:-/tmp}/bertlab-device.XXXXXX")
trap 'rm -rf "$NEW"' EXIT

for need in "$SHARED/fixtures/tiny-bert/expected.json" "$SHARED/data/hf-imdb" \
    "$SHARED/models/all-MiniLM-L6-v2/tokenizer.json"; do
    if [[ ! -e "$need" ]]; then
        echo "error: $need not found (set BERTLAB_SHARED to the shared data folder)" >&2
        exit 1
    fi
done

# Build with FEATURES and write the stripped binary to OUT. --no-default-features leaves out the
# CPU backend (Flex), which a CUDA build never uses.
build() {
    local features=$1 out=$2
    echo "==> building bertlab --no-default-features --features \"$features\" (CUDARC_CUDA_VERSION=$CUDA_VERSION) in $TARGET"
    CARGO_TARGET_DIR=$TARGET CUDARC_CUDA_VERSION=$CUDA_VERSION \
        nice cargo build --release -j "$JOBS" -p bertlab --no-default-features --features "$features"
    strip -o "$out" "$TARGET/release/bertlab"
}

mkdir -p "$NEW/fixtures"
build "$FEATURES" "$NEW/bertlab"

# The binary must run on the GPU machine's (unknown, maybe older) glibc: report the newest
# symbol version it needs.
glibc=$(objdump -T "$NEW/bertlab" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1 || true)
echo "    needs ${glibc:-an unknown glibc} or newer; links: $(ldd "$NEW/bertlab" | awk '{print $1}' | tr '\n' ' ')"

# Parity fixtures: only what `bench parity` reads (the tokenizers stay here).
for name in tiny-bert tiny-distilbert tiny-bert-classifier tiny-distilbert-classifier; do
    mkdir -p "$NEW/fixtures/$name"
    for file in config.json model.safetensors expected.json adamw_step.json; do
        if [[ -f "$SHARED/fixtures/$name/$file" ]]; then
            cp "$SHARED/fixtures/$name/$file" "$NEW/fixtures/$name/"
        fi
    done
done

# The IMDB sample, tokenized here by the binary that travels (this needs no GPU), which also
# shows that the CUDA build starts on a machine without CUDA.
"$NEW/bertlab" bench make-ids --source "$SHARED/data/hf-imdb" --model "$SHARED/models/all-MiniLM-L6-v2" \
    --rows 1024 --max-len 512 --seed 0 --out "$NEW/imdb-ids.json"
"$NEW/bertlab" data sample --source "$SHARED/data/hf-imdb" --subset 0.04 --seed 42 --out "$NEW/imdb-sample"
# The first-run stage's data (issue 23): the pool of --subset 0.2, 6 998 training reviews.
"$NEW/bertlab" data sample --source "$SHARED/data/hf-imdb" --subset 0.2 --seed 42 --out "$NEW/imdb-first-run"
mkdir -p "$NEW/tokenizer"
for file in tokenizer.json tokenizer_config.json vocab.txt special_tokens_map.json; do
    cp "$SHARED/fixtures/tiny-distilbert/$file" "$NEW/tokenizer/"
done
if "$NEW/bertlab" bench env >/dev/null 2>"$NEW/env.txt"; then
    echo "    note: bench env found a GPU here"
else
    echo "    without a GPU here, bench env says: $(head -c 150 "$NEW/env.txt")…"
fi
rm -f "$NEW/env.txt"

# The PTX version shim (scripts/ptx_version_shim.c), which device-check.sh preloads only when
# the GPU machine's NVRTC is newer than its driver (e.g. PyTorch's NVRTC 13.2 on a 13.0 driver).
if command -v gcc >/dev/null 2>&1; then
    gcc -shared -fPIC -O2 -Wall -Werror -o "$NEW/ptx-shim.so" "$ROOT/scripts/ptx_version_shim.c" -ldl
else
    echo "    warning: no gcc: .device/ptx-shim.so not built (needed only on a driver older than NVRTC)"
fi

# Binaries travel gzipped (about a quarter of their size); device-check.sh unpacks them.
gzip -9 -n "$NEW/bertlab"
if [[ -n "$ALT_FEATURES" ]]; then
    build "$ALT_FEATURES" "$NEW/bertlab-alt"
    gzip -9 -n "$NEW/bertlab-alt"
fi
echo "==> building xtask in $TARGET"
CARGO_TARGET_DIR=$TARGET nice cargo build --release -j "$JOBS" -p xtask
strip -o "$NEW/xtask" "$TARGET/release/xtask"
gzip -9 -n "$NEW/xtask"

git_rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || git_rev="$git_rev+dirty"
printf '{"bertlab": "--features %s", "bertlab-alt": "%s", "cudarc_cuda_version": "%s", "git": "%s", "built": "%s", "rustc": "%s", "needs": "%s"}\n' \
    "$FEATURES" "${ALT_FEATURES:+--features $ALT_FEATURES}" "$CUDA_VERSION" "$git_rev" \
    "$(date -u '+%Y-%m-%dT%H:%M:%SZ')" "$(rustc --version)" "${glibc:-?}" >"$NEW/build-info.json"

rm -rf "$DEV"
mkdir -p "$DEV"
mv "$NEW"/* "$DEV"/

# What the device tool copies: tracked and untracked-but-not-ignored files, plus .device.
# (files deleted in the work tree but still in the index are not copied: du skips them)
repo_bytes=$( (git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null || true) |
    tail -1 | cut -f1)
dev_bytes=$(du -sb "$DEV" | cut -f1)
total=$((repo_bytes + dev_bytes))
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo
echo "==> .device/: $(mib "$dev_bytes") (binaries $(mib "$(cat "$DEV"/*.gz | wc -c)") gzipped," \
    "fixtures $(mib "$(du -sb "$DEV/fixtures" | cut -f1)"), ids $(mib "$(stat -c %s "$DEV/imdb-ids.json")")," \
    "IMDB samples $(mib "$(du -scb "$DEV/imdb-sample" "$DEV/imdb-first-run" | tail -1 | cut -f1)")," \
    "tokenizer $(mib "$(du -sb "$DEV/tokenizer" | cut -f1)"))"
echo "    repository files: $(mib "$repo_bytes"); total carried: $(mib "$total") of 64 MiB"
if ((total > LIMIT)); then
    echo "error: over the 64 MiB the device tool carries" >&2
    exit 1
fi
cat <<EOF

==> on the GPU machine (the device tool's \`run\`), in one go:
    command:   bash scripts/device-check.sh
    carry:     [".device"]
    timeout_s: 300
    (kind: leave it out — one H100 or H200; the script reads the GPU's name for the MFU peak.
    It ends within its 240 s budget, cutting the last stages, so a fix and a rerun fit in the
    15 minutes of device time.)
    The opt-in stages in a second call, e.g. DEVICE_CHECK_EXTRA=pipeline,numerics
    DEVICE_CHECK_SKIP=throughput,first-run,e2e,parity,kernels DEVICE_CHECK_BUDGET_S=400
    bash scripts/device-check.sh (timeout_s 460).
    Results come back under \$OUT: device-check.txt (everything printed), table.md,
    parity.jsonl, e2e.jsonl (with the first-run and pipeline lines), numerics.jsonl,
    throughput-bertlab.jsonl, throughput-torch.jsonl, plan.jsonl.
    Here, the same script runs on the CPU build:  DEVICE_CHECK_QUICK=1 bash scripts/device-check.sh
EOF
