# Install what a fresh Debian machine lacks to build and test sluice:
#   - clang + libclang-dev (apt)            : bindgen for rocksdb
#   - rustfmt + clippy (rustup)             : .ci/run
#   - postgresql, mariadb-server, redis-server (apt): the servers the tests start
#     (sluice-testkit starts its own instances on free loopback ports; nothing is
#     started here)
#   - java + maven (apt, only if missing)   : the Kafka broker the tests start
#   - the Apache Kafka jars (Maven Central) : scripts/kafka/pom.xml, copied once into
#     $HOME/.cache/sluice/kafka-<version>/libs (SLUICE_TEST_KAFKA_LIBS overrides)
#   - python3 + moto[server] (apt / pip)    : the S3 server used by tests
#   - chromium (apt, only if missing)       : the web UI test (engine/tests/ui.rs)
#
# Idempotent and fast when everything is present (no network, no root needed).
# Prints one line per thing it installs. Can be executed or sourced (it defines
# `sluice_ensure_deps` and calls it; it never calls `exit` when sourced).

sluice_ensure_deps() {
    local log
    log="$(mktemp -t sluice-ensure-deps.XXXXXX)"

    # Run a command as root: directly if we are root, else via sudo if available.
    _sluice_as_root() {
        if [ "$(id -u)" -eq 0 ]; then
            "$@"
        elif command -v sudo >/dev/null 2>&1; then
            sudo -n "$@"
        else
            echo "ensure-deps: need root to run: $*" >&2
            return 1
        fi
    }

    _sluice_fail() {
        echo "ensure-deps: FAILED: $1 (log follows)" >&2
        tail -n 40 "$log" >&2
        rm -f "$log"
        return 1
    }

    # Whether moto's server can be imported (found without importing it: fast).
    _sluice_has_moto() {
        python3 -c 'import importlib.util as u, sys; sys.exit(0 if u.find_spec("moto") and u.find_spec("flask") else 1)' \
            >/dev/null 2>&1
    }

    # ---- apt packages -------------------------------------------------------
    local missing=() pkg
    if command -v dpkg-query >/dev/null 2>&1; then
        local want=(clang libclang-dev postgresql mariadb-server redis-server)
        command -v java >/dev/null 2>&1 || want+=(openjdk-17-jre-headless)
        command -v mvn >/dev/null 2>&1 || want+=(maven)
        # The web UI test renders the page in Debian's headless Chromium.
        command -v chromium >/dev/null 2>&1 || want+=(chromium)
        if ! command -v python3 >/dev/null 2>&1; then
            want+=(python3 python3-pip)
        elif ! _sluice_has_moto && ! python3 -m pip --version >/dev/null 2>&1; then
            want+=(python3-pip)
        fi
        for pkg in "${want[@]}"; do
            if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
                missing+=("$pkg")
            fi
        done
    elif ! command -v clang >/dev/null 2>&1; then
        echo "ensure-deps: warning: not a Debian system and clang not found; install clang + libclang manually" >&2
    fi
    if [ "${#missing[@]}" -gt 0 ]; then
        for pkg in "${missing[@]}"; do
            echo "ensure-deps: installing $pkg (apt-get)"
        done
        _sluice_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >>"$log" 2>&1 \
            || { _sluice_fail "apt-get update"; return 1; }
        _sluice_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >>"$log" 2>&1 \
            || { _sluice_fail "apt-get install ${missing[*]}"; return 1; }
    fi

    # ---- rustup components --------------------------------------------------
    if command -v rustup >/dev/null 2>&1; then
        local installed comp
        installed="$(rustup component list --installed 2>/dev/null || true)"
        for comp in rustfmt clippy; do
            if ! grep -q "^${comp}\(-\|$\)" <<<"$installed"; then
                echo "ensure-deps: installing rust component $comp (rustup)"
                rustup component add "$comp" >>"$log" 2>&1 \
                    || { _sluice_fail "rustup component add $comp"; return 1; }
            fi
        done
    elif ! command -v cargo >/dev/null 2>&1; then
        echo "ensure-deps: warning: neither rustup nor cargo found; install Rust from https://rustup.rs" >&2
    fi

    # ---- moto (S3 stand-in for tests) ---------------------------------------
    if ! _sluice_has_moto; then
        echo "ensure-deps: installing moto[server] (pip)"
        local pipargs=(install --quiet 'moto[server]')
        if ! python3 -m pip "${pipargs[@]}" >>"$log" 2>&1; then
            # Debian's system python is "externally managed" (PEP 668).
            if grep -q 'externally-managed-environment' "$log"; then
                python3 -m pip "${pipargs[@]}" --break-system-packages >>"$log" 2>&1 \
                    || { _sluice_fail "pip install moto[server]"; return 1; }
            else
                _sluice_fail "pip install moto[server]"; return 1
            fi
        fi
        python3 -c 'import moto.server, flask' >>"$log" 2>&1 \
            || { _sluice_fail "moto installed but 'import moto.server, flask' still fails"; return 1; }
    fi

    # ---- Apache Kafka jars (the broker the tests start) -----------------------
    local kafka_version kafka_libs pom
    pom="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/kafka/pom.xml"
    kafka_version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")"
    kafka_libs="${SLUICE_TEST_KAFKA_LIBS:-$HOME/.cache/sluice/kafka-$kafka_version/libs}"
    if [ ! -f "$kafka_libs/.complete" ]; then
        echo "ensure-deps: fetching the Apache Kafka $kafka_version jars into $kafka_libs (mvn)"
        rm -rf "$kafka_libs.tmp"
        mvn -q -B -f "$pom" dependency:copy-dependencies -DincludeScope=runtime \
            -DoutputDirectory="$kafka_libs.tmp" >>"$log" 2>&1 \
            || { _sluice_fail "mvn dependency:copy-dependencies (Kafka $kafka_version)"; return 1; }
        touch "$kafka_libs.tmp/.complete"
        rm -rf "$kafka_libs"
        mkdir -p "$(dirname "$kafka_libs")"
        mv "$kafka_libs.tmp" "$kafka_libs"
    fi

    rm -f "$log"
    unset -f _sluice_as_root _sluice_fail _sluice_has_moto
    return 0
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    sluice_ensure_deps
else
    sluice_ensure_deps
fi
