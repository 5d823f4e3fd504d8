#!/usr/bin/env bash
# The test harness's servers (PostgreSQL, MariaDB, Redis, Kafka, S3/moto), started on
# free loopback ports and left running, for following the README's examples by hand:
#
#   scripts/dev-servers.sh start [postgres|mysql|redis|kafka|s3 ...]   # all by default
#   eval "$(scripts/dev-servers.sh env)"    # SLUICE_TEST_*_URL, SLUICE_TEST_KAFKA_BROKERS, AWS_*
#   scripts/dev-servers.sh status
#   scripts/dev-servers.sh stop
#
# The tests use the same variables, so a test run after `start` reuses these servers.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# shellcheck source=scripts/ensure-deps.sh
source "$root/scripts/ensure-deps.sh" >&2

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
cargo build -q -p sluice-testkit --bin sluice-dev-servers
exec "$CARGO_TARGET_DIR/debug/sluice-dev-servers" "$@"
