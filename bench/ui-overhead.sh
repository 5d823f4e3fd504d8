#!/usr/bin/env bash
# The web UI's cost: `sluice bench wordcount` with the UI off and on (every endpoint
# polled once a second), alternating, RUNS pairs of WORDS words (BENCHMARKS.md).
# usage: WORDS=300000000 bench/ui-overhead.sh [path/to/sluice]
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=${1:-${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}/release/sluice}
for i in ${RUNS:-1 2 3}; do
  for mode in off on; do
    rm -rf /tmp/wcck-$mode; if [ $mode = on ]; then port=$((9401 + i * 2)); else port=$((9400 + i * 2)); fi
    python3 scripts/wordfeed.py --port $port --words ${WORDS:-30000000} > /dev/null 2>&1 &
    feed=$!; sleep 0.5
    if [ $mode = on ]; then
      $BIN bench wordcount --socket 127.0.0.1:$port --batch-ms 200 --stateful --wal --checkpoint /tmp/wcck-$mode --ui 127.0.0.1:4141 > /dev/null 2> /tmp/ui-$mode-$i.err &
      b=$!
      while kill -0 $b 2>/dev/null; do for p in api/app api/batches api/inputs api/checkpoints api/recovery metrics; do curl -s -o /dev/null --max-time 1 http://127.0.0.1:4141/$p; done; sleep 1; done
      wait $b
    else
      $BIN bench wordcount --socket 127.0.0.1:$port --batch-ms 200 --stateful --wal --checkpoint /tmp/wcck-$mode > /dev/null 2> /tmp/ui-$mode-$i.err
    fi
    kill $feed 2>/dev/null; wait $feed 2>/dev/null
    echo "run $i ui=$mode: $(tail -1 /tmp/ui-$mode-$i.err) load $(cut -d' ' -f1 /proc/loadavg)"
  done
done
