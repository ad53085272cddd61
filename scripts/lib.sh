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

# elapsed START_MS: seconds since START_MS with one decimal.
elapsed() {
    local d=$(($(now_ms) - $1))
    printf '%d.%d' $((d / 1000)) $(((d % 1000) / 100))
}

# nproc_or_2: CPU count for -j.
nproc_or_2() { nproc 2>/dev/null || echo 2; }

# The bundled model: its path and where its checksum is recorded.
SLUICE_MODEL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
SLUICE_MODEL="$ROOT/models/$SLUICE_MODEL_FILE"
SLUICE_MODEL_SUMS="$ROOT/models.sha256"
