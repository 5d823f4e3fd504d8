#!/usr/bin/env bash
# Installs what the Spark Streaming baselines need, when it is missing, and is quiet
# when nothing is (one line on stderr per thing it installs or builds):
#
#   $SLUICE_SPARK_CACHE/venv        Python venv with pyspark==4.3.0 (Spark's jars, spark-submit)
#   $SLUICE_SPARK_CACHE/kafka-jars  the Kafka 0-10 DStream connector + kafka-clients (pom.xml)
#   $SLUICE_SPARK_CACHE/classes     the Java jobs (src/), compiled; and sluice-spark-bench.jar
#
# SLUICE_SPARK_CACHE defaults to $HOME/.cache/sluice/spark. Exits non-zero with a
# message on stderr when something cannot be installed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${SLUICE_SPARK_CACHE:-$HOME/.cache/sluice/spark}"
pyspark_version=4.3.0
venv="$cache/venv"
kjars="$cache/kafka-jars"
classes="$cache/classes"
jar="$cache/sluice-spark-bench.jar"

say() { echo "setup: $*" >&2; }
fail() { echo "setup: error: $*" >&2; exit 1; }
# Runs a command with its output kept in a log, shown only when it fails.
quiet() {
    local log
    log="$(mktemp)"
    if ! "$@" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}

mkdir -p "$cache"

# --- Java 17+ and Maven -------------------------------------------------------------
apt_install() {
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing $* (apt-get)"
        quiet apt-get update -q || fail "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive quiet apt-get install -y -q "$@" || fail "apt-get install $* failed"
    else
        fail "$* is missing; install it (Java 17+ JDK and Maven are needed)"
    fi
}
command -v javac >/dev/null || apt_install openjdk-17-jdk-headless
command -v mvn >/dev/null || apt_install maven
jv="$(javac -version 2>&1 | awk '{print $2}' | cut -d. -f1)"
[ "${jv:-0}" -ge 17 ] 2>/dev/null || fail "javac $jv found; Spark 4 needs Java 17 or newer"

# --- the venv with pyspark ----------------------------------------------------------
have_pyspark() {
    [ -x "$venv/bin/python" ] &&
        [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("pyspark"))' 2>/dev/null)" = "$pyspark_version" ]
}
if ! have_pyspark; then
    say "installing pyspark==$pyspark_version into $venv"
    if [ ! -x "$venv/bin/python" ]; then
        quiet python3 -m venv "$venv" ||
            fail "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    fi
    quiet "$venv/bin/pip" install -q --disable-pip-version-check "pyspark==$pyspark_version" ||
        fail "pip install pyspark==$pyspark_version failed"
    have_pyspark || fail "pyspark $pyspark_version is not importable from $venv"
fi
pyspark_dir="$("$venv/bin/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"
[ -f "$pyspark_dir/jars/spark-streaming_2.13-$pyspark_version.jar" ] ||
    fail "$pyspark_dir/jars has no spark-streaming_2.13-$pyspark_version.jar"

# --- the Kafka connector jars (recopied when pom.xml changes) -------------------------
pom_sum="$(sha256sum "$here/pom.xml" | cut -d' ' -f1)"
if [ "$(cat "$kjars/.pom.sha256" 2>/dev/null)" != "$pom_sum" ]; then
    say "copying the Kafka 0-10 connector jars into $kjars (mvn)"
    rm -rf "$kjars"
    quiet mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$kjars" ||
        fail "mvn dependency:copy-dependencies failed (pom: $here/pom.xml)"
    ls "$kjars"/spark-streaming-kafka-0-10_2.13-*.jar >/dev/null 2>&1 ||
        fail "no spark-streaming-kafka-0-10 jar in $kjars"
    echo "$pom_sum" >"$kjars/.pom.sha256"
fi

# --- the jobs: recompiled when a source is newer or the classpath changed -------------
cp_sig="$(ls "$pyspark_dir/jars" "$kjars" | sha256sum | cut -d' ' -f1)"
stamp="$classes/.stamp"
need_build=0
if [ ! -f "$stamp" ] || [ ! -f "$jar" ] || [ "$(cat "$stamp")" != "$cp_sig" ]; then
    need_build=1
elif [ -n "$(find "$here/src" -name '*.java' -newer "$stamp" -print -quit)" ]; then
    need_build=1
fi
if [ "$need_build" = 1 ]; then
    say "compiling the Java jobs into $classes"
    rm -rf "$classes"
    mkdir -p "$classes"
    mapfile -t srcs < <(find "$here/src" -name '*.java' | sort)
    quiet javac -nowarn --release 17 -encoding UTF-8 -d "$classes" \
        -cp "$pyspark_dir/jars/*:$kjars/*" "${srcs[@]}" || fail "javac failed"
    quiet jar --create --file "$jar" -C "$classes" . || fail "jar failed"
    echo "$cp_sig" >"$stamp"
fi
