# What the bench scripts share; each sources it after setting BENCH_NAME:
#
#   BENCH_NAME=compare
#   source "$(dirname "$0")/lib.sh"
#
# say MESSAGE...          a line on stderr, prefixed with the script's name
# need_tools HINT TOOL... exits 0 with a "skipped" line (and HINT, how to install) when a
#                         tool is missing: a machine without etcd skips the comparison
# tenure_binary           builds target/release/tenure unless TENURE names a binary
# work_dir                makes the temporary directory WORK and the PIDS list; on exit
#                         every process in PIDS is killed and waited for, the logs, JSON
#                         summaries and TSV results under WORK are copied into KEEP (when
#                         set, keeping their sub-directories), and WORK is removed
#                         and makes the empty results file RESULTS in it
# stop_all                kills and waits for every process in PIDS, and empties it
# cpu_ticks PID...        the sum of their utime + stime, in TICKS_PER_SECOND units
# peak_rss_kib PID...     the largest VmHWM among them

say() { echo "$BENCH_NAME: $*" >&2; }

need_tools() {
    local hint=$1 tool
    shift
    for tool in "$@"; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            say "skipped: needs $tool ($hint)"
            exit 0
        fi
    done
}

tenure_binary() {
    if [[ -z "${TENURE:-}" ]]; then
        say "building the release binary"
        cargo build --release --quiet -p tenure-server --bin tenure
        TENURE=$PWD/target/release/tenure
    fi
}

stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}

bench_cleanup() {
    stop_all
    if [[ -n "${KEEP:-}" ]]; then
        mkdir -p "$KEEP"
        (cd "$WORK" && find . \( -name '*.log' -o -name '*.json' -o -name '*.tsv' \) \
            -exec cp --parents {} "$KEEP"/ \;) 2>/dev/null || true
    fi
    rm -rf "$WORK"
}

work_dir() {
    WORK=$(mktemp -d -t "tenure-$BENCH_NAME-XXXXXX")
    PIDS=()
    RESULTS=$WORK/results.tsv
    : >"$RESULTS"
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

TICKS_PER_SECOND=$(getconf CLK_TCK)

cpu_ticks() {
    local pid total=0
    for pid in "$@"; do
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
    done
    echo "$total"
}

peak_rss_kib() {
    local pid max=0 kib
    for pid in "$@"; do
        kib=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")
        ((kib > max)) && max=$kib
    done
    echo "$max"
}
