#!/usr/bin/env bash
# Run the main sluice job (release build). Arguments go to the `sluice` binary;
# default: `demo`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# shellcheck source=scripts/ensure-deps.sh
source "$root/scripts/ensure-deps.sh"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
mkdir -p "$CARGO_TARGET_DIR"

if [ "$#" -eq 0 ]; then
    set -- demo
fi
exec cargo run --release -p sluice-cli --bin sluice -- "$@"
