#!/usr/bin/env bash
# tenure against etcd with TLS and auth on (issue 17), same machine, same run.
#
# For each configuration in CONFIGS it starts a three-member etcd (Debian's `etcd`) and a
# three-member `tenure serve` (release build) on loopback with identical flags, each member in its
# own data directory, both with fsync on and etcd's default heartbeat and election timeout
# (neither is told otherwise). All the clusters run from the start (idle but for heartbeats
# when not loaded), so that the rounds interleave: for each workload and round, every
# configuration in turn (in reverse order on even rounds), and in each configuration one
# system and then the other (etcd first on odd rounds). A machine whose load drifts then
# shifts every configuration alike. Configurations:
#
#   plain     http client and peer URLs, no auth (the baseline)
#   tls       https client and peer URLs, mutual TLS on both: --cert-file/--key-file/
#             --trusted-ca-file/--client-cert-auth and --peer-cert-file/--peer-key-file/
#             --peer-trusted-ca-file/--peer-client-cert-auth, one certificate (CN and SAN
#             127.0.0.1, server and client use) from a CA made here with openssl; `tenure bench`
#             verifies the servers with --cacert and presents the same certificate (--cert,
#             --key). Client certificates because etcd 3.4 requires one from every client
#             whenever --trusted-ca-file is given, --client-cert-auth or not; tenure is told
#             --client-cert-auth so that both do the same.
#   auth      plain URLs; root (root role) and user `bench` (role `bench`: readwrite on keys
#             "0" to ":", every key the bench writes) added with etcdctl, then `auth enable`;
#             the bench runs as `bench` (`--user`: one Authenticate per endpoint, then the token
#             on every request)
#   tls-auth  both
#
# Workloads: puts from 256 clients over CONNS connections spread over the three members, and
# puts from 1 client on 1 connection to the leader (found before auth is enabled), so neither
# system pays a follower's forwarding hop by luck of the election. Keys of KEY_SIZE bytes (the
# bench's decimal keys, KEY_SPACE of them), values of VAL_SIZE bytes.
#
# It prints a Markdown table on stdout: for each configuration and workload, both systems'
# throughput, p50 and p99 latency, the ratio tenure/etcd, the CPU seconds all three members
# spent per 1,000 answered puts, and the errors; then a second table with each system's
# throughput in each configuration as a fraction of its own plain figure (what TLS and auth
# cost each system). With ROUNDS > 1 every figure is the median over the rounds.
#
# Usage: bench/security.sh            (from the repository root)
# Environment: CONFIGS ("plain tls auth tls-auth"), ROUND_SECONDS (10), ROUNDS (2),
#   KEY_SPACE (10000), VAL_SIZE (256), KEY_SIZE (8), CONNS (3), BASE_PORT (43000), ETCD (etcd),
#   ETCDCTL (etcdctl), TENURE (builds and uses target/release/tenure), TENURE_LABEL (what the
#   last line calls the tenure build; the current commit by default), KEEP (a directory to
#   copy the logs and raw JSON summaries into).
# Everything started is killed on exit, and the temporary directory removed.

set -euo pipefail

CONFIGS=${CONFIGS:-plain tls auth tls-auth}
ROUND_SECONDS=${ROUND_SECONDS:-10}
ROUNDS=${ROUNDS:-2}
KEY_SPACE=${KEY_SPACE:-10000}
VAL_SIZE=${VAL_SIZE:-256}
KEY_SIZE=${KEY_SIZE:-8}
CONNS=${CONNS:-3}
BASE_PORT=${BASE_PORT:-43000}
ETCD=${ETCD:-etcd}
ETCDCTL=${ETCDCTL:-etcdctl}

# name | tenure bench arguments (1-client rounds go to the leader)
WORKLOADS=(
    "put, 256 clients|put --clients 256 --conns $CONNS"
    "put, 1 client|put --clients 1 --conns 1"
)

BENCH_NAME=security
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

need_tools "Debian: apt-get install etcd-server etcd-client openssl jq" \
    "$ETCD" "$ETCDCTL" openssl jq awk
tenure_binary
work_dir

# The CA and one certificate for every member of both systems (127.0.0.1 in the SAN; server
# and client use, since members present it to each other).
make_certs() {
    local d=$WORK/certs
    mkdir -p "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=security-bench-ca" \
        -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$d/member.key" -out "$d/member.csr" 2>/dev/null
    printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" \
        "extendedKeyUsage=serverAuth,clientAuth" "keyUsage=digitalSignature,keyEncipherment" \
        >"$d/ext.cnf"
    openssl x509 -req -in "$d/member.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" \
        -CAcreateserial -days 2 -extfile "$d/ext.cnf" -out "$d/member.crt" 2>/dev/null
}
make_certs
CERTS=$WORK/certs

# Keyed by CONFIG/SYSTEM.
declare -A SERVER_PIDS ENDPOINTS LEADER
TLS_SERVER_FLAGS=(
    --cert-file "$CERTS/member.crt" --key-file "$CERTS/member.key"
    --trusted-ca-file "$CERTS/ca.crt" --client-cert-auth
    --peer-cert-file "$CERTS/member.crt" --peer-key-file "$CERTS/member.key"
    --peer-trusted-ca-file "$CERTS/ca.crt" --peer-client-cert-auth
)

# Flags of the current configuration.
SCHEME=http
CLIENT_TLS=()
AUTH=false
BENCH_USER=()
configure() {
    case $1 in
    plain) SCHEME=http AUTH=false ;;
    tls) SCHEME=https AUTH=false ;;
    auth) SCHEME=http AUTH=true ;;
    tls-auth) SCHEME=https AUTH=true ;;
    *) say "unknown configuration $1"; exit 2 ;;
    esac
    CLIENT_TLS=()
    [[ $SCHEME == https ]] &&
        CLIENT_TLS=(--cacert "$CERTS/ca.crt" --cert "$CERTS/member.crt" --key "$CERTS/member.key")
    BENCH_USER=()
    $AUTH && BENCH_USER=(--user bench:benchpw)
    return 0
}

# start CONFIG SYSTEM OFFSET: three members of SYSTEM (etcd or tenure), ports from
# BASE_PORT+OFFSET.
start() {
    local config=$1 system=$2 offset=$3 i cluster="" eps="" key=$1/$2
    for i in 0 1 2; do
        cluster+="${cluster:+,}m$i=$SCHEME://127.0.0.1:$((BASE_PORT + offset + 10 * i + 1))"
        eps+="${eps:+,}$SCHEME://127.0.0.1:$((BASE_PORT + offset + 10 * i))"
    done
    local cmd tls=()
    if [[ $system == etcd ]]; then cmd=("$ETCD"); else cmd=("$TENURE" serve); fi
    [[ $SCHEME == https ]] && tls=("${TLS_SERVER_FLAGS[@]}")
    for i in 0 1 2; do
        local client="$SCHEME://127.0.0.1:$((BASE_PORT + offset + 10 * i))"
        local peer="$SCHEME://127.0.0.1:$((BASE_PORT + offset + 10 * i + 1))"
        "${cmd[@]}" --name "m$i" --data-dir "$WORK/$config-$system-m$i" \
            --listen-client-urls "$client" --advertise-client-urls "$client" \
            --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --initial-cluster-token "security-$system" "${tls[@]}" \
            >"$WORK/$config-$system-m$i.log" 2>&1 &
        PIDS+=($!)
        SERVER_PIDS[$key]+="${SERVER_PIDS[$key]:+ }$!"
    done
    ENDPOINTS[$key]=$eps
}

ctl() { # ctl CONFIG/SYSTEM ARGS...: etcdctl against that cluster's members
    local key=$1
    shift
    ETCDCTL_API=3 "$ETCDCTL" --endpoints "${ENDPOINTS[$key]}" --command-timeout 10s \
        "${CLIENT_TLS[@]}" "$@"
}

# ready CONFIG/SYSTEM: waits until a write through every member succeeds, finds the leader,
# and with auth (configure CONFIG first) sets up the users and enables it.
ready() {
    local system=$1 deadline=$((SECONDS + 60)) ep
    for ep in ${ENDPOINTS[$system]//,/ }; do
        until "$TENURE" bench "${CLIENT_TLS[@]}" put --total 1 --endpoints "$ep" --quiet \
            --json 2>/dev/null | jq -e '.errors_count == 0' >/dev/null; do
            ((SECONDS < deadline)) || { say "$system did not start; see its logs"; exit 1; }
            sleep 0.2
        done
    done
    LEADER[$system]=$("$TENURE" endpoint status --endpoints "${ENDPOINTS[$system]}" \
        "${CLIENT_TLS[@]}" | awk -F', ' '$5 == "true" { print $1; exit }')
    [[ -n ${LEADER[$system]} ]] || { say "$system: no leader found"; exit 1; }
    if $AUTH; then
        local step
        for step in "user add root:rootpw" "role add root" "user grant-role root root" \
            "user add bench:benchpw" "role add bench" \
            "role grant-permission bench readwrite 0 :" "user grant-role bench bench" \
            "auth enable"; do
            # shellcheck disable=SC2086 # STEP is a list of arguments
            ctl "$system" $step >>"$WORK/${system//\//-}-auth.log" 2>&1 || {
                say "$system: etcdctl $step failed: $(tail -1 "$WORK/${system//\//-}-auth.log")"
                exit 1
            }
        done
    fi
    say "$system ready, leader at ${LEADER[$system]}"
}


# round CONFIG SYSTEM NAME ARGS ROUND: one timed run; appends a line to RESULTS.
round() {
    local config=$1 system=$2 name=$3 args=$4 n=$5 eps key=$1/$2
    local pids=(${SERVER_PIDS[$key]})
    eps=${ENDPOINTS[$key]}
    [[ $args == *"--clients 1 "* ]] && eps=${LEADER[$key]}
    local before after out
    before=$(cpu_ticks "${pids[@]}")
    out=$WORK/$config-$system-$(echo "$name" | tr -c 'a-z0-9' '-')-$n.json
    # shellcheck disable=SC2086 # ARGS is a list of flags
    "$TENURE" bench "${CLIENT_TLS[@]}" $args --duration "${ROUND_SECONDS}s" --key-size "$KEY_SIZE" \
        --val-size "$VAL_SIZE" --key-space-size "$KEY_SPACE" --endpoints "$eps" \
        "${BENCH_USER[@]}" --json --quiet >"$out"
    after=$(cpu_ticks "${pids[@]}")
    jq -r --arg cfg "$config" --arg sys "$system" --arg name "$name" \
        --argjson ticks $((after - before)) --argjson tps "$TICKS_PER_SECOND" '
        [$cfg, $name, $sys, .throughput_ops_per_second, .latency_ms.p50, .latency_ms.p99,
         (if .ops_count > 0 then $ticks / $tps / .ops_count * 1000 else 0 end),
         .errors_count] | @tsv' "$out" >>"$RESULTS"
    say "$(printf '%-8s %-18s %-6s round %d: ' "$config" "$name" "$system" "$n")$(jq -r \
        '"\(.throughput_ops_per_second | floor)/s, p50 \(.latency_ms.p50) ms, p99 \(.latency_ms.p99) ms, errors \(.errors_count)"' "$out")"
}

say "work directory $WORK"
offset=0
for config in $CONFIGS; do
    configure "$config"
    start "$config" etcd "$offset"
    start "$config" tenure $((offset + 100))
    offset=$((offset + 200))
done
for config in $CONFIGS; do
    configure "$config"
    ready "$config/etcd"
    ready "$config/tenure"
done
read -r -a FORWARD <<<"$CONFIGS"
BACKWARD=()
for ((i = ${#FORWARD[@]} - 1; i >= 0; i--)); do BACKWARD+=("${FORWARD[i]}"); done
for entry in "${WORKLOADS[@]}"; do
    name=${entry%%|*}
    args="${entry#*|} "
    for ((n = 1; n <= ROUNDS; n++)); do
        if ((n % 2 == 1)); then
            order=(etcd tenure) configs=("${FORWARD[@]}")
        else
            order=(tenure etcd) configs=("${BACKWARD[@]}")
        fi
        for config in "${configs[@]}"; do
            configure "$config"
            for system in "${order[@]}"; do
                round "$config" "$system" "$name" "$args" "$n"
            done
        done
    done
done
stop_all

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
figure() { # figure CONFIG NAME SYSTEM COLUMN
    awk -F'\t' -v c="$1" -v n="$2" -v s="$3" -v col="$4" \
        '$1 == c && $2 == n && $3 == s { print $col }' "$RESULTS" | median
}

echo
echo "| configuration | workload | etcd ops/s | tenure ops/s | tenure/etcd | p50 ms etcd / tenure | p99 ms etcd / tenure | CPU s per 1k puts etcd / tenure | errors etcd / tenure |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
for config in $CONFIGS; do
    for entry in "${WORKLOADS[@]}"; do
        name=${entry%%|*}
        declare -A f=()
        for system in etcd tenure; do
            for col in 4 5 6 7 8; do f[$system$col]=$(figure "$config" "$name" "$system" $col); done
        done
        awk -v c="$config" -v n="$name" -v et="${f[etcd4]}" -v tt="${f[tenure4]}" \
            -v e50="${f[etcd5]}" -v t50="${f[tenure5]}" -v e99="${f[etcd6]}" -v t99="${f[tenure6]}" \
            -v ecpu="${f[etcd7]}" -v tcpu="${f[tenure7]}" -v eerr="${f[etcd8]}" -v terr="${f[tenure8]}" 'BEGIN {
            printf "| %s | %s | %.0f | %.0f | %.2fx | %.2f / %.2f | %.2f / %.2f | %.3f / %.3f | %d / %d |\n",
                c, n, et, tt, (et > 0 ? tt / et : 0), e50, t50, e99, t99, ecpu, tcpu, eerr, terr
        }'
    done
done

if [[ " $CONFIGS " == *" plain "* ]]; then
    echo
    echo "| configuration | workload | etcd ops/s vs its plain | tenure ops/s vs its plain | etcd p50 vs its plain | tenure p50 vs its plain |"
    echo "|---|---|---:|---:|---:|---:|"
    for config in $CONFIGS; do
        [[ $config == plain ]] && continue
        for entry in "${WORKLOADS[@]}"; do
            name=${entry%%|*}
            awk -v c="$config" -v n="$name" \
                -v et="$(figure "$config" "$name" etcd 4)" -v ep="$(figure plain "$name" etcd 4)" \
                -v tt="$(figure "$config" "$name" tenure 4)" -v tp="$(figure plain "$name" tenure 4)" \
                -v e50="$(figure "$config" "$name" etcd 5)" -v ep50="$(figure plain "$name" etcd 5)" \
                -v t50="$(figure "$config" "$name" tenure 5)" -v tp50="$(figure plain "$name" tenure 5)" 'BEGIN {
                printf "| %s | %s | %.2f | %.2f | %.2f | %.2f |\n", c, n,
                    (ep > 0 ? et / ep : 0), (tp > 0 ? tt / tp : 0),
                    (ep50 > 0 ? e50 / ep50 : 0), (tp50 > 0 ? t50 / tp50 : 0)
            }'
        done
    done
fi
echo
echo "$ROUNDS round(s) of ${ROUND_SECONDS} s per workload, system and configuration; $KEY_SIZE-byte keys, $VAL_SIZE-byte values, $KEY_SPACE keys; $CONNS connections for 256 clients; $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end; $($ETCD --version | head -1); tenure ${TENURE_LABEL:-$(git rev-parse --short HEAD 2>/dev/null || echo '?')}."
