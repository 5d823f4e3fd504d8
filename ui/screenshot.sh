#!/usr/bin/env bash
# Headless Chromium screenshot (and optionally the DOM after the scripts ran) of a URL.
#
#   ui/screenshot.sh URL OUT.png [DOM.html]
#
# Environment: CHROMIUM (default /usr/bin/chromium), WINDOW (default 1400,2600),
# BUDGET_MS (virtual time budget, default 6000), TIMEOUT_S (wall-clock limit per
# Chromium run, default 60). Installs Debian's chromium with apt-get when missing.
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  echo "usage: $0 URL OUT.png [DOM.html]" >&2
  exit 2
fi
url=$1 out=$2 dom=${3:-}
chromium=${CHROMIUM:-/usr/bin/chromium}
window=${WINDOW:-1400,2600}
budget=${BUDGET_MS:-6000}
limit=${TIMEOUT_S:-60}

if [ ! -x "$chromium" ]; then
  echo "$chromium missing: installing Debian's chromium" >&2
  if [ "$(id -u)" -eq 0 ]; then apt-get install -y chromium >&2; else sudo apt-get install -y chromium >&2; fi
fi

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT

flags=(
  --headless --no-sandbox --disable-gpu --disable-quic --no-first-run
  --disable-background-networking --disable-component-update --disable-sync
  --hide-scrollbars --mute-audio
  "--user-data-dir=$profile" "--window-size=$window" "--virtual-time-budget=$budget"
)

mkdir -p "$(dirname "$out")"
out_abs=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
timeout "$limit" "$chromium" "${flags[@]}" "--screenshot=$out_abs" "$url" >/dev/null 2>"$profile.log" || {
  rc=$?
  echo "chromium --screenshot failed (exit $rc):" >&2
  tail -20 "$profile.log" >&2
  rm -f "$profile.log"
  exit "$rc"
}
rm -f "$profile.log"
[ -s "$out_abs" ] || { echo "no screenshot written to $out" >&2; exit 1; }
echo "screenshot: $out"

if [ -n "$dom" ]; then
  rm -rf "$profile" && mkdir -p "$profile"
  mkdir -p "$(dirname "$dom")"
  timeout "$limit" "$chromium" "${flags[@]}" --dump-dom "$url" >"$dom" 2>"$profile.log" || {
    rc=$?
    echo "chromium --dump-dom failed (exit $rc):" >&2
    tail -20 "$profile.log" >&2
    rm -f "$profile.log"
    exit "$rc"
  }
  rm -f "$profile.log"
  [ -s "$dom" ] || { echo "empty DOM dump in $dom" >&2; exit 1; }
  echo "dom: $dom"
fi
