#!/usr/bin/env bash
# tenure against etcd, same machine, same run.
#
# Starts a three-member etcd (Debian's `etcd`, with its defaults) and a three-member
# `tenure serve` (release build) on loopback, each member with its own data directory in one
# temporary directory. Both fsync every write batch (neither is told otherwise), and both use
# etcd's default heartbeat (100 ms) and election timeout (1 s). Then, for each workload, it runs
# `tenure bench` against one system and then the other, alternating which goes first from round
# to round, and prints a Markdown table on stdout: throughput, p50 and p99 latency of each
# system, the throughput ratio, the peak RSS of the largest member during the rounds, and the
# CPU seconds all three members spent per 1,000 answered requests.
#
# Peak RSS is VmHWM from /proc/PID/status, reset before each round by writing 5 to
# /proc/PID/clear_refs; CPU is utime + stime from /proc/PID/stat, before and after each round.
# With ROUNDS > 1 every figure is the median over the rounds.
#
# Before the reads, each system gets KEY_SPACE keys (sequential puts), so reads find values.
# The 1-client rounds talk to the leader (found with `tenure endpoint status`), so neither
# system pays a follower's forwarding hop by luck of the election; other rounds spread
# CONNS connections over the three members.
#
# With MODE=watch it compares Watch instead (no key fill, none of the workloads above): for
# 1, 100 and 10,000 watchers on one prefix (1, 10 and 100 streams over CONNS connections to
# the three members) while 256 clients put under it, `tenure bench watch` reports the events
# per second delivered to all watchers and the put throughput, alternating the systems as
# above; every watcher must receive every acknowledged put (the table shows the missed count).
# First, the memory per idle watcher, before any load: the VmRSS of the first member with 10,000 idle watchers on
# 100 streams (`--hold`) minus its VmRSS just before, divided by 10,000, for each system.
#
# With MODE=lease it compares LeaseKeepAlive instead (no key fill): for each client count in
# LEASE_CLIENTS, `tenure bench lease-keepalive` grants LEASES leases of 60 s, then the clients
# (over CONNS connections to the three members, each client with a stream of its own and one
# renewal in flight) renew them round-robin for ROUND_SECONDS, and the leases are revoked;
# systems alternate as above. CPU per 1,000 renewals counts the members' CPU between the
# bench's "renewing" and "renewals done" lines on stderr only (not the grants and revokes);
# peak RSS covers the whole round, grants included. A renewal answered with TTL 0 shows in the
# expired column.
#
# Usage: bench/compare.sh            (from the repository root)
#        MODE=watch bench/compare.sh
#        MODE=lease bench/compare.sh
# Environment: ROUND_SECONDS (10), ROUNDS (1), KEY_SPACE (10000), VAL_SIZE (256),
#   KEY_SIZE (8), CONNS (3), BASE_PORT (41000), ETCD (etcd), TENURE (builds and uses
#   target/release/tenure), KEEP (a directory to copy the logs and raw JSON summaries into),
#   LEASES (10000) and LEASE_CLIENTS ("64 256") for MODE=lease, BENCH (the `tenure` binary
#   whose `bench watch` is the client for MODE=watch; TENURE by default), to compare servers
#   of two builds with one client.
# Everything started is killed on exit, and the temporary directory removed.

set -euo pipefail

ROUND_SECONDS=${ROUND_SECONDS:-10}
ROUNDS=${ROUNDS:-1}
KEY_SPACE=${KEY_SPACE:-10000}
VAL_SIZE=${VAL_SIZE:-256}
KEY_SIZE=${KEY_SIZE:-8}
CONNS=${CONNS:-3}
BASE_PORT=${BASE_PORT:-41000}
ETCD=${ETCD:-etcd}
MODE=${MODE:-kv}
LEASES=${LEASES:-10000}
LEASE_CLIENTS=${LEASE_CLIENTS:-64 256}

# name | tenure bench arguments (1-client rounds go to the leader)
WORKLOADS=(
    "put, 1 client|put --clients 1 --conns 1"
    "put, 64 clients|put --clients 64 --conns $CONNS"
    "put, 256 clients|put --clients 256 --conns $CONNS"
    "range linearizable, 64 clients|range --consistency l --clients 64 --conns $CONNS"
    "range serializable, 64 clients|range --consistency s --clients 64 --conns $CONNS"
)

BENCH_NAME=compare
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

need_tools "Debian: apt-get install etcd-server jq" "$ETCD" jq awk
tenure_binary
BENCH=${BENCH:-$TENURE}
work_dir

declare -A SERVER_PIDS ENDPOINTS LEADER

# start SYSTEM OFFSET: three members of SYSTEM (etcd or tenure), ports from BASE_PORT+OFFSET.
start() {
    local system=$1 offset=$2 i cluster="" eps=""
    for i in 0 1 2; do
        cluster+="${cluster:+,}m$i=http://127.0.0.1:$((BASE_PORT + offset + 10 * i + 1))"
        eps+="${eps:+,}127.0.0.1:$((BASE_PORT + offset + 10 * i))"
    done
    local cmd
    if [[ $system == etcd ]]; then cmd=("$ETCD"); else cmd=("$TENURE" serve); fi
    for i in 0 1 2; do
        local client="http://127.0.0.1:$((BASE_PORT + offset + 10 * i))"
        local peer="http://127.0.0.1:$((BASE_PORT + offset + 10 * i + 1))"
        "${cmd[@]}" --name "m$i" --data-dir "$WORK/$system-m$i" \
            --listen-client-urls "$client" --advertise-client-urls "$client" \
            --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --initial-cluster-token "compare-$system" >"$WORK/$system-m$i.log" 2>&1 &
        PIDS+=($!)
        SERVER_PIDS[$system]+="${SERVER_PIDS[$system]:+ }$!"
    done
    ENDPOINTS[$system]=$eps
}

# ready SYSTEM: waits until a write through every member succeeds, then finds the leader.
ready() {
    local system=$1 deadline=$((SECONDS + 60)) ep
    for ep in ${ENDPOINTS[$system]//,/ }; do
        until "$TENURE" bench put --total 1 --endpoints "$ep" --quiet --json 2>/dev/null \
            | jq -e '.errors_count == 0' >/dev/null; do
            ((SECONDS < deadline)) || { say "$system did not start; see its logs"; exit 1; }
            sleep 0.2
        done
    done
    LEADER[$system]=$("$TENURE" endpoint status --endpoints "${ENDPOINTS[$system]}" \
        | awk -F', ' '$5 == "true" { print $1; exit }')
    [[ -n ${LEADER[$system]} ]] || { say "$system: no leader found"; exit 1; }
    say "$system ready, leader at ${LEADER[$system]}"
}

# round SYSTEM NAME ARGS ROUND: one timed run; appends a line to RESULTS.
round() {
    local system=$1 name=$2 args=$3 n=$4 eps pid
    local pids=(${SERVER_PIDS[$system]})
    eps=${ENDPOINTS[$system]}
    [[ $args == *"--clients 1 "* ]] && eps=${LEADER[$system]}
    for pid in "${pids[@]}"; do echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || true; done
    local before after out
    before=$(cpu_ticks "${pids[@]}")
    out=$WORK/$system-$(echo "$name" | tr -c 'a-z0-9' '-')-$n.json
    # shellcheck disable=SC2086 # ARGS is a list of flags
    "$TENURE" bench $args --duration "${ROUND_SECONDS}s" --key-size "$KEY_SIZE" \
        --val-size "$VAL_SIZE" --key-space-size "$KEY_SPACE" --endpoints "$eps" \
        --json --quiet >"$out"
    after=$(cpu_ticks "${pids[@]}")
    local rss ops
    rss=$(peak_rss_kib "${pids[@]}")
    ops=$(jq '.ops_count' "$out")
    jq -r --arg sys "$system" --arg name "$name" --argjson ticks $((after - before)) \
        --argjson tps "$TICKS_PER_SECOND" --argjson rss "$rss" '
        [$name, $sys, .throughput_ops_per_second, .latency_ms.p50, .latency_ms.p99,
         ($rss / 1024), (if .ops_count > 0 then $ticks / $tps / .ops_count * 1000 else 0 end),
         .errors_count] | @tsv' "$out" >>"$RESULTS"
    say "$(printf '%-32s %-6s round %d: %s ops, %s' "$name" "$system" "$n" "$ops" \
        "$(jq -r '"\(.throughput_ops_per_second | floor)/s, p50 \(.latency_ms.p50) ms, errors \(.errors_count)"' "$out")")"
}

say "work directory $WORK"
start etcd 0
start tenure 100
ready etcd
ready tenure

# watch_round SYSTEM WATCHERS STREAMS ROUND: one timed watch run; appends a line to RESULTS.
watch_round() {
    local system=$1 watchers=$2 streams=$3 n=$4 out
    out=$WORK/$system-watch-$watchers-$n.json
    # shellcheck disable=SC2086
    "$BENCH" bench watch --watchers "$watchers" --streams "$streams" --prefix watch/ \
        --clients 256 --conns "$CONNS" --duration "${ROUND_SECONDS}s" --key-size "$KEY_SIZE" \
        --val-size "$VAL_SIZE" --key-space-size "$KEY_SPACE" \
        --endpoints "${ENDPOINTS[$system]}" --json --quiet >"$out" || true
    jq -r --arg sys "$system" --arg w "$watchers" '
        [$w, $sys, .watch.events_per_second, .throughput_ops_per_second, .watch.missed,
         .watch.disordered + .watch.failed_watchers, .errors_count] | @tsv' "$out" >>"$RESULTS"
    say "$(printf '%6s watchers %-6s round %d: ' "$watchers" "$system" "$n")$(jq -r \
        '"\(.watch.events_per_second | floor) events/s, \(.throughput_ops_per_second | floor) puts/s, missed \(.watch.missed)"' "$out")"
}

# idle_watcher_bytes SYSTEM: (VmRSS of member 0 with 10,000 idle watchers - before) / 10,000.
idle_watcher_bytes() {
    local system=$1 pid ep before after bench log
    pid=${SERVER_PIDS[$system]%% *}
    ep=${ENDPOINTS[$system]%%,*}
    log=$WORK/$system-idle.log
    before=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
    "$BENCH" bench watch --watchers 10000 --streams 100 --clients 1 --conns 1 --total 1 \
        --hold 8s --endpoints "$ep" --json --quiet >"$WORK/$system-idle.json" 2>"$log" &
    bench=$!
    local deadline=$((SECONDS + 60))
    until grep -q holding "$log"; do
        ((SECONDS < deadline)) || { say "$system: the idle watchers were never created"; exit 1; }
        sleep 0.2
    done
    sleep 3
    after=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
    wait "$bench" || true
    echo $(((after - before) * 1024 / 10000))
}

# wait_for_line LOG TEXT PID: waits until LOG has a line with TEXT; fails if PID exits first.
wait_for_line() {
    local log=$1 text=$2 pid=$3
    until grep -q "$text" "$log" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.05
    done
}

# lease_round SYSTEM CLIENTS ROUND: one timed lease-keepalive run; appends a line to RESULTS.
lease_round() {
    local system=$1 clients=$2 n=$3 out log bench before after pid rc=0
    local pids=(${SERVER_PIDS[$system]})
    out=$WORK/$system-lease-$clients-$n.json
    log=$WORK/$system-lease-$clients-$n.log
    for pid in "${pids[@]}"; do echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || true; done
    "$TENURE" bench lease-keepalive --leases "$LEASES" --ttl 60 --clients "$clients" \
        --conns "$CONNS" --duration "${ROUND_SECONDS}s" --endpoints "${ENDPOINTS[$system]}" \
        --json --quiet >"$out" 2>"$log" &
    bench=$!
    if ! wait_for_line "$log" renewing "$bench"; then
        say "$system: the leases were not granted: $(tail -1 "$log")"
        exit 1
    fi
    before=$(cpu_ticks "${pids[@]}")
    wait_for_line "$log" "renewals done" "$bench" || true
    after=$(cpu_ticks "${pids[@]}")
    wait "$bench" || rc=$?
    [[ -s $out ]] || { say "$system: no summary (exit code $rc): $(tail -1 "$log")"; exit 1; }
    local rss
    rss=$(peak_rss_kib "${pids[@]}")
    jq -r --arg sys "$system" --arg name "$clients" --argjson ticks $((after - before)) \
        --argjson tps "$TICKS_PER_SECOND" --argjson rss "$rss" '
        [$name, $sys, .throughput_ops_per_second, .latency_ms.p50, .latency_ms.p99,
         ($rss / 1024), (if .ops_count > 0 then $ticks / $tps / .ops_count * 1000 else 0 end),
         .errors_count, .lease.expired_renewals] | @tsv' "$out" >>"$RESULTS"
    say "$(printf '%4s clients %-6s round %d: ' "$clients" "$system" "$n")$(jq -r \
        '"\(.throughput_ops_per_second | floor) renewals/s, p50 \(.latency_ms.p50) ms, errors \(.errors_count), expired \(.lease.expired_renewals), revoked \(.lease.revoked)"' "$out")"
}

if [[ $MODE == lease ]]; then
    for clients in $LEASE_CLIENTS; do
        for ((n = 1; n <= ROUNDS; n++)); do
            if ((n % 2 == 1)); then order=(etcd tenure); else order=(tenure etcd); fi
            for system in "${order[@]}"; do
                lease_round "$system" "$clients" "$n"
            done
        done
    done
    median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
    figure() { awk -F'\t' -v n="$1" -v s="$2" -v c="$3" '$1 == n && $2 == s { print $c }' "$RESULTS" | median; }
    echo
    echo "| clients | etcd renewals/s | tenure renewals/s | tenure/etcd | p50 ms etcd / tenure | p99 ms etcd / tenure | peak RSS MiB etcd / tenure | CPU s per 1k renewals etcd / tenure | errors etcd / tenure | expired etcd / tenure |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for clients in $LEASE_CLIENTS; do
        declare -A f=()
        for system in etcd tenure; do
            for col in 3 4 5 6 7 8 9; do f[$system$col]=$(figure "$clients" "$system" $col); done
        done
        awk -v n="$clients" -v et="${f[etcd3]}" -v tt="${f[tenure3]}" \
            -v e50="${f[etcd4]}" -v t50="${f[tenure4]}" -v e99="${f[etcd5]}" -v t99="${f[tenure5]}" \
            -v erss="${f[etcd6]}" -v trss="${f[tenure6]}" -v ecpu="${f[etcd7]}" -v tcpu="${f[tenure7]}" \
            -v eerr="${f[etcd8]}" -v terr="${f[tenure8]}" -v eexp="${f[etcd9]}" -v texp="${f[tenure9]}" 'BEGIN {
            printf "| %d | %.0f | %.0f | %.2fx | %.2f / %.2f | %.2f / %.2f | %.0f / %.0f | %.3f / %.3f | %d / %d | %d / %d |\n",
                n, et, tt, (et > 0 ? tt / et : 0), e50, t50, e99, t99, erss, trss, ecpu, tcpu, eerr, terr, eexp, texp
        }'
    done
    echo
    echo "$ROUNDS round(s) of ${ROUND_SECONDS} s per client count and system; $LEASES leases of 60 s renewed round-robin, one stream per client, one renewal in flight; $CONNS connections; $(nproc) cores; $($ETCD --version | head -1); tenure $(git rev-parse --short HEAD 2>/dev/null || echo '?')."
    exit 0
fi

if [[ $MODE == watch ]]; then
    WATCH_RUNS=("1 1" "100 10" "10000 100")
    # Memory first, on members that have not run any load yet: after a load, freed memory the
    # allocator keeps would absorb the idle watchers.
    declare -A IDLE
    for system in etcd tenure; do
        IDLE[$system]=$(idle_watcher_bytes "$system")
        say "$system: ${IDLE[$system]} bytes per idle watcher"
    done
    for run in "${WATCH_RUNS[@]}"; do
        read -r watchers streams <<<"$run"
        for ((n = 1; n <= ROUNDS; n++)); do
            if ((n % 2 == 1)); then order=(etcd tenure); else order=(tenure etcd); fi
            for system in "${order[@]}"; do
                watch_round "$system" "$watchers" "$streams" "$n"
            done
        done
    done
    median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
    figure() { awk -F'\t' -v n="$1" -v s="$2" -v c="$3" '$1 == n && $2 == s { print $c }' "$RESULTS" | median; }
    echo
    echo "| watchers | etcd events/s | tenure events/s | tenure/etcd | puts/s etcd / tenure | missed etcd / tenure | disordered+failed etcd / tenure |"
    echo "|---:|---:|---:|---:|---:|---:|---:|"
    for run in "${WATCH_RUNS[@]}"; do
        read -r watchers _ <<<"$run"
        awk -v w="$watchers" -v ee="$(figure "$watchers" etcd 3)" -v te="$(figure "$watchers" tenure 3)" \
            -v ep="$(figure "$watchers" etcd 4)" -v tp="$(figure "$watchers" tenure 4)" \
            -v em="$(figure "$watchers" etcd 5)" -v tm="$(figure "$watchers" tenure 5)" \
            -v ed="$(figure "$watchers" etcd 6)" -v td="$(figure "$watchers" tenure 6)" 'BEGIN {
            printf "| %d | %.0f | %.0f | %.2fx | %.0f / %.0f | %d / %d | %d / %d |\n",
                w, ee, te, (ee > 0 ? te / ee : 0), ep, tp, em, tm, ed, td
        }'
    done
    echo
    echo "Memory per idle watcher (member 0's VmRSS with 10,000 idle watchers on 100 streams, minus before, / 10,000): etcd ${IDLE[etcd]} bytes, tenure ${IDLE[tenure]} bytes."
    echo
    echo "$ROUNDS round(s) of ${ROUND_SECONDS} s per run and system; 256 putting clients, $CONNS connections; $KEY_SIZE-byte keys, $VAL_SIZE-byte values; $(nproc) cores; $($ETCD --version | head -1); tenure $(git rev-parse --short HEAD 2>/dev/null || echo '?')."
    exit 0
fi

for system in etcd tenure; do
    say "$system: writing $KEY_SPACE keys"
    "$TENURE" bench put --clients 64 --conns "$CONNS" --total "$KEY_SPACE" --sequential-keys \
        --key-space-size "$KEY_SPACE" --key-size "$KEY_SIZE" --val-size "$VAL_SIZE" \
        --endpoints "${ENDPOINTS[$system]}" --quiet --json >"$WORK/$system-fill.json"
done

for entry in "${WORKLOADS[@]}"; do
    name=${entry%%|*}
    args="${entry#*|} "
    for ((n = 1; n <= ROUNDS; n++)); do
        if ((n % 2 == 1)); then order=(etcd tenure); else order=(tenure etcd); fi
        for system in "${order[@]}"; do
            round "$system" "$name" "$args" "$n"
        done
    done
done

# The table: medians over the rounds of each figure.
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
figure() { # figure NAME SYSTEM COLUMN
    awk -F'\t' -v n="$1" -v s="$2" -v c="$3" '$1 == n && $2 == s { print $c }' "$RESULTS" | median
}

echo
echo "| workload | etcd ops/s | tenure ops/s | tenure/etcd | p50 ms etcd / tenure | p99 ms etcd / tenure | peak RSS MiB etcd / tenure | CPU s per 1k ops etcd / tenure | errors etcd / tenure |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for entry in "${WORKLOADS[@]}"; do
    name=${entry%%|*}
    declare -A f=()
    for system in etcd tenure; do
        for col in 3 4 5 6 7 8; do f[$system$col]=$(figure "$name" "$system" $col); done
    done
    awk -v n="$name" -v et="${f[etcd3]}" -v tt="${f[tenure3]}" \
        -v e50="${f[etcd4]}" -v t50="${f[tenure4]}" -v e99="${f[etcd5]}" -v t99="${f[tenure5]}" \
        -v erss="${f[etcd6]}" -v trss="${f[tenure6]}" -v ecpu="${f[etcd7]}" -v tcpu="${f[tenure7]}" \
        -v eerr="${f[etcd8]}" -v terr="${f[tenure8]}" 'BEGIN {
        printf "| %s | %.0f | %.0f | %.2fx | %.2f / %.2f | %.2f / %.2f | %.0f / %.0f | %.3f / %.3f | %d / %d |\n",
            n, et, tt, (et > 0 ? tt / et : 0), e50, t50, e99, t99, erss, trss, ecpu, tcpu, eerr, terr
    }'
done
echo
echo "$ROUNDS round(s) of ${ROUND_SECONDS} s per workload and system; $KEY_SIZE-byte keys, $VAL_SIZE-byte values, $KEY_SPACE keys; $(nproc) cores; $($ETCD --version | head -1); tenure $(git rev-parse --short HEAD 2>/dev/null || echo '?')."
