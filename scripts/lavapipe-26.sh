#!/usr/bin/env bash
# Mesa 26's lavapipe (a Vulkan driver on the CPU) in a private folder, nothing installed: the
# Vulkan driver whose cooperative matrices (VK_KHR_cooperative_matrix: 8 × 8 × 8, f16 into f32)
# run the tensor-core attention kernels' `cmma` products without a GPU. Debian 12's lavapipe
# (Mesa 22.3, what .ci/run installs) has none, nor has Mesa 25.0's.
#
#   runner=$(bash scripts/lavapipe-26.sh)     # fetched once (~60 MB), then reused
#   "$runner" target/release/bertlab bench kernels     # a bertlab built --features vulkan
#
# Debian 13's packages (trixie, and trixie-backports for Mesa 26) with their dependencies,
# resolved from the archive's package lists, unpacked into $BERTLAB_LAVAPIPE_DIR (default
# ~/.cache/bertlab/lavapipe-26). The runner starts a program under that folder's C library
# and loader (trixie's glibc is newer than the host's), with only that lavapipe visible.
# Needs curl, xz and dpkg-deb (Debian, Ubuntu). Prints the runner's path.
set -euo pipefail
DIR=${BERTLAB_LAVAPIPE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/bertlab/lavapipe-26}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
RUNNER=$DIR/run

if [[ -x "$RUNNER" && -f "$DIR/ready" ]]; then
    echo "$RUNNER"
    exit 0
fi
for tool in curl xz dpkg-deb; do
    command -v "$tool" >/dev/null || { echo "error: lavapipe-26.sh needs $tool" >&2; exit 1; }
done
rm -rf "$DIR"
mkdir -p "$DIR/debs" "$DIR/lists"
echo "==> Mesa 26 lavapipe into $DIR (Debian trixie and trixie-backports)" >&2
for suite in trixie trixie-backports; do
    curl -fsS -m 300 -o "$DIR/lists/$suite.xz" "$MIRROR/dists/$suite/main/binary-amd64/Packages.xz"
done

# Each package's file and dependencies: backports first for the packages it has (Mesa and
# what Mesa 26 needs newer), trixie for the rest; the first alternative of each dependency.
index() {
    xz -dc "$1" | awk -v tag="$2" '
        /^Package: / { p = $2 }
        /^Provides: / { provides = substr($0, 11) }
        /^(Pre-)?Depends: / { sub(/^(Pre-)?Depends: /, ""); deps = deps (deps ? ", " : "") $0 }
        /^Filename: / { file = $2 }
        /^$/ {
            if (p != "") print tag "\t" p "\t" file "\t" deps "\t" provides
            p = ""; deps = ""; file = ""; provides = ""
        }'
}
{ index "$DIR/lists/trixie-backports.xz" 0; index "$DIR/lists/trixie.xz" 1; } | sort -t$'\t' -k1,1n -s > "$DIR/lists/index.tsv"

declare -A FILE DEPS PROVIDER
while IFS=$'\t' read -r _ name file deps provides; do
    [[ -n "${FILE[$name]:-}" ]] && continue  # backports' entry came first
    FILE[$name]=$file
    DEPS[$name]=$deps
    IFS=',' read -ra virtuals <<< "$provides"
    for v in "${virtuals[@]}"; do
        v=${v# }; v=${v%% *}
        [[ -n "$v" && -z "${PROVIDER[$v]:-}" ]] && PROVIDER[$v]=$name
    done
done < "$DIR/lists/index.tsv"

declare -A SEEN
todo=(mesa-vulkan-drivers libvulkan1 libc6)
while ((${#todo[@]})); do
    name=${todo[-1]}
    unset 'todo[-1]'
    [[ -n "${SEEN[$name]:-}" ]] && continue
    if [[ -z "${FILE[$name]:-}" ]]; then
        provider=${PROVIDER[$name]:-}
        [[ -z "$provider" ]] && { echo "error: no Debian package provides $name" >&2; exit 1; }
        SEEN[$name]=1
        name=$provider
        [[ -n "${SEEN[$name]:-}" ]] && continue
    fi
    SEEN[$name]=1
    echo "${FILE[$name]}" >> "$DIR/lists/files"
    IFS=',' read -ra deps <<< "${DEPS[$name]}"
    for d in "${deps[@]}"; do
        d=${d%%|*}; d=${d# }; d=${d%% *}; d=${d%%:*}
        [[ -n "$d" && -z "${SEEN[$d]:-}" ]] && todo+=("$d")
    done
done

while read -r file; do
    curl -fsS -m 600 -o "$DIR/debs/${file##*/}" "$MIRROR/$file"
    dpkg-deb -x "$DIR/debs/${file##*/}" "$DIR/root"
done < "$DIR/lists/files"
echo "    $(wc -l < "$DIR/lists/files") packages, $(du -sh "$DIR/debs" | cut -f1)" >&2

lib=$DIR/root/usr/lib/x86_64-linux-gnu
[[ -f "$lib/libvulkan_lvp.so" ]] || { echo "error: no libvulkan_lvp.so in the unpacked Mesa" >&2; exit 1; }
sed "s#\"library_path\": *\"[^\"]*\"#\"library_path\": \"$lib/libvulkan_lvp.so\"#" \
    "$DIR/root/usr/share/vulkan/icd.d/lvp_icd.json" > "$DIR/lvp_icd.json"
cat > "$RUNNER" <<EOF
#!/bin/sh
# Runs a program with Mesa 26's lavapipe only, under the C library it was built for.
VK_DRIVER_FILES="$DIR/lvp_icd.json" VK_ICD_FILENAMES="$DIR/lvp_icd.json" \\
    exec "$DIR/root/usr/lib64/ld-linux-x86-64.so.2" --library-path "$lib" "\$@"
EOF
chmod +x "$RUNNER"
rm -rf "$DIR/debs"
touch "$DIR/ready"
echo "$RUNNER"
