#!/usr/bin/env bash
# Membership changes (issue 15): time for a new member to become a voter with 1 GiB of data,
# and the throughput dip while single-member changes run under a steady put load, tenure
# against etcd, same machine, same run, rounds alternating between the two.
#
# Every cluster is started the same way for both systems (Debian's `etcd` or `tenure serve`
# from the release build): 3 members on loopback with the same flags, fsync on (neither is told
# otherwise), etcd's default heartbeat and election timeout, --snapshot-count SNAPSHOT_COUNT and
# --quota-backend-bytes QUOTA on both. Every membership call is made with the same etcdctl
# (3.4.23), the same way against both. Each round, for each system (the order alternates:
# etcd first in odd rounds, tenure first in even ones):
#
#   1. voter   a new 3-member cluster is loaded with KEYS sequential puts of VAL_SIZE bytes
#              (`tenure bench put --sequential-keys`, LOAD_CLIENTS clients over the three
#              members): 1 GiB of values by default. SNAPSHOT_COUNT (15000) is below KEYS, so
#              both leaders have taken a snapshot and compacted their log before the new member
#              comes: it must receive a snapshot and the log after it, as a member added to a
#              long-running cluster would. Then, the clock started:
#                add       `etcdctl member add m4 --learner --peer-urls URL` answered;
#                start     m4 started with `--initial-cluster-state existing`;
#                promote   `etcdctl member promote ID` retried every PROMOTE_RETRY seconds until
#                          it is accepted (both refuse to promote a learner that is not in sync
#                          with the leader): add→promotable is the clock at the accepted
#                          promote's start, promote latency that call's own time;
#                voter     `etcdctl endpoint status` on m4 says it is no longer a learner.
#              Bytes: the new member's data directory once it is a voter (`du`), and the
#              snapshot size the leader logged when it sent it (tenure: "sent snapshot ...: N
#              bytes"; etcd 3.4: "wrote database snapshot out [total bytes: N]"). (rchar in
#              /proc/PID/io is no measure: Go reads sockets with read(2), which it counts,
#              Rust's std with recv(2), which it does not.)
#              With LEARNER_AT_INDEX=N the learner is added while the load still runs, as soon
#              as the leader has applied index N (15030: while the leaders write their first
#              snapshot), and the load's time and dbSize are taken when it ends. Leader changes
#              after the first election are counted from the members' logs.
#              With DIRECT=1 (the default) then also the direct path: `member add m5` as a voter,
#              m5 started, and timed until its applied index reaches the leader's index at the
#              add (etcd's `endpoint status` raftAppliedIndex; for etcd 3.4, which lacks that
#              field, raftIndex).
#   2. dip     a new, empty 3-member cluster; `tenure bench put` runs DIP_SECONDS (30) with
#              DIP_CLIENTS clients on the three members (256-byte values) and reports answers
#              per INTERVAL (100ms); meanwhile, at fixed times, single-member changes:
#                learner-add  `member add m4 --learner` (then m4 started),
#                promote      `member promote m4` (retried until accepted),
#                remove       `member remove m4` (4 voters to 3),
#                voter-add    `member add m5` (3 voters to 4, then m5 started),
#                remove2      `member remove m5`.
#              For each: the time the etcdctl call took; the mean throughput over the 3 s
#              before it (its baseline) and over the 1 s from its start, and their ratio; the
#              lowest 100 ms interval from its start to 1 s after it ended, next to the lowest
#              of the 3 s before (how low the throughput dips with no change: on a shared
#              machine, well below the baseline).
#
# The figures of every round go to stderr as they come, and a Markdown table of the medians
# (tenure, etcd, ratio tenure/etcd, and every round's figure) to stdout at the end.
#
# Usage: bench/membership.sh            (from the repository root)
# Environment: ROUNDS (3), KEYS (16384), VAL_SIZE (65536), LOAD_CLIENTS (32), SNAPSHOT_COUNT
#   (15000), QUOTA (8589934592), DIRECT (1), DIP_SECONDS (30), DIP_CLIENTS (16), INTERVAL
#   (100ms), PROMOTE_RETRY (0.2), SYSTEMS ("etcd tenure"), LEARNER_AT_INDEX (unset), ETCD
#   (etcd), ETCDCTL (etcdctl), TENURE (builds and uses target/release/tenure), BASE_PORT
#   (23400), KEEP (a directory to copy the logs, timelines and raw figures into).
# Without etcd the etcd half is skipped with a note. Everything started is killed on exit (by
# pid) and the data directories (under /tmp/tenure-membership-*) removed.

set -euo pipefail

ROUNDS=${ROUNDS:-3}
KEYS=${KEYS:-16384}
VAL_SIZE=${VAL_SIZE:-65536}
LOAD_CLIENTS=${LOAD_CLIENTS:-32}
SNAPSHOT_COUNT=${SNAPSHOT_COUNT:-15000}
QUOTA=${QUOTA:-8589934592}
DIRECT=${DIRECT:-1}
DIP_SECONDS=${DIP_SECONDS:-30}
DIP_CLIENTS=${DIP_CLIENTS:-16}
INTERVAL=${INTERVAL:-100ms}
PROMOTE_RETRY=${PROMOTE_RETRY:-0.2}
SYSTEMS=${SYSTEMS:-etcd tenure}
LEARNER_AT_INDEX=${LEARNER_AT_INDEX:-}
ETCD=${ETCD:-etcd}
ETCDCTL=${ETCDCTL:-etcdctl}
BASE_PORT=${BASE_PORT:-23400}

BENCH_NAME=membership
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

need_tools "Debian: apt-get install etcd-client jq" "$ETCDCTL" jq awk du
if [[ $SYSTEMS == *etcd* ]] && ! command -v "$ETCD" >/dev/null 2>&1; then
    say "NOTE: $ETCD not found: the etcd half is skipped (Debian: apt-get install etcd-server)"
    SYSTEMS=tenure
fi
tenure_binary
work_dir

now() { date +%s.%N; }
now_ms() { date +%s%3N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
record() { # record SYSTEM ROUND FIGURE VALUE
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"
    say "$1 round $2: $3 = $4"
}

# Ports: member i (1-based) of a system's cluster in a round listens for clients on
# base + 10 i and for peers on base + 10 i + 1; each (system, round, phase) has its own base.
port_base() { # port_base SYSTEM ROUND PHASE(0|1)
    local s=0
    [[ $1 == tenure ]] && s=1
    echo $((BASE_PORT + s * 400 + $2 * 100 + $3 * 50))
}
client_url() { echo "http://127.0.0.1:$(($1 + 10 * $2))"; }
peer_url() { echo "http://127.0.0.1:$(($1 + 10 * $2 + 1))"; }

declare -A MPID # MPID[name]: the pid of a member of the current cluster

# start_member SYSTEM BASE I STATE INITIAL-CLUSTER TOKEN DIR
start_member() {
    local system=$1 base=$2 i=$3 state=$4 initial=$5 token=$6 dir=$7 cmd
    if [[ $system == etcd ]]; then cmd=("$ETCD"); else cmd=("$TENURE" serve); fi
    local client peer
    client=$(client_url "$base" "$i")
    peer=$(peer_url "$base" "$i")
    "${cmd[@]}" --name "m$i" --data-dir "$dir/m$i" \
        --listen-client-urls "$client" --advertise-client-urls "$client" \
        --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
        --initial-cluster "$initial" --initial-cluster-state "$state" \
        --initial-cluster-token "$token" --quota-backend-bytes "$QUOTA" \
        --snapshot-count "$SNAPSHOT_COUNT" >"$dir/m$i.log" 2>&1 &
    MPID[m$i]=$!
    PIDS+=("$!")
}

stop_cluster() { # stops every member of MPID
    local name
    for name in "${!MPID[@]}"; do kill "${MPID[$name]}" 2>/dev/null || true; done
    for name in "${!MPID[@]}"; do wait "${MPID[$name]}" 2>/dev/null || true; done
    MPID=()
}

ctl() { # ctl ENDPOINTS ARGS...
    local eps=$1
    shift
    ETCDCTL_API=3 "$ETCDCTL" --endpoints "$eps" --dial-timeout 2s --command-timeout 30s "$@"
}

# start_cluster SYSTEM BASE DIR TOKEN: three members, waits until a linearizable get answers
# on each; sets EPS (the three client URLs).
start_cluster() {
    local system=$1 base=$2 dir=$3 token=$4 i initial="" deadline
    mkdir -p "$dir"
    for i in 1 2 3; do initial+="${initial:+,}m$i=$(peer_url "$base" "$i")"; done
    for i in 1 2 3; do start_member "$system" "$base" "$i" new "$initial" "$token" "$dir"; done
    EPS=""
    for i in 1 2 3; do EPS+="${EPS:+,}$(client_url "$base" "$i")"; done
    deadline=$((SECONDS + 60))
    for i in 1 2 3; do
        until ctl "$(client_url "$base" "$i")" --command-timeout 1s get x >/dev/null 2>&1; do
            ((SECONDS < deadline)) || { say "$system: member m$i did not answer (see $dir)"; exit 1; }
            sleep 0.1
        done
    done
    INITIAL=$initial
}

leader_url() { # leader_url EPS: the client URL of the member that is the leader
    ctl "$1" endpoint status -w json |
        jq -r '.[] | select(.Status.leader == .Status.header.member_id) | .Endpoint' | head -1
}

# member_add EPS NAME PEER-URL [--learner]: prints the new member's hex ID (etcdctl pads it
# to 16 characters with spaces). Retried while
# the answer is "unhealthy cluster" (etcd refuses changes until every member has been
# connected for 5 s; the script's clusters are older than that when it adds, so it should not
# happen), each retry said on stderr.
member_add() {
    local eps=$1 name=$2 peer=$3 out deadline=$((SECONDS + 30))
    shift 3
    until out=$(ctl "$eps" member add "$name" --peer-urls "$peer" "$@" 2>&1); do
        if [[ $out != *unhealthy* ]] || ((SECONDS >= deadline)); then
            say "member add $name failed: $out"
            return 1
        fi
        say "member add $name: unhealthy cluster; retrying"
        sleep 0.2
    done
    local id
    id=$(awk '/^Member +[0-9a-f]+ added/ { print $2; exit }' <<<"$out")
    [[ -n $id ]] || { say "member add $name: no member ID in: $out"; return 1; }
    echo "$id"
}

# promote_until EPS ID: retries `member promote` until accepted; sets PROMOTE_START (epoch s of
# the accepted call's start), PROMOTE_S (its own time) and PROMOTE_TRIES.
promote_until() {
    local eps=$1 id=$2 t out deadline=$((SECONDS + 600))
    PROMOTE_TRIES=0
    while :; do
        t=$(now)
        PROMOTE_TRIES=$((PROMOTE_TRIES + 1))
        if out=$(ctl "$eps" member promote "$id" 2>&1); then
            PROMOTE_START=$t
            PROMOTE_S=$(since "$t")
            return 0
        fi
        if [[ $out != *"in sync"* && $out != *"not started"* && $out != *"unhealthy"* ]]; then
            say "promote: $out"
        fi
        ((SECONDS < deadline)) || { say "promote $id never accepted: $out"; exit 1; }
        sleep "$PROMOTE_RETRY"
    done
}

# applied URL: the member's applied index (raftIndex where raftAppliedIndex is absent).
applied() {
    local v
    v=$(ctl "$1" --command-timeout 2s endpoint status -w json 2>/dev/null |
        jq -r '.[0].Status | (.raftAppliedIndex // .raftIndex) // 0' 2>/dev/null | tail -1) || true
    echo "${v:-0}"
}

# The size of the snapshot the leader logged it sent (MB), or "-".
sent_snapshot_mb() { # sent_snapshot_mb SYSTEM DIR
    local bytes
    if [[ $1 == tenure ]]; then
        bytes=$(grep -ho 'sent snapshot [^:]*: [0-9]* bytes' "$2"/m[123].log 2>/dev/null |
            awk '{ s += $(NF - 1) } END { print s + 0 }')
    else
        # etcd 3.4 (capnslog): "wrote database snapshot out [total bytes: N]"
        bytes=$(grep -ho 'total bytes: [0-9]*' "$2"/m[123].log 2>/dev/null |
            awk '{ s += $NF } END { print s + 0 }')
    fi
    if ((bytes > 0)); then awk -v b="$bytes" 'BEGIN { printf "%.0f", b / 1e6 }'; else echo -; fi
}

wait_load() { # wait_load SYSTEM ROUND DIR PID START: the 1 GiB load's end, its time, dbSize
    local system=$1 round=$2 dir=$3 leader
    wait "$4" || { say "$system: the load failed: $(tail -c 300 "$dir/load.json")"; exit 1; }
    record "$system" "$round" load_s "$(since "$5")"
    record "$system" "$round" load_errors "$(jq '.errors_count' "$dir/load.json")"
    # Errors are a broken run, except when the learner comes during the load: then they are
    # what is measured (puts that failed while the cluster took the new member in).
    [[ -n $LEARNER_AT_INDEX ]] || jq -e '.errors_count == 0' "$dir/load.json" >/dev/null ||
        { say "$system: load had errors: $(jq -c .errors "$dir/load.json")"; exit 1; }
    leader=$(leader_url "$EPS")
    record "$system" "$round" db_mb "$(ctl "$leader" endpoint status -w json |
        jq '.[0].Status.dbSize / 1e6 | floor')"
}

# leader_changes DIR: elections after the first one, from the members' logs ("became leader
# at term" is in both systems' logs).
leader_changes() {
    cat "$1"/m[0-9].log | awk '/became leader at term/ { n++ } END { print (n > 0) ? n - 1 : 0 }'
}

phase_voter() { # phase_voter SYSTEM ROUND
    local system=$1 round=$2 base dir t id voter_deadline
    base=$(port_base "$system" "$round" 0)
    dir=$WORK/$system-r$round-voter
    say "$system round $round: time to voter, 3 members on ports $base+"
    start_cluster "$system" "$base" "$dir" "mv-$system-$round"
    local load_t load_pid leader
    load_t=$(now)
    "$TENURE" bench put --endpoints "$EPS" --clients "$LOAD_CLIENTS" --conns 6 \
        --total "$KEYS" --key-space-size "$KEYS" --sequential-keys --key-size 8 \
        --val-size "$VAL_SIZE" --quiet --json >"$dir/load.json" &
    load_pid=$!
    PIDS+=("$load_pid")
    if [[ -n $LEARNER_AT_INDEX ]]; then
        # The learner comes while the load runs, once the leader's index reaches the mark.
        leader=$(leader_url "$EPS")
        until (($(applied "$leader") >= LEARNER_AT_INDEX)); do sleep 0.05; done
        say "$system: leader at index $LEARNER_AT_INDEX: adding the learner during the load"
    else
        wait_load "$system" "$round" "$dir" "$load_pid" "$load_t"
    fi

    # The learner path.
    local p4 c4
    p4=$(peer_url "$base" 4)
    c4=$(client_url "$base" 4)
    t=$(now)
    id=$(member_add "$EPS" m4 "$p4" --learner)
    record "$system" "$round" add_s "$(since "$t")"
    start_member "$system" "$base" 4 existing "$INITIAL,m4=$p4" "mv-$system-$round" "$dir"
    promote_until "$EPS" "$id"
    record "$system" "$round" promotable_s \
        "$(awk -v a="$t" -v b="$PROMOTE_START" 'BEGIN { printf "%.3f", b - a }')"
    record "$system" "$round" promote_s "$PROMOTE_S"
    record "$system" "$round" promote_tries "$PROMOTE_TRIES"
    voter_deadline=$((SECONDS + 60))
    until [[ $(ctl "$c4" --command-timeout 2s endpoint status -w json 2>/dev/null |
        jq -r '.[0].Status.isLearner // false') == false ]]; do
        ((SECONDS < voter_deadline)) || { say "$system: m4 still a learner"; exit 1; }
        sleep 0.05
    done
    record "$system" "$round" voter_s "$(since "$t")"
    [[ -z $LEARNER_AT_INDEX ]] || wait_load "$system" "$round" "$dir" "$load_pid" "$load_t"
    record "$system" "$round" m4_dir_mb "$(du -sb "$dir/m4" | awk '{ printf "%.0f", $1 / 1e6 }')"
    record "$system" "$round" sent_snapshot_mb "$(sent_snapshot_mb "$system" "$dir")"

    if [[ $DIRECT == 1 ]]; then
        # The direct path: a voter added and started, until it has applied what the leader
        # had at the add. First 6 s off the clock: etcd refuses a change ("unhealthy
        # cluster") until every voter has been connected for 5 s, and m4 has just joined.
        sleep 6
        local p5 c5 target
        p5=$(peer_url "$base" 5)
        c5=$(client_url "$base" 5)
        leader=$(leader_url "$EPS")
        target=$(ctl "$leader" endpoint status -w json | jq -r '.[0].Status.raftIndex')
        t=$(now)
        member_add "$EPS" m5 "$p5" >/dev/null
        record "$system" "$round" direct_add_s "$(since "$t")"
        start_member "$system" "$base" 5 existing "$INITIAL,m4=$p4,m5=$p5" \
            "mv-$system-$round" "$dir"
        voter_deadline=$((SECONDS + 600))
        until (($(applied "$c5") >= target)); do
            ((SECONDS < voter_deadline)) || { say "$system: m5 never caught up"; exit 1; }
            sleep 0.1
        done
        record "$system" "$round" direct_caught_up_s "$(since "$t")"
    fi
    record "$system" "$round" leader_changes "$(leader_changes "$dir")"
    stop_cluster
    rm -rf "$dir"/m[0-9]
}

# The timeline's figures around one change starting at START_MS and ending at END_MS, from
# the intervals that lie wholly inside each window: "BASE FIRST MIN MIN-BEFORE", puts/s:
#   BASE        mean over the 3 s before START_MS (the baseline);
#   FIRST       mean over the 1 s from START_MS;
#   MIN         the lowest interval from START_MS to END_MS + 1 s;
#   MIN-BEFORE  the lowest interval of the 3 s before START_MS (how low it dips with no change:
#               on a shared machine, not to the baseline).
window() { # window TIMELINE.json START_MS END_MS
    jq -r --argjson s "$2" --argjson e "$3" '
        .timeline as $t | ($t.interval_ms) as $i | (1000 / $i) as $f
        | def within($a; $b): [range(0; $t.ops | length)
              | select($t.start_unix_ms + . * $i >= $a and $t.start_unix_ms + (. + 1) * $i <= $b)
              | $t.ops[.]];
          def mean: if length == 0 then 0 else add / length end;
          def low: if length == 0 then 0 else min end;
        within($s - 3000; $s) as $before | within($s; $s + 1000) as $first
        | within($s; $e + 1000) as $during
        | "\($before | mean * $f) \($first | mean * $f) \($during | low * $f) \($before | low * $f)"
        ' "$1"
}

phase_dip() { # phase_dip SYSTEM ROUND
    local system=$1 round=$2 base dir bench_pid t0 id4 id5 s e
    base=$(port_base "$system" "$round" 1)
    dir=$WORK/$system-r$round-dip
    say "$system round $round: throughput during changes, 3 members on ports $base+"
    start_cluster "$system" "$base" "$dir" "md-$system-$round"
    local p4 p5
    p4=$(peer_url "$base" 4)
    p5=$(peer_url "$base" 5)
    "$TENURE" bench put --endpoints "$EPS" --clients "$DIP_CLIENTS" --conns 3 \
        --duration "${DIP_SECONDS}s" --key-space-size 100000 --val-size 256 \
        --interval-report "$INTERVAL" --quiet --json >"$dir/dip.json" &
    bench_pid=$!
    PIDS+=("$bench_pid")
    t0=$SECONDS
    declare -A S E
    at() { while ((SECONDS - t0 < $1)); do sleep 0.05; done; }

    at 6
    S[learner_add]=$(now_ms)
    id4=$(member_add "$EPS" m4 "$p4" --learner)
    E[learner_add]=$(now_ms)
    start_member "$system" "$base" 4 existing "$INITIAL,m4=$p4" "md-$system-$round" "$dir"

    at 11
    promote_until "$EPS" "$id4"
    S[promote]=$(awk -v t="$PROMOTE_START" 'BEGIN { printf "%.0f", t * 1000 }')
    E[promote]=$(now_ms)
    record "$system" "$round" dip_promote_tries "$PROMOTE_TRIES"

    at 16
    S[remove]=$(now_ms)
    ctl "$EPS" member remove "$id4" >/dev/null
    E[remove]=$(now_ms)

    at 20
    S[voter_add]=$(now_ms)
    id5=$(member_add "$EPS" m5 "$p5")
    E[voter_add]=$(now_ms)
    # m4 was removed: the list the new member is given is the cluster's as it is now.
    start_member "$system" "$base" 5 existing "$INITIAL,m5=$p5" "md-$system-$round" "$dir"

    at 25
    S[remove2]=$(now_ms)
    ctl "$EPS" member remove "$id5" >/dev/null
    E[remove2]=$(now_ms)

    wait "$bench_pid" || { say "$system: the put load failed"; exit 1; }
    cp "$dir/dip.json" "$WORK/$system-r$round-dip.json"
    record "$system" "$round" dip_leader_changes "$(leader_changes "$dir")"
    record "$system" "$round" dip_ops_s "$(jq '.throughput_ops_per_second | floor' "$dir/dip.json")"
    record "$system" "$round" dip_errors "$(jq '.errors_count' "$dir/dip.json")"
    local change base_ops first_ops min_ops min_before
    for change in learner_add promote remove voter_add remove2; do
        s=${S[$change]}
        e=${E[$change]}
        read -r base_ops first_ops min_ops min_before < <(window "$dir/dip.json" "$s" "$e")
        record "$system" "$round" "${change}_start_ms" "$s"
        record "$system" "$round" "${change}_ms" "$((e - s))"
        record "$system" "$round" "${change}_base" "$(printf '%.0f' "$base_ops")"
        record "$system" "$round" "${change}_first" "$(printf '%.0f' "$first_ops")"
        record "$system" "$round" "${change}_first_frac" \
            "$(awk -v a="$first_ops" -v b="$base_ops" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }')"
        record "$system" "$round" "${change}_min" "$(printf '%.0f' "$min_ops")"
        record "$system" "$round" "${change}_min_before" "$(printf '%.0f' "$min_before")"
    done
    stop_cluster
    rm -rf "$dir"/m[0-9]
}

read -r -a systems <<<"$SYSTEMS"
say "work dir $WORK; $ROUNDS rounds of: ${systems[*]} (order alternates)"
for ((round = 1; round <= ROUNDS; round++)); do
    order=("${systems[@]}")
    if ((round % 2 == 0)) && ((${#systems[@]} == 2)); then order=("${systems[1]}" "${systems[0]}"); fi
    for system in "${order[@]}"; do
        say "round $round, $system; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
        record "$system" "$round" loadavg "$(cut -d' ' -f1 /proc/loadavg)"
        phase_voter "$system" "$round"
        phase_dip "$system" "$round"
    done
done

# The table: medians per system, the ratio, every round's figure.
median() { # median SYSTEM FIGURE
    awk -F'\t' -v s="$1" -v f="$2" '$1 == s && $3 == f && $4 != "-" { v[n++] = $4 }
        END { if (n == 0) { print "-"; exit }
              for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] + 0 < v[i] + 0) { t = v[i]; v[i] = v[j]; v[j] = t }
              print (n % 2 ? v[(n - 1) / 2] : (v[n / 2 - 1] + v[n / 2]) / 2) }' "$RESULTS"
}
rounds() { # rounds SYSTEM FIGURE: every round's figure, in round order
    awk -F'\t' -v s="$1" -v f="$2" '$1 == s && $3 == f { printf "%s%s", (n++ ? " / " : ""), $4 }
        END { if (n == 0) printf "-" }' "$RESULTS"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }
row() { # row LABEL FIGURE
    local t e
    t=$(median tenure "$2")
    e=$(median etcd "$2")
    printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "$t" "$e" "$(ratio "$t" "$e")" \
        "$(rounds tenure "$2")" "$(rounds etcd "$2")"
}
store_mib=$(awk -v k="$KEYS" -v v="$VAL_SIZE" 'BEGIN { printf "%.0f", k * v / 1048576 }')
echo "3 members each; $KEYS keys x $VAL_SIZE-byte values = $store_mib MiB; --snapshot-count" \
    "$SNAPSHOT_COUNT; $ROUNDS rounds; medians, then each round's figure."
echo
echo "| figure | tenure | etcd | tenure/etcd | tenure, rounds | etcd, rounds |"
echo "|---|---:|---:|---:|---|---|"
row "load: seconds for the $KEYS puts" load_s
row "load: puts that failed" load_errors
row "dbSize after the load (MB)" db_mb
row "member add --learner answered (s)" add_s
row "**add → promote accepted (s)**" promotable_s
row "promote call (s)" promote_s
row "promote attempts" promote_tries
row "**add → voter (s)**" voter_s
row "new member's data dir (MB)" m4_dir_mb
row "snapshot sent, from the leader's log (MB)" sent_snapshot_mb
row "leader changes after the first election, time-to-voter cluster" leader_changes
if [[ $DIRECT == 1 ]]; then
    row "direct: member add (voter) answered (s)" direct_add_s
    row "**direct: add → caught up (s)**" direct_caught_up_s
fi
row "dip run: puts/s over the whole run" dip_ops_s
row "dip run: put errors" dip_errors
row "dip run: leader changes after the first election" dip_leader_changes
for change in learner_add promote remove voter_add remove2; do
    row "$change: call (ms)" "${change}_ms"
    row "$change: puts/s, 3 s before (baseline)" "${change}_base"
    row "$change: puts/s, the 1 s from the call" "${change}_first"
    row "**$change: that second / baseline**" "${change}_first_frac"
    row "$change: lowest ${INTERVAL}, 3 s before (puts/s)" "${change}_min_before"
    row "$change: lowest ${INTERVAL}, call to 1 s after it (puts/s)" "${change}_min"
done
row "load average (1 min) at the round's start" loadavg
echo
echo "tenure: ${TENURE_LABEL:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)};" \
    "etcd: $("$ETCD" --version 2>/dev/null | head -1 || echo absent)"
