#!/usr/bin/env bash
# Run sluice's whole test suite. Extra arguments are passed through to cargo
# (to `cargo nextest run` / `cargo test`, and to the doctest run).
#
# Uses cargo-nextest when installed (then also runs doctests with `cargo test --doc`,
# which nextest skips); otherwise `cargo test --workspace --all-targets`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# shellcheck source=scripts/ensure-deps.sh
source "$root/scripts/ensure-deps.sh"

# Build cache outside the clone (shared by clones, survives `git clean`).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
mkdir -p "$CARGO_TARGET_DIR"

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace "$@"
    cargo test --workspace --doc "$@"
else
    cargo test --workspace --all-targets "$@"
    cargo test --workspace --doc "$@"
fi
