#!/usr/bin/env bash
# Runs check.sh and java-check.sh on a lent GPU machine while the Java bundle's parts are still arriving, so that
# the device minutes go to checks, not to waiting: each device call carries one part in a folder .devparts*/
# (.devparts1/ ... .devparts5/, which .git/info/exclude ignores with /.devparts*/; each named in its call's carry,
# so that nothing needs changing here between two calls) and runs one of
#
#     bash bench/gpu/relay.sh part              # the first parts: moved to /tmp/t2d-parts; the first call also
#                                               # starts check.sh in the background (setsid: it outlives the call),
#                                               # from a copy of the checkout in /tmp/t2d-relay/repo
#     bash bench/gpu/relay.sh finish [SECONDS]  # the last part: moved too; in the background, once check.sh has
#                                               # ended (or run 7 minutes), java-check.sh --parts /tmp/t2d-parts;
#                                               # waits up to SECONDS (default 540) for it
#     bash bench/gpu/relay.sh collect [SECONDS] # waits again, if finish's wait ended first
#
# finish and collect copy what has been written so far to $OUT: gpu-check.log, gpu-check.json, java-check.log,
# java-conformance.out, java-junit.out, java-steps.json, py-steps.json (7 files; cpu-threads.json with
# T2D_RELAY_JAVA_ARGS="--cpu-threads"), and rounds/ with --rounds. A
# first part on a machine where an earlier relay ran to its end removes that relay's state first; a second finish
# waits for the first one's java-check.sh instead of starting another. The background logs stay in
# /tmp/t2d-relay. Environment: T2D_RELAY_JAVA_ARGS (say --quick; default none: 1 s of timing per mode) for java-check.sh;
# T2D_RELAY_AB=1 on the first part: bench/gpu/ab.sh --rounds 2 (the kernel variants of bench/gpu/experiments, an
# estimated 5 minutes with five variants, stopped at 15) after check.sh and before java-check.sh (which then waits up to 22 minutes
# from the start of check.sh instead of 7; give finish a wait that covers it), its ab.log copied out with the rest.
set -u -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
R=/tmp/t2d-relay
P=/tmp/t2d-parts

receive() {
    if compgen -G "$ROOT/.devparts*/*" >/dev/null; then mv "$ROOT"/.devparts*/* "$P"/; fi
    echo "parts here: $(ls "$P" | tr '\n' ' ')($(du -sh "$P" | cut -f1))"
}

# The checks run from a copy of the checkout: each device call copies the checkout there afresh, and a script
# reading its files meanwhile can find them missing (check.sh's build did, the first time).
snapshot() {
    [ -d "$R/repo" ] && return
    mkdir -p "$R/repo"
    tar -C "$ROOT" --exclude='./.devparts*' -cf - . | tar -C "$R/repo" -xf -
}

start_check() {
    [ -e "$R/check.started" ] && return
    date +%s > "$R/check.started"
    snapshot
    # with T2D_RELAY_AB=1, the kernel variants' A/B (ab.sh) runs after check.sh, before java-check.sh may start
    local ab=""
    if [ "${T2D_RELAY_AB:-}" = 1 ]; then ab=1; touch "$R/ab.wanted"; fi
    ( cd "$R/repo" && R="$R" OUT="$R/check" AB="$ab" setsid bash -c 'bash bench/gpu/check.sh > "$R/check.out" 2>&1; rc=$?
        echo $rc > "$R/check.only.rc"
        [ -n "$AB" ] && OUT="$R/ab" timeout 900 bash bench/gpu/ab.sh --rounds 2 > "$R/ab.out" 2>&1; echo $rc > "$R/check.rc"' \
        </dev/null >/dev/null 2>&1 & )
    echo "check.sh started in the background${ab:+, then ab.sh}"
}

progress() {
    local t0
    t0=$(cat "$R/check.started" 2>/dev/null || date +%s)
    echo "--- $(( $(date +%s) - t0 )) s since check.sh started"
    if [ -f "$R/check.rc" ]; then echo "check.sh ended: exit $(cat "$R/check.rc"); $(grep -E '^[0-9]+ passed' "$R/check.out" | tail -n 1)";
    elif [ -f "$R/check.only.rc" ]; then echo "check.sh ended: exit $(cat "$R/check.only.rc"); ab.sh running: $(tail -n 1 "$R/ab.out" 2>/dev/null | cut -c1-160)";
    else echo "check.sh running: $(tail -n 1 "$R/check.out" 2>/dev/null | cut -c1-160)"; fi
    if [ -f "$R/java.rc" ]; then echo "java-check.sh ended: exit $(cat "$R/java.rc"); $(grep -E '^[0-9]+ passed' "$R/java.out" | tail -n 1)";
    elif [ -f "$R/java.out" ]; then echo "java-check.sh running: $(grep '^===' "$R/java.out" | tail -n 1)"; fi
}

copy_out() {
    [ -n "${OUT:-}" ] || return 0
    local f
    for f in "$R"/check/gpu-check.log "$R"/check/gpu-check.json "$R"/java/java-check.log "$R"/java/java-conformance.out \
            "$R"/java/java-junit.out "$R"/java/java-steps.json "$R"/java/py-steps.json "$R"/java/cpu-threads.json; do
        [ -f "$f" ] && cp "$f" "$OUT/"
    done
    [ -d "$R/java/rounds" ] && cp -r "$R/java/rounds" "$OUT/"  # java-check.sh --rounds: each round's timings
    [ -f "$R/ab/ab.log" ] && cp "$R/ab/ab.log" "$OUT/"  # T2D_RELAY_AB=1
    return 0
}

wait_java() {
    local limit=$1 t0
    t0=$(date +%s)
    while [ ! -f "$R/java.rc" ] && [ $(( $(date +%s) - t0 )) -lt "$limit" ]; do sleep 5; done
    progress
    copy_out
    if [ -f "$R/java.rc" ]; then
        echo "=== check.sh summary"; grep -E '^(FAIL|[0-9]+ passed)' "$R/check.out" | tail -n 40
        echo "=== java-check.sh, from its benchmark on"; sed -n '/=== step benchmark/,$p' "$R/java.out" | tail -n 80
        echo "=== java-check.sh failures"; grep -E '^FAIL' "$R/java.out" | head -n 40
    else
        echo "not finished: run relay.sh collect"
    fi
}

# A machine still warm from an earlier relay that ran to its end: its state goes (at a part call, which every relay
# begins with), so that this relay's checks run.
fresh() {
    if [ -f "$R/java.rc" ]; then rm -rf "$R" "$P"; echo "an earlier relay's state removed"; fi
}

case "${1:-}" in
    part)
        fresh; mkdir -p "$R/check" "$R/java" "$P"; receive; start_check; progress ;;
    finish)
        mkdir -p "$R/check" "$R/java" "$P"; receive; start_check
        if [ -e "$R/java.started" ]; then  # a second finish (after a timeout): wait for the first one's run
            echo "java-check.sh was started already"; wait_java "${2:-540}"; exit 0
        fi
        date +%s > "$R/java.started"
        bound=420  # check.sh alone; with ab.sh after it, up to its own 900 s more
        [ -f "$R/ab.wanted" ] && bound=1320
        ( cd "$R/repo" && OUT="$R/java" setsid bash -c "while [ ! -f $R/check.rc ] && [ \$(( \$(date +%s) - \$(cat $R/check.started) )) -lt $bound ]; do sleep 2; done; \
            bash bench/gpu/java-check.sh --parts $P ${T2D_RELAY_JAVA_ARGS:-} > $R/java.out 2>&1; echo \$? > $R/java.rc" \
            </dev/null >/dev/null 2>&1 & )
        echo "java-check.sh starts once check.sh has ended"
        wait_java "${2:-540}" ;;
    collect)
        wait_java "${2:-540}" ;;
    *)
        sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 2 ;;  # the comment block above
esac
