#!/usr/bin/env bash
# The README's figures: fills the topics, then runs wordcount (30M words, 1 s batches),
# kafka-count (10M records of 100 B, 3 partitions) and kafka-etl (ETL_RECORDS, default
# 3M) twice each, one JSON line per run on stdout, each with the date, the load average
# and the share of CPU idle just before it started.
#
#   bench/spark/measure.sh --brokers 127.0.0.1:PORT [--only wordcount|kafka-count|kafka-etl]
#
# Before each run it waits (up to QUIET_WAIT_S, default 600) for a 5 s window in which
# the machine is at least QUIET_IDLE_PCT (default 85) percent idle, since these two
# cores are shared; a run that starts on a busy machine says so in idle_pct_before.
# Logs (Spark's stderr) go to $SLUICE_SPARK_CACHE/logs.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${SLUICE_SPARK_CACHE:-$HOME/.cache/sluice/spark}"
brokers="${SLUICE_TEST_KAFKA_BROKERS:-}"
only=""
etl_records="${ETL_RECORDS:-3000000}"
while [ $# -gt 0 ]; do
    case "$1" in
    --brokers) brokers="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    *) sed -n '2,13p' "${BASH_SOURCE[0]}" >&2; exit 2 ;;
    esac
done
logs="$cache/logs"
mkdir -p "$logs"
"$here/setup.sh"

# Percent of CPU time idle over the next 5 s, from /proc/stat.
idle_pct() {
    local a b
    read -r -a a < <(head -1 /proc/stat)
    sleep 5
    read -r -a b < <(head -1 /proc/stat)
    local total=0 i
    for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
    echo $(((b[4] + b[5] - a[4] - a[5]) * 100 / (total > 0 ? total : 1)))
}

wait_quiet() {
    local deadline=$(($(date +%s) + ${QUIET_WAIT_S:-600})) p
    while :; do
        p="$(idle_pct)"
        if [ "$p" -ge "${QUIET_IDLE_PCT:-85}" ] || [ "$(date +%s)" -ge "$deadline" ]; then
            echo "$p"
            return
        fi
    done
}

# Runs `run.sh ARGS` and adds to its JSON line the date, the load and idle share just
# before, and other_cpu_pct: the share of both cores that processes other than this
# run's used while it ran (host busy time from /proc/stat minus the run's own CPU time).
run() {
    local name="$1" idle load when log out line own t0 t1 busy total
    shift
    idle="$(wait_quiet)"
    load="$(cut -d' ' -f1-3 /proc/loadavg)"
    when="$(date -u +%FT%TZ)"
    log="$logs/$name-$when.log"
    read -r -a t0 < <(head -1 /proc/stat)
    # The subshell has waited for run.sh and everything under it, so its cutime +
    # cstime (fields 16, 17) are the run's CPU ticks.
    out="$( ("$here/run.sh" "$@" 2>"$log" | tail -n 1 || true
             me=$BASHPID
             echo "__ticks $(awk '{print $16 + $17}' "/proc/$me/stat")") )"
    read -r -a t1 < <(head -1 /proc/stat)
    line="$(grep -v '^__ticks' <<<"$out" || true)"
    own="$(sed -n 's/^__ticks //p' <<<"$out")"
    busy=0 total=0
    for i in 1 2 3 6 7 8; do busy=$((busy + t1[i] - t0[i])); done
    for i in 1 2 3 4 5 6 7 8; do total=$((total + t1[i] - t0[i])); done
    [ -n "$line" ] || line="{\"job\":\"$name\",\"error\":\"no result; see $log\"}"
    echo "${line%\}},\"date\":\"$when\",\"loadavg_before\":\"$load\",\"idle_pct_before\":$idle,\"other_cpu_pct\":$(((busy - own) * 100 / (total > 0 ? total : 1)))}"
}

want() { [ -z "$only" ] || [ "$only" = "$1" ]; }

if want wordcount; then
    ck="$(mktemp -d /tmp/sluice-spark-measure-wc.XXXXXX)"
    for i in 1 2; do
        run wordcount wordcount --port 9313 --words 30000000 --batch-ms 1000 --checkpoint "$ck"
    done
    rm -rf "$ck"
fi
if want kafka-count || want kafka-etl; then
    [ -n "$brokers" ] || { echo "measure.sh: --brokers or SLUICE_TEST_KAFKA_BROKERS is needed" >&2; exit 2; }
fi
if want kafka-count; then
    "$here/run.sh" fill --brokers "$brokers" --topic sluice-bench-plain-10m --records 10000000 \
        --format plain --seed 1 >&2
    for i in 1 2; do
        run kafka-count kafka-count --brokers "$brokers" --topic sluice-bench-plain-10m --records 10000000
    done
fi
if want kafka-etl; then
    "$here/run.sh" fill --brokers "$brokers" --topic sluice-bench-etl-in --records "$etl_records" \
        --format etl --seed 1 --malformed 0.05 >&2
    for i in 1 2; do
        out="sluice-bench-etl-out-$(date +%s)"
        run kafka-etl kafka-etl --brokers "$brokers" --in sluice-bench-etl-in --out "$out" --records "$etl_records"
    done
fi
