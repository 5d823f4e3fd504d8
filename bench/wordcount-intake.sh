#!/usr/bin/env bash
# Issue 16's intake figures (BENCHMARKS.md): the stateful word count with the receiver
# WAL and a checkpoint at 200 ms, 1 s and 2 s batches, blocks read back from the WAL
# (default) and kept in memory (SLUICE_RECEIVER_READ_BACK=false), RUNS runs each, then
# Spark Streaming's same job at 1 s batches (bench/spark, pyspark wheel, local[2]) in
# the same run. One line per run: the bench's JSON summary and the load average.
#
#   WORDS=30000000 RUNS="1 2" bench/wordcount-intake.sh [path/to/sluice]
#   SPARK=0 skips Spark; BATCHES="200 1000 2000" and MODES="on off" choose the rows.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=${1:-${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}/release/sluice}
words=${WORDS:-30000000}
port=9600
for i in ${RUNS:-1 2}; do
  for b in ${BATCHES:-200 1000 2000}; do
    for mode in ${MODES:-on off}; do
      port=$((port + 1)); ck=/tmp/sluice-intake-ck
      rm -rf $ck
      python3 scripts/wordfeed.py --port $port --words "$words" > /dev/null 2>&1 &
      feed=$!; sleep 0.5
      # Idle: well over a batch interval, so a long batch is not taken for the end.
      SLUICE_RECEIVER_READ_BACK=$([ $mode = on ] && echo true || echo false) \
        $BIN bench wordcount --socket 127.0.0.1:$port --batch-ms "$b" --stateful --wal \
        --checkpoint $ck --idle-secs $(( b / 1000 * 3 + 3 )) > /dev/null 2> /tmp/sluice-intake.err
      kill $feed 2>/dev/null; wait $feed 2>/dev/null
      echo "run $i batch ${b}ms read_back=$mode: $(grep '"bench"' /tmp/sluice-intake.err) load $(cut -d' ' -f1 /proc/loadavg)"
      rm -rf $ck
    done
  done
  if [ "${SPARK:-1}" != 0 ]; then
    port=$((port + 1)); ck=/tmp/sluice-intake-spark
    rm -rf $ck
    echo "run $i spark batch 1000ms: $(bench/spark/run.sh wordcount --port $port --words "$words" --batch-ms 1000 --checkpoint $ck 2>/dev/null | tail -1) load $(cut -d' ' -f1 /proc/loadavg)"
    rm -rf $ck
  fi
done
