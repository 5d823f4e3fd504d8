#!/usr/bin/env bash
# Runs one Spark Streaming baseline (README.md) and prints its JSON line on stdout;
# Spark's log and the per-batch progress lines go to stderr.
#
#   bench/spark/run.sh wordcount   [--port 9313] [--words 30000000] [--batch-ms 1000]
#                                  [--checkpoint DIR] [--timeout-s 900] [--stateful true|false] [--wal true|false]
#   bench/spark/run.sh kafka-count --brokers B --topic T --records N [--batch-ms 1000] [--max-rate-per-partition R]
#   bench/spark/run.sh kafka-etl   --brokers B --in T1 --out T2 --records N [--batch-ms 1000] [--max-rate-per-partition R]
#   bench/spark/run.sh fill        --brokers B --topic T --records N [--format plain|etl] [--seed 1]
#                                  [--partitions 3] [--malformed 0.05] [--digest]
#   bench/spark/run.sh fill        --print K [--format plain|etl] [--seed 1] [--from 0]
#
# wordcount starts the repo's scripts/wordfeed.py on 127.0.0.1:PORT itself. Its
# checkpoint directory is emptied first when it holds only a Spark checkpoint (a
# fresh temporary one is used, and removed, when --checkpoint is not given).
# SLUICE_SPARK_DRIVER_MEMORY sets spark-submit's --driver-memory (default 1g, Spark's).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${SLUICE_SPARK_CACHE:-$HOME/.cache/sluice/spark}"

usage() { sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] || usage
job="$1"
shift

"$here/setup.sh"
venv="$cache/venv"
kjars="$cache/kafka-jars"
jar="$cache/sluice-spark-bench.jar"
pyspark_dir="$("$venv/bin/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"
# The wheel's spark-submit looks for pyspark with the python3 on PATH, not the venv's.
export SPARK_HOME="$pyspark_dir"
# Spark binds to the loopback address only (it would pick the host's network address).
export SPARK_LOCAL_IP=127.0.0.1

submit() {
    local class="$1"
    shift
    "$venv/bin/spark-submit" --master 'local[2]' \
        --driver-memory "${SLUICE_SPARK_DRIVER_MEMORY:-1g}" \
        --driver-class-path "$kjars/*" \
        --conf spark.ui.enabled=false --conf spark.log.level=WARN \
        --class "dev.sluice.spark.$class" "$jar" "$@"
}

case "$job" in
fill)
    exec java -cp "$jar:$kjars/*:$pyspark_dir/jars/*" dev.sluice.spark.Fill "$@"
    ;;
kafka-count)
    submit KafkaCount "$@"
    ;;
kafka-etl)
    submit KafkaEtl "$@"
    ;;
wordcount)
    port=9313 words=30000000 checkpoint="" rest=()
    while [ $# -gt 0 ]; do
        case "$1" in
        --port) port="$2"; shift 2 ;;
        --words) words="$2"; shift 2 ;;
        --checkpoint) checkpoint="$2"; shift 2 ;;
        --host) echo "run.sh: wordcount feeds 127.0.0.1 itself; --host is not taken" >&2; exit 2 ;;
        *) rest+=("$1"); shift ;;
        esac
    done
    tmp_ck=""
    if [ -z "$checkpoint" ]; then
        tmp_ck="$(mktemp -d /tmp/sluice-spark-wordcount.XXXXXX)"
        checkpoint="$tmp_ck"
    elif [ -d "$checkpoint" ] && [ -n "$(ls -A "$checkpoint")" ]; then
        # Only a directory that holds nothing but a Spark Streaming checkpoint is emptied.
        others="$(ls -A "$checkpoint" | grep -Ev '^(receivedData|receivedBlockMetadata|checkpoint-[0-9]+(\.bk)?|\.checkpoint-[0-9]+(\.bk)?\.crc|temp|[0-9a-f-]{36})$' || true)"
        if [ -n "$others" ]; then
            echo "run.sh: $checkpoint is not empty and not a Spark checkpoint (has: $(echo $others)); give an empty or new directory" >&2
            exit 2
        fi
        rm -rf "${checkpoint:?}"/* "${checkpoint:?}"/.[!.]* 2>/dev/null || true
    fi
    mkdir -p "$checkpoint"
    feedlog="$(mktemp)"
    python3 "$repo/scripts/wordfeed.py" --port "$port" --words "$words" 2>"$feedlog" &
    feed=$!
    cleanup() {
        kill "$feed" 2>/dev/null || true
        wait "$feed" 2>/dev/null || true
        [ -n "$tmp_ck" ] && rm -rf "$tmp_ck"
        cat "$feedlog" >&2
        rm -f "$feedlog"
    }
    trap cleanup EXIT
    # wordfeed serves one client only, so wait for its "listening" line, not a connect.
    for _ in $(seq 100); do
        grep -q listening "$feedlog" && break
        kill -0 "$feed" 2>/dev/null || { cat "$feedlog" >&2; echo "run.sh: wordfeed.py failed" >&2; exit 1; }
        sleep 0.1
    done
    grep -q listening "$feedlog" || { echo "run.sh: wordfeed.py did not start listening" >&2; exit 1; }
    submit Wordcount --host 127.0.0.1 --port "$port" --words "$words" --checkpoint "$checkpoint" "${rest[@]}"
    ;;
*)
    usage
    ;;
esac
