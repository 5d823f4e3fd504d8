#!/usr/bin/env python3
"""Development server for the sluice driver UI (stdlib only).

Serves ``ui/index.html`` at ``/`` and a simulated, moving sluice driver at the API
paths the Rust side serves (``/api/app``, ``/api/batches``, ``/api/inputs``,
``/api/checkpoints``, ``/api/recovery``), plus a small fake ``/metrics``.

Scenarios (``--scenario``):

* ``live`` (default): a deterministic simulation (``--seed``) that appends one batch
  per batch interval: a restart from checkpoint 12 (checkpoints 13 and 14 skipped),
  3 replayed and 5 caught-up batches, periodic slow batches that queue up, a failed
  batch now and then, two inputs (``clicks`` on Kafka with 3 partitions, ``sensors``
  a socket receiver that restarts now and then), checkpoints every 10 batches with
  a failed one every 23rd.
* ``static``: serves ``ui/fixtures/*.json`` unchanged (``--fixtures DIR`` for another
  directory, e.g. ``ui/fixtures/empty``).
* ``empty``: shorthand for ``--scenario static --fixtures ui/fixtures/empty``: a first
  run with no batches yet, no inputs, no checkpoints, nothing restored.

``--flaky`` makes the API answer 503 for 5 s out of every 20 s (to see the page's
"disconnected" state); ``--break-after N`` answers 503 to every API request after the
first N (deterministic, for headless checks that the page keeps its last data);
``--latency-ms N`` delays every API answer.

``--write-fixtures DIR`` writes a snapshot of the simulation at a fixed clock (so the
files are reproducible) and exits; that is how ``ui/fixtures/*.json`` were made.
"""

import argparse
import json
import math
import os
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

UI_DIR = os.path.dirname(os.path.abspath(__file__))
FIXTURES_DIR = os.path.join(UI_DIR, "fixtures")
API_NAMES = ("app", "batches", "inputs", "checkpoints", "recovery")

# The fixed clock of --write-fixtures: 2026-03-02 10:31:05.500 UTC, amid slow batches.
FIXTURE_NOW_MS = 1772447465500


def wall_ms():
    return int(time.time() * 1000)


class Simulation:
    """A deterministic driver: every batch's numbers derive from (seed, batch index)."""

    REPLAY = 3
    CATCH_UP = 5
    CHECKPOINT_EVERY = 10  # batches
    MAX_CHECKPOINTS = 50
    PARTITIONS = 3

    def __init__(self, seed=7, interval_ms=1000, history_s=420, retained=1000, now_ms=None):
        self.seed = seed
        self.interval = interval_ms
        self.retained = retained
        now = wall_ms() if now_ms is None else now_ms
        self.process_started = now - history_s * 1000
        i = interval_ms
        last_due = self.process_started // i * i  # the last batch time before the crash-restart
        self.ckpt_batch_time = last_due - (self.REPLAY + self.CATCH_UP) * i
        self.recovery_done = self.process_started + 240  # read checkpoint 12, WAL, plan
        self.batches = []  # every batch generated so far, oldest first (internal form)
        self.checkpoints = []  # internal form, oldest first
        self.next_ckpt_id = 15
        self.prev_end = self.recovery_done
        self.offsets = [8_204_331, 8_190_876, 8_211_402]  # next offset per partition
        self.clicks_total = 0
        self.sensors_total = 0
        self.next_time = self.ckpt_batch_time + i  # next batch time to generate
        self.lock = threading.Lock()
        self.advance(now)

    # --- generation -------------------------------------------------------------

    def rng(self, k, salt=0):
        return random.Random(self.seed * 1_000_003 + k * 31 + salt)

    def kind_of(self, t):
        n = (t - self.ckpt_batch_time) // self.interval
        if n <= self.REPLAY:
            return "replay"
        if n <= self.REPLAY + self.CATCH_UP:
            return "catch-up"
        return "live"

    def sensors_restarting(self, k):
        return 100 <= k % 240 < 104

    def advance(self, now):
        """Generates every batch whose time has come (submitted at or before `now`)."""
        i = self.interval
        while True:
            t = self.next_time
            kind = self.kind_of(t)
            submitted = self.recovery_done if kind != "live" else t
            if submitted > now:
                break
            self.next_time += i
            k = t // i
            r = self.rng(k)
            secs = i / 1000.0
            phase = 2 * math.pi * (t / 1000.0) / 180.0
            clicks_rate = 2400 * (1 + 0.35 * math.sin(phase)) * r.uniform(0.9, 1.1)
            sensors_rate = 600 * r.uniform(0.8, 1.2)
            if kind == "catch-up":
                clicks_rate = 5000.0  # the Kafka rate limit, behind after the downtime
                sensors_rate = 0.0  # a socket receiver does not get back what it missed
            if self.sensors_restarting(k):
                sensors_rate = 0.0
            clicks = int(clicks_rate * secs)
            sensors = int(sensors_rate * secs)
            records = clicks + sensors
            proc = 120 + records * 0.09 * r.uniform(0.85, 1.25)
            if k % 60 < 6 and kind == "live":
                proc *= 3.4  # a slow sink: batches queue up behind these
            if kind == "replay":
                proc *= 1.3
            failed = kind == "live" and k % 173 == 77
            if failed:
                proc *= 0.6
            proc = int(proc)
            start = max(submitted, self.prev_end) + r.randint(1, 4)
            end = start + proc
            self.prev_end = end
            # Kafka offset ranges, fixed at submission.
            split = [r.uniform(0.8, 1.2) for _ in range(self.PARTITIONS)]
            tot = sum(split)
            parts = [int(clicks * s / tot) for s in split]
            parts[-1] = clicks - sum(parts[:-1])
            ranges = []
            for p, n in enumerate(parts):
                ranges.append((self.offsets[p], self.offsets[p] + n))
                self.offsets[p] += n
            self.clicks_total += clicks
            self.sensors_total += sensors
            error = None
            if failed:
                error = (
                    'sink "pg_events" failed: ERROR: duplicate key value violates unique '
                    'constraint "events_pkey" <Key (id)=(%d) already exists> while writing '
                    "partition 2 of batch %d; transaction rolled back after 3 attempts "
                    "(last: connection to postgres://sluice:***@db.internal:5432/events "
                    "reset by peer)" % (r.randint(10**6, 10**7), t)
                )
            b = {
                "t": t, "k": k, "kind": kind, "submitted": submitted, "start": start,
                "end": end, "records": records, "clicks": clicks, "sensors": sensors,
                "failed": failed, "error": error, "ranges": ranges,
                "clicks_total": self.clicks_total, "sensors_total": self.sensors_total,
            }
            self.batches.append(b)
            if not failed and (t // i) % self.CHECKPOINT_EVERY == 0:
                cid = self.next_ckpt_id
                self.next_ckpt_id += 1
                full = cid % 6 == 0
                cfail = cid % 23 == 19
                cr = self.rng(k, 1)
                dur = int(cr.uniform(1100, 1900) if full else cr.uniform(70, 420))
                size = int(cr.uniform(46, 52) * 2**20) if full else int(cr.uniform(0.4, 4.5) * 2**20)
                self.checkpoints.append({
                    "id": cid, "batch_time_ms": t, "started_at_ms": end + 3,
                    "duration_ms": dur, "bytes": 0 if cfail else size,
                    "kind": "full" if full else "incremental",
                    "location": "s3://acme-streaming/sluice/clickstream/chk-%06d" % cid,
                    "status": "failed" if cfail else "completed",
                    "error": (
                        "PUT s3://acme-streaming/sluice/clickstream/chk-%06d/state/part-0002: "
                        "503 SlowDown: Please reduce your request rate. (after 5 retries)" % cid
                    ) if cfail else None,
                })
        # Bound the memory of a long-running dev server.
        keep = max(self.retained * 2, 2000)
        if len(self.batches) > keep:
            self.batches = self.batches[-keep:]

    # --- the API ----------------------------------------------------------------

    def snapshot(self, now=None):
        with self.lock:
            now = wall_ms() if now is None else now
            self.advance(now)
            return {name: getattr(self, "api_" + name)(now) for name in API_NAMES}

    def batch_json(self, b, now):
        started = b["start"] if b["start"] <= now else None
        done = b["end"] <= now
        if done:
            status = "failed" if b["failed"] else "completed"
        elif started is not None:
            status = "running"
        else:
            status = "queued"
        sched = b["start"] - b["submitted"] if started is not None else None
        proc = b["end"] - b["start"] if done else None
        return {
            "batch_time_ms": b["t"],
            "records": b["records"],
            "scheduling_delay_ms": sched,
            "processing_ms": proc,
            "total_delay_ms": (sched + proc) if done else None,
            "status": status,
            "kind": b["kind"],
            "submitted_at_ms": b["submitted"],
            "started_at_ms": started,
            "completed_at_ms": b["end"] if done else None,
            "outputs": 2 if status == "completed" else 0,
            "error": b["error"] if status == "failed" else None,
            "input_records": {"clicks": b["clicks"], "sensors": b["sensors"]},
        }

    def api_batches(self, now):
        return [self.batch_json(b, now) for b in self.batches[-self.retained:]]

    def api_app(self, now):
        completed = failed = total = 0
        for b in self.batches:
            if b["end"] <= now:
                if b["failed"]:
                    failed += 1
                else:
                    completed += 1
                    total += b["records"]
        return {
            "app_name": "clickstream-sessions",
            "batch_interval_ms": self.interval,
            "started_at_ms": self.process_started,
            "now_ms": now,
            "status": "running",
            "retained_batches": self.retained,
            "completed_batches": completed,
            "failed_batches": failed,
            "total_records": total,
            "conf": [
                {"key": "app_name", "value": "clickstream-sessions"},
                {"key": "batch_interval", "value": "%dms" % self.interval},
                {"key": "block_interval", "value": "200ms"},
                {"key": "parallelism", "value": "8"},
                {"key": "checkpoint", "value": "s3://acme-streaming/sluice/clickstream"},
                {"key": "checkpoint_interval", "value": "%ds" % (self.interval * self.CHECKPOINT_EVERY // 1000)},
                {"key": "receiver_wal", "value": "true"},
                {"key": "receiver_max_rate", "value": "none"},
                {"key": "backpressure", "value": "true"},
                {"key": "backpressure_pid.min_rate", "value": "100"},
                {"key": "receiver_restart_delay", "value": "500ms"},
                {"key": "receiver_max_buffered", "value": "64MiB"},
                {"key": "down_time", "value": "run-each"},
                {"key": "kafka.bootstrap_servers", "value": "kafka-0.internal:9092,kafka-1.internal:9092,kafka-2.internal:9092"},
                {"key": "kafka.max_rate_per_partition", "value": "1667"},
                {"key": "sink.pg_events.url", "value": "postgres://sluice:***@db.internal:5432/events"},
                {"key": "sink.redis_sessions.url", "value": "redis://:***@cache.internal:6379/2"},
                {"key": "AWS_SECRET_ACCESS_KEY", "value": "***"},
                {"key": "note", "value": "<b>not bold</b> & \"quoted\" — escaped by the page"},
            ],
        }

    def last_submitted(self):
        return self.batches[-1] if self.batches else None

    def api_inputs(self, now):
        b = self.last_submitted()
        secs = self.interval / 1000.0
        k = now // self.interval
        r = self.rng(k, 2)
        parts = []
        if b is not None:
            since = max(0, now - b["t"]) / 1000.0
            for p, (lo, hi) in enumerate(b["ranges"]):
                ahead = int(2400 / self.PARTITIONS * since * r.uniform(0.9, 1.1))
                hw = hi + ahead
                parts.append({
                    "topic": "clicks", "partition": p, "from_offset": lo, "until_offset": hi,
                    "high_watermark": hw, "lag": hw - hi,
                })
        k0 = self.process_started // self.interval
        restarts = (k - 100) // 240 - (k0 - 101) // 240  # restart windows since start-up
        restarting = self.sensors_restarting(k)
        return [
            {
                "name": "clicks", "kind": "kafka", "status": "active",
                "rate_per_s": round(b["clicks"] / secs, 1) if b else 0.0,
                "rate_limit_per_s": 5000.0, "buffered_bytes": None, "restarts": 0,
                "last_error": None,
                "records_total": b["clicks_total"] if b else 0,
                "dropped_oversized": 0, "lost_to_retention": 0,
                "partitions": parts,
            },
            {
                "name": "sensors", "kind": "receiver",
                "status": "restarting" if restarting else "active",
                "rate_per_s": round(b["sensors"] / secs, 1) if b else 0.0,
                "rate_limit_per_s": None,
                "buffered_bytes": 0 if restarting else int(r.uniform(0.2, 3.5) * 2**20),
                "restarts": max(0, restarts),
                "last_error": "connection to 10.0.4.17:9999 reset by peer (os error 104)" if restarts > 0 else None,
                "records_total": b["sensors_total"] if b else 0,
                "dropped_oversized": 3, "lost_to_retention": 0,
                "partitions": [],
            },
        ]

    def api_checkpoints(self, now):
        done = [c for c in self.checkpoints if c["started_at_ms"] + c["duration_ms"] <= now]
        return done[-self.MAX_CHECKPOINTS:]

    def api_recovery(self, now):
        first = None
        for b in self.batches:
            if b["end"] <= now:
                first = b["end"]
                break
        t = self.ckpt_batch_time
        lt = time.gmtime(t / 1000)
        hhmmss = "%02d:%02d:%02d.%03d UTC" % (lt.tm_hour, lt.tm_min, lt.tm_sec, t % 1000)
        return {
            "restored": True,
            "checkpoint": {"id": 12, "batch_time_ms": t,
                           "location": "s3://acme-streaming/sluice/clickstream/chk-000012"},
            "skipped": [
                {"id": 14, "reason": "incomplete: no _manifest (the driver died while writing it)"},
                {"id": 13, "reason": "checksum mismatch in state/part-0003 (expected 9f1c2e07, got 00000000)"},
            ],
            "replayed_batches": self.REPLAY,
            "caught_up_batches": self.CATCH_UP,
            "process_started_at_ms": self.process_started,
            "first_batch_completed_at_ms": first,
            "time_to_first_batch_ms": (first - self.process_started) if first is not None else None,
            "decision": "resumed from checkpoint 12 (batch %s): %d batches to replay, %d to catch up"
                        % (hhmmss, self.REPLAY, self.CATCH_UP),
        }


METRICS_TEMPLATE = """# HELP sluice_batches_completed_total Batches completed.
# TYPE sluice_batches_completed_total counter
sluice_batches_completed_total {completed}
# HELP sluice_batches_failed_total Batches failed.
# TYPE sluice_batches_failed_total counter
sluice_batches_failed_total {failed}
# HELP sluice_records_total Records processed.
# TYPE sluice_records_total counter
sluice_records_total {records}
# (a fake served by ui/dev_server.py; the real one comes from the Rust side)
"""


def make_handler(opts, sim, static_dir):
    started = time.time()
    api_requests = [0]
    count_lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        server_version = "sluice-ui-dev/1"

        def log_message(self, fmt, *args):
            if opts.verbose:
                sys.stderr.write("%s - %s\n" % (self.address_string(), fmt % args))

        def send(self, code, body, ctype):
            if isinstance(body, str):
                body = body.encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self):
            self.do_GET()

        def do_GET(self):
            path = urlsplit(self.path).path
            if path in ("/", "/index.html"):
                with open(os.path.join(UI_DIR, "index.html"), "rb") as f:
                    return self.send(200, f.read(), "text/html; charset=utf-8")
            if path.startswith("/api/"):
                name = path[len("/api/"):].strip("/")
                if name not in API_NAMES:
                    return self.send(404, json.dumps({"error": "no such endpoint"}), "application/json")
                if opts.latency_ms:
                    time.sleep(opts.latency_ms / 1000.0)
                if opts.flaky and (time.time() - started) % 20 >= 15:
                    return self.send(503, json.dumps({"error": "flaky mode: down"}), "application/json")
                with count_lock:
                    api_requests[0] += 1
                    n = api_requests[0]
                if opts.break_after is not None and n > opts.break_after:
                    return self.send(503, json.dumps({"error": "--break-after: down"}), "application/json")
                if sim is not None:
                    data = sim.snapshot()[name]
                    return self.send(200, json.dumps(data), "application/json")
                try:
                    with open(os.path.join(static_dir, name + ".json"), "rb") as f:
                        return self.send(200, f.read(), "application/json")
                except FileNotFoundError:
                    return self.send(404, json.dumps({"error": "no fixture"}), "application/json")
            if path == "/metrics":
                if sim is not None:
                    app = sim.snapshot()["app"]
                else:
                    with open(os.path.join(static_dir, "app.json")) as f:
                        app = json.load(f)
                return self.send(200, METRICS_TEMPLATE.format(
                    completed=app["completed_batches"], failed=app["failed_batches"],
                    records=app["total_records"]), "text/plain; version=0.0.4")
            return self.send(404, "not found\n", "text/plain")

    return Handler


def write_fixtures(out_dir, seed):
    sim = Simulation(seed=seed, now_ms=FIXTURE_NOW_MS, history_s=420)
    snap = sim.snapshot(now=FIXTURE_NOW_MS)
    os.makedirs(out_dir, exist_ok=True)
    for name, data in snap.items():
        with open(os.path.join(out_dir, name + ".json"), "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
    print("wrote %s/{%s}.json" % (out_dir, ",".join(API_NAMES)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--scenario", choices=("live", "static", "empty"), default="live")
    ap.add_argument("--fixtures", default=FIXTURES_DIR, help="directory of the static scenario")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--interval-ms", type=int, default=1000, help="batch interval of the simulation")
    ap.add_argument("--history", type=int, default=420, help="seconds of history at start-up")
    ap.add_argument("--retained", type=int, default=1000, help="retained batches")
    ap.add_argument("--flaky", action="store_true", help="API down 5 s out of every 20 s")
    ap.add_argument("--break-after", type=int, metavar="N", help="answer 503 to API requests after the first N")
    ap.add_argument("--latency-ms", type=int, default=0)
    ap.add_argument("--write-fixtures", metavar="DIR", help="write a fixed-clock snapshot and exit")
    ap.add_argument("-v", "--verbose", action="store_true", help="log requests")
    opts = ap.parse_args()

    if opts.write_fixtures:
        write_fixtures(opts.write_fixtures, opts.seed)
        return

    sim = None
    static_dir = opts.fixtures
    if opts.scenario == "live":
        sim = Simulation(seed=opts.seed, interval_ms=opts.interval_ms,
                         history_s=opts.history, retained=opts.retained)
    elif opts.scenario == "empty":
        static_dir = os.path.join(FIXTURES_DIR, "empty")

    httpd = ThreadingHTTPServer((opts.host, opts.port), make_handler(opts, sim, static_dir))
    httpd.daemon_threads = True
    print("sluice UI dev server (%s) on http://%s:%d/  pid %d"
          % (opts.scenario, opts.host, httpd.server_address[1], os.getpid()), flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()


if __name__ == "__main__":
    main()
