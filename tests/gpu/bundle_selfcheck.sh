#!/usr/bin/env bash
# bundle_selfcheck: shows, on a Debian machine that has Sluice's -dev packages installed, that
# scripts/gpu-check's private prefix (from scripts/gpu-bundle) is enough to build and run the
# whole service: in a private mount namespace the machine's own headers, .pc files, CMake
# configs and programs of every bundled package are hidden (bind-mounted over with /dev/null or
# an empty tmpfs), then gpu-check runs in a clean environment (env -i) with the stack stage on
# the CPU backend and the tiny synthetic shape. The mounts vanish with the namespace; nothing
# outside it changes. Needs root (unshare -m) and scripts/gpu-bundle run first.
#
#   sudo tests/gpu/bundle_selfcheck.sh [OUT_DIR]     (default /tmp/sluice-bundle-check)
#
# Afterwards it checks that the built programs load the bundled libraries (ldd, clean env).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SCRATCH=${1:-/tmp/sluice-bundle-check}
MANIFEST=$ROOT/.gpu-bundle/MANIFEST
[ -f "$MANIFEST" ] || { echo "run scripts/gpu-bundle first" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "needs root (unshare -m)" >&2; exit 1; }
# the build directory is kept between runs (incremental); output and prefix start afresh
rm -rf "$SCRATCH/out" "$SCRATCH/prefix" && mkdir -p "$SCRATCH"
PY=${GPU_CHECK_PYTHON:-$ROOT/.venv/bin/python} # a python3 with numpy

# what to hide: the development and program files of the bundled packages installed here
hide=()
while read -r deb; do
    pkg=${deb%%_*}
    dpkg -s "$pkg" >/dev/null 2>&1 || continue
    while read -r f; do
        case "$f" in
        /usr/include/* | */pkgconfig/*.pc | */cmake/* | /usr/bin/*) ;;
        *) continue ;;
        esac
        [ -f "$f" ] && hide+=("$f")
    done < <(dpkg -L "$pkg")
done < <(grep -v '^#' "$MANIFEST")
printf '%s\n' "${hide[@]}" >"$SCRATCH/hidden.txt"
echo "hiding ${#hide[@]} files of the bundled packages (list: $SCRATCH/hidden.txt)"

unshare -m --propagation private bash -s "$ROOT" "$SCRATCH" "$PY" <<'INNER'
set -euo pipefail
ROOT=$1 SCRATCH=$2 PY=$3
while read -r f; do
    mount --bind /dev/null "$f"
done <"$SCRATCH/hidden.txt"
# sanity: the machine's own copies are gone
! pkg-config --exists libh2o 2>/dev/null || { echo "libh2o still visible"; exit 1; }
[ ! -s /usr/include/h2o.h ] || { echo "/usr/include/h2o.h still visible"; exit 1; }
cd "$ROOT"
env -i PATH=/usr/local/cuda/bin:/usr/bin:/bin HOME="$SCRATCH" OUT="$SCRATCH/out" \
    GPU_CHECK_BUILD="$SCRATCH/build" GPU_CHECK_PREFIX="$SCRATCH/prefix" \
    GPU_CHECK_MODEL_DIR="$SCRATCH/models" GPU_CHECK_STAGES=stack GPU_CHECK_STACK_BACKEND=cpu \
    GPU_CHECK_STACK_SHAPE=tiny GPU_CHECK_STACK_RUNS="q4_k q4_1 f16" GPU_CHECK_STACK_LEVELS=1,4 \
    GPU_CHECK_STACK_PORT=16391 GPU_CHECK_BUDGET_S=1500 GPU_CHECK_PYTHON="$PY" scripts/gpu-check
INNER
echo "== libraries of the built programs (clean environment)"
for b in worker/service/sluice-worker gateway/sluice-gateway loadtest/sluice-load; do
    env -i PATH=/usr/bin:/bin ldd "$SCRATCH/build/$b" |
        grep -E "nng|h2o|uv|hiredis|cyaml|yaml|jansson|protobuf|curl|ssl" | sed "s|^|$b: |"
done
