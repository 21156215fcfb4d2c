#!/usr/bin/env bash
# Build mmcv 2.1.0 with its compiled ops (mmcv._ext) for the torch installed in a virtualenv, keep the
# wheel in a cache, and install it there. Usage: tools/build_mmcv.sh [PYTHON]  (default .venv/bin/python)
#
# Why a script and not `pip install mmcv==2.1.0`: PyPI has only mmcv's source, mmdet 3.3.0 needs mmcv < 2.2
# with ops (mmcv-lite lacks them), and building that source under a current toolchain fails twice:
#   1. setup.py imports pkg_resources, which setuptools >= 81 no longer ships -> build with setuptools<81,
#      without build isolation (the build also needs the installed torch);
#   2. setup.py hard-codes -std=c++17, but torch >= 2.10 headers need C++20 -> patch it to -std=c++20.
# pip does not cache wheels built from a patched local folder, so the wheel is kept in
# $SPARSEVISION_CACHE/wheels/mmcv-2.1.0-torch<version>-<cpu|cuda>/. The first (CPU) build compiles 77
# files: ~30 CPU-minutes and ~1.5 GB of memory with MAX_JOBS=2 (the default; bounds the parallel compilers),
# ~15 minutes on 2 idle cores; later runs (any virtualenv with the same torch and Python) take seconds.
set -euo pipefail

MMCV_VERSION=2.1.0
PYTHON=${1:-.venv/bin/python}

die() {
    echo "tools/build_mmcv.sh: $*" >&2
    exit 1
}

[ -x "$PYTHON" ] || die "no Python at '$PYTHON'; run 'make install' first (or pass the virtualenv's python)"
TORCH_VERSION=$("$PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null) ||
    die "torch is not importable by $PYTHON; run 'make install' first"

if "$PYTHON" - "$MMCV_VERSION" <<'EOF' 2>/dev/null; then
import importlib.metadata, sys
assert importlib.metadata.version("mmcv") == sys.argv[1]
import mmcv._ext  # noqa: F401  (the compiled ops; mmcv-lite has no _ext)
EOF
    echo "mmcv $MMCV_VERSION with ops is already installed for torch $TORCH_VERSION"
    exit 0
fi

CXX=${CXX:-c++}
command -v "$CXX" >/dev/null ||
    die "no C++ compiler '$CXX': install g++ >= 10 (Debian: apt-get install g++) or set CXX"
echo 'int main() { return 0; }' | "$CXX" -std=c++20 -x c++ - -o /dev/null 2>/dev/null ||
    die "'$CXX' cannot compile C++20, which torch $TORCH_VERSION's headers need: install g++ >= 10"

# One wheel per torch build (its ABI) and Python; the wheel name carries the Python tag.
CUDA_TAG=$("$PYTHON" -c 'import os, torch
print("cuda" if torch.cuda.is_available() or os.getenv("FORCE_CUDA") == "1" else "cpu")')
if [ "$CUDA_TAG" = cuda ] && ! command -v nvcc >/dev/null &&
    ! command -v "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" >/dev/null; then
    die "a GPU is visible, so mmcv builds CUDA ops, but nvcc is missing: install the CUDA toolkit of \
torch's CUDA ($("$PYTHON" -c 'import torch; print(torch.version.cuda)')) and set CUDA_HOME, or build \
CPU-only ops with CUDA_VISIBLE_DEVICES= (then train mmdet models on the CPU)"
fi
if [ "${FORCE_CUDA:-0}" = 1 ] && [ -z "${TORCH_CUDA_ARCH_LIST:-}" ] &&
    ! "$PYTHON" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
    die "FORCE_CUDA=1 without a visible GPU: name the GPU architectures, e.g. TORCH_CUDA_ARCH_LIST=9.0"
fi
CACHE_ROOT=${SPARSEVISION_CACHE:-$HOME/.cache/sparsevision}
WHEEL_DIR="$CACHE_ROOT/wheels/mmcv-$MMCV_VERSION-torch$TORCH_VERSION-$CUDA_TAG"
PY_TAG=$("$PYTHON" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
WHEEL=$(ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-"$PY_TAG"-*.whl 2>/dev/null | head -n 1 || true)

if [ -z "$WHEEL" ]; then
    echo "building mmcv $MMCV_VERSION with ops for torch $TORCH_VERSION ($CUDA_TAG): 15+ minutes"
    "$PYTHON" -m pip install -q 'setuptools<81' wheel ninja
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
    "$PYTHON" -m pip download -q --no-deps --no-binary :all: --no-build-isolation \
        "mmcv==$MMCV_VERSION" -d "$WORK"
    tar -xzf "$WORK/mmcv-$MMCV_VERSION.tar.gz" -C "$WORK"
    SRC="$WORK/mmcv-$MMCV_VERSION"
    grep -q -- "-std=c++17" "$SRC/setup.py" ||
        die "mmcv's setup.py no longer has -std=c++17; update this script"
    sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
    # Python's CFLAGS carry -g: debug info for the ATen templates slows the build and bloats _ext.so.
    # Setting CFLAGS replaces them (or appends, by setuptools version), so it repeats the optimisation flags.
    CFLAGS="${CFLAGS:--DNDEBUG -fwrapv -O3 -Wall} -g0" MAX_JOBS=${MAX_JOBS:-2} MMCV_WITH_OPS=1 \
        "$PYTHON" -m pip wheel --no-deps --no-build-isolation -w "$WORK/dist" "$SRC"
    mkdir -p "$WHEEL_DIR"
    # Move in the finished wheel only, so an interrupted build never leaves a broken wheel in the cache.
    BUILT=$(ls "$WORK"/dist/mmcv-*.whl)
    mv "$BUILT" "$WHEEL_DIR.tmp-$$.whl"
    mv "$WHEEL_DIR.tmp-$$.whl" "$WHEEL_DIR/$(basename "$BUILT")"
    WHEEL="$WHEEL_DIR/$(basename "$BUILT")"
else
    echo "using the cached wheel $WHEEL"
fi

# --no-deps: mmcv's requirements (mmengine, addict, yapf, ...) come with the sparsevision[mmdet] extra.
"$PYTHON" -m pip install -q --no-deps --force-reinstall "$WHEEL"
echo "installed $(basename "$WHEEL")"
