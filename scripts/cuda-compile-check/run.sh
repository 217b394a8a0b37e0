#!/usr/bin/env bash
# Every CubeCL kernel of bertlab-models compiled for CUDA without a GPU: the kernels' CUDA C++
# from CubeCL's own CUDA compiler (src/main.rs, on any Vulkan device, lavapipe included), then
# NVRTC from NVIDIA's PyPI wheels for each architecture (nvrtc.py). Catches a kernel that would
# not compile on a GPU machine before a scarce GPU run finds it; says nothing of its results.
#
#   bash scripts/cuda-compile-check/run.sh [ARCH ...]       # default: sm_75 sm_80 sm_90
#
# Needs: cargo, python3 with pip (the wheels, ~130 MB, are fetched once into
# $BERTLAB_NVRTC_DIR, default ~/.cache/bertlab/nvrtc-12), a Vulkan driver (lavapipe:
# apt-get install mesa-vulkan-drivers). Builds into $CARGO_TARGET_DIR/cuda-compile-check
# (default target/cuda-compile-check).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ARCHS=("$@")
[[ ${#ARCHS[@]} -eq 0 ]] && ARCHS=(sm_75 sm_80 sm_90)
NVRTC=${BERTLAB_NVRTC_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/bertlab/nvrtc-12}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/cuda-compile-check

if [[ ! -f "$NVRTC/nvidia/cuda_nvrtc/lib/libnvrtc.so.12" || ! -f "$NVRTC/nvidia/cuda_nvcc/include/crt/mma.h" ]]; then
    echo "==> fetching NVRTC and the CUDA headers (PyPI: nvidia-cuda-{nvrtc,runtime,nvcc}-cu12 12.9) into $NVRTC"
    wheels=$(mktemp -d)
    python3 -m pip download --quiet --no-deps -d "$wheels" \
        nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-runtime-cu12==12.9.79 nvidia-cuda-nvcc-cu12==12.9.86
    mkdir -p "$NVRTC"
    for w in "$wheels"/*.whl; do
        python3 -m zipfile -e "$w" "$NVRTC"
    done
    rm -rf "$wheels"
fi

echo "==> the kernels' CUDA sources (CubeCL's CUDA compiler)"
sources=$(mktemp -d)
trap 'rm -rf "$sources"' EXIT
# (The Vulkan loader complains without a runtime dir.)
if [[ -z "${XDG_RUNTIME_DIR:-}" ]]; then export XDG_RUNTIME_DIR=$sources; fi
(cd "$HERE" && CARGO_TARGET_DIR=$TARGET cargo run --release --quiet -- "$sources")

echo "==> NVRTC, per architecture"
python3 "$HERE/nvrtc.py" --nvrtc "$NVRTC" "$sources" "${ARCHS[@]}"
