#!/usr/bin/env bash
# Backups (issue 16): snapshot save, restore, and puts during a save, tenure against etcd, same
# machine, same run.
#
# For each system in turn (etcd, then tenure) it starts a single-member cluster (Debian's
# `etcd`, or `tenure serve` from the release build) on loopback with the same flags, fsync on
# (neither is told otherwise), etcd's default heartbeat, election timeout and snapshot count,
# and --quota-backend-bytes QUOTA on both (etcd's default 2 GiB would refuse a large store).
# Then, against that member:
#
#   1. load    KEYS sequential puts (`tenure bench put --sequential-keys`, 8-byte keys, values of
#              VAL_SIZE bytes, LOAD_CLIENTS clients over 4 connections): a store of
#              KEYS x VAL_SIZE bytes of values (1 GiB by default).
#   2. idle    puts from 1 client (9-byte keys, so none of the loaded keys is touched; 256-byte
#              values) for PROBE_SECONDS, no save running: p50 and p99.
#   3. save    `etcdctl snapshot save FILE`, timed, nothing else running: seconds and MB/s
#              (the file's size over the seconds).
#   4. save+puts  the 1-client puts of step 2 again, for as long, while the same save runs
#              again and again into a second file, back to back until the puts end (the first
#              starts with them), so a save runs through the whole window: the first such save's
#              seconds, how many ran, and the puts' p50 and p99.
#   5. restore the member is stopped; `etcdctl snapshot restore FILE --data-dir D` (etcd) or
#              `tenure snapshot restore FILE --data-dir D` (tenure), same name, cluster, token
#              and peer URL, timed; then the restored member is started and timed until a
#              linearizable `etcdctl get` of a loaded key answers, and its key count checked.
#
# It prints a Markdown table on stdout (tenure, etcd, ratio tenure/etcd) and the raw lines on
# stderr. Sizes are in MB (10^6 bytes) and MiB where said.
#
# Usage: bench/backup.sh            (from the repository root)
# Environment: KEYS (16384), VAL_SIZE (65536), LOAD_CLIENTS (32), PROBE_SECONDS (0: the first
#   save's time, rounded up, at least 3), QUOTA (8589934592), ETCD (etcd), ETCDCTL (etcdctl),
#   TENURE (builds and uses target/release/tenure), BASE_PORT (32379), KEEP (a directory to copy
#   the logs and raw JSON summaries into).
# Everything started is killed on exit (by pid), and the temporary directory removed.

set -euo pipefail

KEYS=${KEYS:-16384}
VAL_SIZE=${VAL_SIZE:-65536}
LOAD_CLIENTS=${LOAD_CLIENTS:-32}
PROBE_SECONDS=${PROBE_SECONDS:-0}
QUOTA=${QUOTA:-8589934592}
ETCD=${ETCD:-etcd}
ETCDCTL=${ETCDCTL:-etcdctl}
BASE_PORT=${BASE_PORT:-32379}

BENCH_NAME=backup
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

need_tools "Debian: apt-get install etcd-server etcd-client jq" "$ETCD" "$ETCDCTL" jq awk
tenure_binary
work_dir
stop() { # stop PID: kill one process we started and wait for it
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }

declare -A R # R[system/figure]

# serve SYSTEM PORT DATA-DIR LOG: starts one member in the background; sets SERVER_PID.
serve() {
    local system=$1 port=$2 dir=$3 log=$4 cmd
    if [[ $system == etcd ]]; then cmd=("$ETCD"); else cmd=("$TENURE" serve); fi
    local client=http://127.0.0.1:$port peer=http://127.0.0.1:$((port + 1))
    "${cmd[@]}" --name m0 --data-dir "$dir" \
        --listen-client-urls "$client" --advertise-client-urls "$client" \
        --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
        --initial-cluster "m0=$peer" --initial-cluster-state new \
        --initial-cluster-token "backup-$system" --quota-backend-bytes "$QUOTA" \
        >"$log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
}

ctl() { # ctl PORT ARGS...
    local port=$1
    shift
    ETCDCTL_API=3 "$ETCDCTL" --endpoints "http://127.0.0.1:$port" --command-timeout 60s "$@"
}

# ready PORT: until a linearizable get of the first loaded key answers (found or not).
ready() {
    local port=$1 deadline=$((SECONDS + 120))
    until ETCDCTL_API=3 "$ETCDCTL" --endpoints "http://127.0.0.1:$port" --command-timeout 1s \
        --dial-timeout 1s get 00000000 -w json >/dev/null 2>&1; do
        ((SECONDS < deadline)) || { say "member on $port did not answer; see its log"; exit 1; }
        sleep 0.05
    done
}

probe() { # probe PORT SECONDS OUT.json: 1-client puts on keys the load does not touch
    "$TENURE" bench put --endpoints "127.0.0.1:$1" --clients 1 --conns 1 --duration "$2s" \
        --key-size 9 --key-space-size 1000 --val-size 256 --quiet --json >"$3"
}

for system in etcd tenure; do
    if [[ $system == etcd ]]; then port=$BASE_PORT; else port=$((BASE_PORT + 10000)); fi
    say "$system: starting on $port"
    serve "$system" "$port" "$WORK/$system.data" "$WORK/$system.log"
    pid=$SERVER_PID
    ready "$port"

    say "$system: loading $KEYS keys of $VAL_SIZE bytes"
    t=$(now)
    "$TENURE" bench put --endpoints "127.0.0.1:$port" --clients "$LOAD_CLIENTS" --conns 4 \
        --total "$KEYS" --key-space-size "$KEYS" --sequential-keys --key-size 8 \
        --val-size "$VAL_SIZE" --quiet --json >"$WORK/$system-load.json"
    R[$system/load_s]=$(since "$t")
    jq -e '.errors_count == 0' "$WORK/$system-load.json" >/dev/null ||
        { say "$system: load had errors: $(jq -c .errors "$WORK/$system-load.json")"; exit 1; }
    R[$system/db_mb]=$(ctl "$port" endpoint status -w json |
        jq '.[0].Status.dbSize / 1e6 | floor')
    say "$system: loaded in ${R[$system/load_s]} s, dbSize ${R[$system/db_mb]} MB"

    say "$system: save, alone"
    t=$(now)
    ctl "$port" snapshot save "$WORK/$system-1.db" >"$WORK/$system-save1.log" 2>&1 ||
        { say "$system: save failed: $(tail -3 "$WORK/$system-save1.log")"; exit 1; }
    R[$system/save_s]=$(since "$t")
    R[$system/file_mb]=$(stat -c %s "$WORK/$system-1.db" | awk '{ printf "%.0f", $1 / 1e6 }')
    R[$system/save_mbs]=$(awk -v m="${R[$system/file_mb]}" -v s="${R[$system/save_s]}" \
        'BEGIN { printf "%.0f", m / s }')
    say "$system: saved ${R[$system/file_mb]} MB in ${R[$system/save_s]} s"

    probe_s=$PROBE_SECONDS
    ((probe_s > 0)) || probe_s=$(awk -v s="${R[$system/save_s]}" \
        'BEGIN { c = int(s) + (s > int(s)); print (c < 3 ? 3 : c) }')
    R[$system/probe_s]=$probe_s

    say "$system: puts for ${probe_s}s, no save"
    probe "$port" "$probe_s" "$WORK/$system-idle.json"

    say "$system: save while puts run for ${probe_s}s"
    probe "$port" "$probe_s" "$WORK/$system-during.json" &
    probe_pid=$!
    PIDS+=("$probe_pid")
    # Saves back to back until the puts end, so that a save runs through the whole window;
    # the first one's time is reported.
    saves=0
    while :; do
        t=$(now)
        ctl "$port" snapshot save "$WORK/$system-2.db" >"$WORK/$system-save2.log" 2>&1 ||
            { say "$system: save under puts failed: $(tail -3 "$WORK/$system-save2.log")"; exit 1; }
        s=$(since "$t")
        ((saves == 0)) && R[$system/save2_s]=$s
        saves=$((saves + 1))
        rm -f "$WORK/$system-2.db"
        kill -0 "$probe_pid" 2>/dev/null || break
    done
    R[$system/saves]=$saves
    wait "$probe_pid"
    for phase in idle during; do
        f=$WORK/$system-$phase.json
        R[$system/${phase}_p50]=$(jq '.latency_ms.p50' "$f")
        R[$system/${phase}_p99]=$(jq '.latency_ms.p99' "$f")
        R[$system/${phase}_ops]=$(jq '.ops_count' "$f")
        R[$system/${phase}_err]=$(jq '.errors_count' "$f")
    done
    stop "$pid"

    say "$system: restore"
    rport=$((port + 100))
    rpeer=http://127.0.0.1:$((rport + 1))
    t=$(now)
    if [[ $system == etcd ]]; then
        ETCDCTL_API=3 "$ETCDCTL" snapshot restore "$WORK/$system-1.db" \
            --data-dir "$WORK/$system.restored" --name m0 --initial-cluster "m0=$rpeer" \
            --initial-cluster-token "backup-$system-restored" \
            --initial-advertise-peer-urls "$rpeer" >"$WORK/$system-restore.log" 2>&1
    else
        "$TENURE" snapshot restore "$WORK/$system-1.db" \
            --data-dir "$WORK/$system.restored" --name m0 --initial-cluster "m0=$rpeer" \
            --initial-cluster-token "backup-$system-restored" \
            --initial-advertise-peer-urls "$rpeer" >"$WORK/$system-restore.log" 2>&1
    fi || { say "$system: restore failed: $(tail -3 "$WORK/$system-restore.log")"; exit 1; }
    R[$system/restore_s]=$(since "$t")

    say "$system: starting the restored member"
    client=http://127.0.0.1:$rport
    if [[ $system == etcd ]]; then cmd=("$ETCD"); else cmd=("$TENURE" serve); fi
    t=$(now)
    "${cmd[@]}" --name m0 --data-dir "$WORK/$system.restored" \
        --listen-client-urls "$client" --advertise-client-urls "$client" \
        --listen-peer-urls "$rpeer" --initial-advertise-peer-urls "$rpeer" \
        --initial-cluster "m0=$rpeer" --initial-cluster-state new \
        --initial-cluster-token "backup-$system-restored" --quota-backend-bytes "$QUOTA" \
        >"$WORK/$system-restored.log" 2>&1 &
    rpid=$!
    PIDS+=("$rpid")
    ready "$rport"
    R[$system/first_read_s]=$(since "$t")
    R[$system/keys]=$(ctl "$rport" get 0 --prefix --keys-only --limit 1 -w json | jq '.count')
    stop "$rpid"
    say "$system: restored in ${R[$system/restore_s]} s, first read after" \
        "${R[$system/first_read_s]} s, ${R[$system/keys]} keys"
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }
row() { # row LABEL FIGURE
    printf '| %s | %s | %s | %s |\n' "$1" "${R[tenure/$2]}" "${R[etcd/$2]}" \
        "$(ratio "${R[tenure/$2]}" "${R[etcd/$2]}")"
}

store_mib=$(awk -v k="$KEYS" -v v="$VAL_SIZE" 'BEGIN { printf "%.0f", k * v / 1048576 }')
echo "Single member each; $KEYS keys x $VAL_SIZE-byte values = $store_mib MiB of values;" \
    "puts probe: 1 client, 256-byte values, ${R[etcd/probe_s]} s (etcd) / ${R[tenure/probe_s]} s (tenure)."
echo
echo "| figure | tenure | etcd | tenure/etcd |"
echo "|---|---:|---:|---:|"
row "load: seconds for the $KEYS puts ($LOAD_CLIENTS clients)" load_s
row "dbSize after the load (MB)" db_mb
row "snapshot file (MB)" file_mb
row "snapshot save, alone (s)" save_s
row "snapshot save, alone (MB/s)" save_mbs
row "snapshot save while puts run (s)" save2_s
row "saves run back to back while the puts ran" saves
row "restore to a data dir (s)" restore_s
row "restored member: start to first read (s)" first_read_s
row "keys in the restored member" keys
row "put p50, no save (ms)" idle_p50
row "put p50, during a save (ms)" during_p50
row "put p99, no save (ms)" idle_p99
row "put p99, during a save (ms)" during_p99
row "puts answered, no save" idle_ops
row "puts answered, during a save" during_ops
row "put errors, no save" idle_err
row "put errors, during a save" during_err
echo
echo "tenure: ${TENURE_LABEL:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)};" \
    "etcd: $("$ETCD" --version 2>/dev/null | head -1)"
