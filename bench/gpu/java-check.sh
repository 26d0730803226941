#!/usr/bin/env bash
# Checks and times the Java side on a GPU machine in ONE run, from the runtime that bench/gpu/java-bundle.sh
# prepared (a jlink'd JRE, the -Pgpu jars, libtorch's CUDA natives, libtext2data.so): no JDK, Maven or network
# needed there. Written for a lent GPU machine with Python 3.12, torch + cu130 and NVIDIA's nvidia-* wheels:
#
#     bash bench/gpu/java-check.sh                       # bundle at bench/gpu/java-bundle
#     bash bench/gpu/java-check.sh --bundle DIR
#     bash bench/gpu/java-check.sh --parts DIR           # DIR holds java-bundle.tgz.part-*: unpacked to /tmp first
#
# 1. environment: nvidia-smi, python/torch, the bundle's MANIFEST; LD_LIBRARY_PATH gets every lib folder under
#    the python `nvidia` package (the CUDA 13 runtime, cuDNN 9, cuBLAS, ... that libtorch needs), and the
#    libraries libtorch_cuda.so needs are checked with ldd;
# 2. what the JVM sees (GpuStepBench --info): CUDA available, the fused engine on cuda;
# 3. conformance (`text2data conformance`): every fixture case on the CPU and on CUDA, both engines, end to end
#    and with the recorded g (BARRIER lines count as passed and are listed);
# 4. JUnit, with the console launcher: the CUDA tests of ConformanceTest and FusedOptimizerTest (their CPU tests
#    are the build's), NativeLoadFailureTest and HostSyncCudaTest; then CapturedStepCudaTest in a JVM of its own
#    (a JVM crash is reported with the start of its hs_err file);
# 5. the step benchmark on the bench's workloads: where python3 has a CUDA torch, first the clean-room reference's
#    run_step, its plain two-pass, and that with Adam(fused=True), alone and captured as a CUDA graph
#    (bench/python/bench_ref.py --device cuda; it writes the weights); then, on the same weights, Java runStep per
#    engine, the captured step, the plain two-pass, and the two passes alone in turn and on two threads
#    (GpuStepBench; should it fail, once more without the captured step); the tables of medians and of the issues'
#    target ratios (with --rounds, per round too), and the two-thread ratio of the passes.
# Ends with `N passed, M failed`; exit 0 only when none failed. Everything printed also goes to
# $OUT/java-check.log (bench/gpu/last-java-check/ without $OUT), the timings to java-steps.json / py-steps.json.
# Options: --bundle DIR, --parts DIR (above), --quick (shorter timings), --workloads a,b, --rounds N (Python and
# Java N times, Python first in odd rounds and Java in even ones; the tables show the medians of the rounds' medians
# and each round's target ratios; once the captured step fails, later rounds skip it), --cpu-threads (6., about a
# minute: this host's CPU cores, all of them, for the thread rule and concurrent passes, which a 2-core machine
# cannot measure: Interleaved on mlp-deep and transformer-small, the default runStep, runStep with concurrent passes
# and the plain two-pass step, each under OpenBLAS:libtorch threads N:1 (the rule), 1:N, 1:1 and N/2:N/2).
# Environment: PYTHON, T2D_JAVA_TIMEOUT (s, per Java step, 420).
set -u -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
if [ -n "${OUT:-}" ]; then D="$OUT"; else D="$HERE/last-java-check"; fi
mkdir -p "$D"
LOG="$D/java-check.log"

BUNDLE="$HERE/java-bundle"
PARTS=""
QUICK=0
CPU_THREADS=0
ROUNDS=1
WORKLOADS="mlp-deep-small,mlp-deep,mlp-wide,transformer-small"
while [ $# -gt 0 ]; do
    case "$1" in
        --bundle) BUNDLE="$2"; shift ;;
        --parts) PARTS="$2"; shift ;;
        --quick) QUICK=1 ;;
        --cpu-threads) CPU_THREADS=1 ;;
        --rounds) ROUNDS="$2"; shift ;;
        --workloads) WORKLOADS="$2"; shift ;;
        -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;  # the comment block above
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
    shift
done

case "$ROUNDS" in ''|*[!0-9]*|0*) echo "--rounds wants a whole number from 1 on, got '$ROUNDS'" >&2; exit 2 ;; esac
case "$BUNDLE" in /*) ;; *) BUNDLE="$PWD/$BUNDLE" ;; esac
case "$PARTS" in /*|"") ;; *) PARTS="$PWD/$PARTS" ;; esac

main() {
    local passed=0 failed=0 t_start
    t_start=$(date +%s)
    ok()   { echo "PASS $*"; passed=$((passed + 1)); }
    bad()  { echo "FAIL $*"; failed=$((failed + 1)); }
    sect() { echo; echo "=== $* ($(( $(date +%s) - t_start )) s)"; }
    summary() {
        sect "summary"
        echo "log: $LOG; total $(( $(date +%s) - t_start )) s"
        echo "$passed passed, $failed failed"
        [ "$failed" = 0 ]
    }

    sect "environment"
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "host: $(uname -srm), $(nproc) cpus"
    echo "repo: $ROOT ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo 'no git'))"
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv || true
    else
        echo "nvidia-smi: not found"
    fi

    # --- the bundle: a folder, or parts to unpack
    if [ -n "$PARTS" ]; then
        local first
        first=$(ls "$PARTS"/*.tgz.part-* 2>/dev/null | head -n 1)
        if [ -z "$first" ]; then
            bad "bundle: no *.tgz.part-* in $PARTS"
            summary; return
        fi
        if [ -f "$PARTS/SHA256SUMS" ]; then
            if (cd "$PARTS" && sha256sum -c --quiet SHA256SUMS); then ok "bundle: parts match SHA256SUMS"; else bad "bundle: parts do not match SHA256SUMS"; fi
        fi
        local dest="${TMPDIR:-/tmp}/t2d-java-bundle"
        rm -rf "$dest"; mkdir -p "$dest"
        echo "unpacking $(ls "$PARTS"/*.tgz.part-* | wc -l) parts into $dest ..."
        if cat "$PARTS"/*.tgz.part-* | tar -xzf - -C "$dest"; then
            BUNDLE="$dest/$(ls "$dest" | head -n 1)"
        else
            bad "bundle: could not unpack the parts in $PARTS"
            summary; return
        fi
    fi
    if [ ! -x "$BUNDLE/bin/java" ] || [ ! -x "$BUNDLE/jre/bin/java" ]; then
        bad "bundle: no bundle at $BUNDLE (make one with bench/gpu/java-bundle.sh; --bundle DIR or --parts DIR)"
        summary; return
    fi
    echo "bundle: $BUNDLE"
    sed 's/^/  /' "$BUNDLE/MANIFEST.txt" 2>/dev/null || true
    local J="$BUNDLE/bin/java"

    # --- python (torch; CUDA for the reference timings) and the CUDA libraries of its nvidia-* wheels
    local py="" cand
    for cand in ${PYTHON:-} python3 /usr/bin/python3 python; do
        if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import torch' >/dev/null 2>&1; then py=$(command -v "$cand"); break; fi
    done
    local py_cuda=0
    if [ -n "$py" ]; then
        "$py" -c 'import sys, torch; print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA", torch.version.cuda, "| cuda available", torch.cuda.is_available())' || true
        "$py" -c 'import torch; assert torch.cuda.is_available()' >/dev/null 2>&1 && py_cuda=1
        local libs
        libs=$("$py" - <<'EOF' 2>/dev/null
import os
try:
    import nvidia
except ImportError:
    raise SystemExit(0)
dirs = set()
for base in list(nvidia.__path__):
    for root, _, files in os.walk(base):
        if os.path.basename(root) == "lib" and any(".so" in f for f in files):
            dirs.add(root)
print(":".join(sorted(dirs)))
EOF
)
        if [ -n "$libs" ]; then
            export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
            echo "LD_LIBRARY_PATH: $(echo "$libs" | tr ':' '\n' | wc -l) lib folders of the python nvidia package prepended"
        else
            echo "python has no nvidia-* wheels: the CUDA libraries must come from the system (ldconfig / LD_LIBRARY_PATH)"
        fi
    else
        echo "python: no python3 with torch (the reference timings are skipped)"
    fi
    local cudalib
    cudalib=$(ls "$BUNDLE"/natives/org/bytedeco/pytorch/linux-x86_64-gpu/libtorch_cuda.so 2>/dev/null)
    if [ -n "$cudalib" ]; then
        local missing
        missing=$(ldd "$cudalib" 2>/dev/null | awk '/not found/ {print $1}' | grep -v -E '^lib(c10|torch_cpu|gomp|openblas)' | tr '\n' ' ')
        ldd "$cudalib" 2>/dev/null | grep -E 'libcu|libnccl|libnvJit|libcudnn' | sed 's/ (0x.*//; s/^\s*/  /'
        if [ -z "$missing" ]; then ok "libraries: every CUDA library libtorch_cuda.so needs is found"; else bad "libraries: not found: $missing"; fi
    else
        bad "bundle: no libtorch_cuda.so under natives/ (not a -Pgpu bundle?)"
    fi

    # --- what the JVM sees
    sect "the JVM (GpuStepBench --info)"
    local info
    info=$(T2D_EXTRA_CP="$BUNDLE/bench" timeout 300 "$J" org.text2data.bench.GpuStepBench --info 2>&1)
    echo "$info"
    local have_cuda=0
    if echo "$info" | grep -q '^cuda available: true'; then ok "jvm: libtorch sees CUDA"; have_cuda=1; else bad "jvm: libtorch sees no CUDA"; fi
    if echo "$info" | grep -q '^fused engine on cuda: fused-cuda'; then ok "jvm: the fused engine runs on cuda"; else bad "jvm: no fused-cuda engine"; fi

    # --- conformance on CPU and CUDA, both engines
    sect "conformance (text2data conformance)"
    local conf="$D/java-conformance.out" rc
    (cd "$ROOT" && timeout "${T2D_JAVA_TIMEOUT:-420}" "$J" -Dtext2data.home="$ROOT" org.text2data.cli.Main conformance \
        "$ROOT/core/src/test/resources/conformance") > "$conf" 2>&1
    rc=$?
    cat "$conf"
    local c_ok c_fail c_barrier c_cuda
    c_ok=$(grep -c '^ok ' "$conf")
    c_fail=$(grep -c '^FAIL ' "$conf")
    c_barrier=$(grep -c '^BARRIER ' "$conf")
    c_cuda=$(grep -E '^(ok|FAIL|BARRIER) ' "$conf" | grep -c -- '-cuda ')
    passed=$((passed + c_ok + c_barrier))
    failed=$((failed + c_fail))
    echo "conformance: $c_ok ok, $c_barrier on the barrier, $c_fail failed ($c_cuda of the lines on CUDA); exit $rc"
    if [ "$c_barrier" -gt 0 ]; then
        echo "on the barrier (counted as passed; g - g_constraint at the flipping step):"
        grep '^BARRIER ' "$conf" | sed 's/^/  /'
    fi
    if [ $have_cuda = 1 ] && [ "$c_cuda" = 0 ]; then bad "conformance: no case ran on CUDA"; fi
    if [ $rc = 124 ]; then bad "conformance: timed out"; fi
    if ! tail -n 1 "$conf" | grep -qE '^[0-9]+ passed, [0-9]+ failed$'; then bad "conformance: no summary line (exit $rc)"; fi

    # --- JUnit: the tests that matter on a GPU; the captured step in a JVM of its own, so that a crash there
    # loses no other result
    sect "JUnit (the CUDA tests of ConformanceTest and FusedOptimizerTest, NativeLoadFailureTest, HostSyncCudaTest; then CapturedStepCudaTest)"
    local tcp junit="$D/java-junit.out"
    tcp="$BUNDLE/test/classes:$(sed "s#\([^:]*\)#$BUNDLE/\1#g" "$BUNDLE/classpath.txt")"
    for cand in "$BUNDLE"/test/lib/*.jar; do
        case "$cand" in *junit-platform-console-standalone*) ;; *) tcp="$tcp:$cand" ;; esac
    done
    : > "$junit"
    junit_run() {
        local out="$D/java-junit.part" j_ok j_fail j_skip j_abort crash
        # from core/, where the tests find the fixtures (src/test/resources)
        (cd "$ROOT/core" && rm -f hs_err_pid*.log && timeout "${T2D_JAVA_TIMEOUT:-420}" "$BUNDLE/jre/bin/java" \
            --enable-native-access=ALL-UNNAMED --sun-misc-unsafe-memory-access=allow -Xss4m \
            -Dorg.bytedeco.javacpp.cachedir="$BUNDLE/javacpp-cache" \
            -jar "$BUNDLE/test/lib/junit-platform-console-standalone.jar" execute --disable-banner --disable-ansi-colors \
            --details=tree --class-path "$tcp" "$@") > "$out" 2>&1
        rc=$?
        cat "$out" >> "$junit"
        grep -vE '^(ok|FAIL|BARRIER) ' "$out" | tail -n 60
        crash=$(ls "$ROOT"/core/hs_err_pid*.log 2>/dev/null | head -n 1)
        if [ -n "$crash" ]; then
            bad "junit: the JVM crashed ($*); the start of $(basename "$crash"):"
            head -n 40 "$crash" | sed 's/^/  /' | tee -a "$junit"
        fi
        j_ok=$(sed -n 's/.*\[ *\([0-9]*\) tests successful *\].*/\1/p' "$out" | tail -n 1)
        j_fail=$(sed -n 's/.*\[ *\([0-9]*\) tests failed *\].*/\1/p' "$out" | tail -n 1)
        j_skip=$(sed -n 's/.*\[ *\([0-9]*\) tests skipped *\].*/\1/p' "$out" | tail -n 1)
        j_abort=$(sed -n 's/.*\[ *\([0-9]*\) tests aborted *\].*/\1/p' "$out" | tail -n 1)  # failed assumptions
        rm -f "$out"
        if [ -z "$j_ok" ]; then
            bad "junit: no summary (exit $rc; $*)"
            return
        fi
        passed=$((passed + j_ok)); failed=$((failed + ${j_fail:-0}))
        if [ $rc != 0 ] && [ "${j_fail:-0}" = 0 ]; then bad "junit: exit $rc (see java-junit.out)"; fi
        if [ "$j_ok" = 0 ] && [ "${j_fail:-0}" = 0 ] && [ $have_cuda = 1 ]; then bad "junit: no test ran ($*)"; fi
        echo "junit: $j_ok successful, ${j_fail:-0} failed, ${j_skip:-0} skipped, ${j_abort:-0} aborted (assumption not met: no CUDA)"
        if [ $have_cuda = 1 ] && [ "${j_skip:-0}${j_abort:-0}" != 00 ]; then bad "junit: tests skipped or aborted on a machine with CUDA"; fi
    }
    junit_run --select-method org.text2data.ConformanceTest#cudaMatchesTheReferenceLikeTheCpuDoes \
        --select-method org.text2data.FusedOptimizerTest#onAGpuTrajectoriesEqualLibtorchsOptimizersToTheSameTolerances \
        --select-class org.text2data.NativeLoadFailureTest --select-class org.text2data.HostSyncCudaTest
    junit_run --select-class org.text2data.CapturedStepCudaTest

    # --- step benchmark: Java (GpuStepBench) and the clean-room Python reference, same weights
    sect "step benchmark (wall time per step, synchronised)"
    local dev=cuda
    if [ $have_cuda = 0 ]; then dev=cpu; echo "no CUDA in the JVM: timing on the CPU (not a GPU result)"; fi
    local weights="${TMPDIR:-/tmp}/t2d-bench-weights" jargs pyargs
    mkdir -p "$weights"
    if [ $QUICK = 1 ]; then jargs=(--warmup 3 --iters 10); pyargs=(--warmup 3 --iters 10); else jargs=(--warmup 10 --budget 1); pyargs=(--warmup 10 --budget 1); fi
    local pyjson="$D/py-steps.json" jjson="$D/java-steps.json" r
    rm -f "$pyjson" "$jjson"
    rm -rf "$D/rounds"; mkdir -p "$D/rounds"
    # Python and Java, ROUNDS times, Python first in odd rounds and Java first in even ones (as bench/compare): the
    # eager steps are bound by the host's launch rate, which drifts; the medians of the rounds' medians and each
    # round's ratios say how much of a difference is drift. Once the captured step has failed, later rounds skip it.
    local captured_args=()
    time_python() {
        local r=$1
        if [ -n "$py" ] && { [ $py_cuda = 1 ] || [ $dev = cpu ]; }; then
            echo "+ $py bench/python/bench_ref.py --device $dev --workloads $WORKLOADS ${pyargs[*]} --weights-dir $weights"
            if (cd "$ROOT" && timeout 600 "$py" -u bench/python/bench_ref.py --device $dev --workloads "$WORKLOADS" "${pyargs[@]}" \
                    --weights-dir "$weights" --json "$D/rounds/py-$r.json"); then
                ok "python: the reference's run_step timed on $dev (round $r)"
            else
                bad "python: bench_ref.py failed (round $r)"
            fi
        elif [ "$r" = 1 ]; then
            echo "python with a CUDA torch: not here; the Java side runs alone, from libtorch's seeded weights"
        fi
    }
    java_bench() {  # round, then extra GpuStepBench options
        local r=$1; shift
        echo "+ GpuStepBench --device $dev --workloads $WORKLOADS ${jargs[*]} $*"
        T2D_EXTRA_CP="$BUNDLE/bench" T2D_BENCH_WEIGHTS="$weights" timeout 900 "$J" org.text2data.bench.GpuStepBench \
            --device $dev --workloads "$WORKLOADS" "${jargs[@]}" --json "$D/rounds/java-$r.json" "$@"
    }
    time_java() {
        local r=$1
        if java_bench "$r" "${captured_args[@]}"; then
            ok "java: runStep and the plain two-pass timed on $dev (round $r)"
        elif [ ${#captured_args[@]} = 0 ]; then
            bad "java: GpuStepBench failed; again without the captured step, in this round and the next ones (round $r)"
            captured_args=(--no-captured)
            if java_bench "$r" "${captured_args[@]}"; then
                ok "java: runStep and the plain two-pass timed on $dev (without the captured step, round $r)"
            else
                bad "java: GpuStepBench failed without the captured step too (round $r)"
            fi
        else
            bad "java: GpuStepBench failed (without the captured step, round $r)"
        fi
    }
    for r in $(seq 1 "$ROUNDS"); do
        [ "$ROUNDS" -gt 1 ] && echo "--- round $r of $ROUNDS"
        if [ $((r % 2)) = 1 ]; then time_python "$r"; time_java "$r"; else time_java "$r"; time_python "$r"; fi
    done
    # the rounds merged: per workload and mode, median_ms the median of the rounds' medians, round_medians_ms each
    # round's by round number; the other fields (min, quartiles, iters) are the last round's
    if command -v python3 >/dev/null 2>&1; then
        python3 - "$D/rounds" "$pyjson" "$jjson" <<'EOF'
import glob, json, os, statistics, sys
rounds, out_py, out_j = sys.argv[1:4]
for kind, out in (("py", out_py), ("java", out_j)):
    files = sorted(glob.glob(os.path.join(rounds, kind + "-*.json")), key=lambda f: int(f.rsplit("-", 1)[1][:-5]))
    if not files:
        continue
    runs = {f.rsplit("-", 1)[1][:-5]: json.load(open(f)) for f in files}  # by round number: a failed round is absent
    merged = runs[max(runs, key=int)]
    for name, res in merged["workloads"].items():
        for mode, r in res.items():
            if isinstance(r, dict) and "median_ms" in r:
                per = {k: x["workloads"][name][mode]["median_ms"] for k, x in runs.items()
                       if mode in x["workloads"].get(name, {})}
                r["median_ms"] = statistics.median(per.values())
                r["round_medians_ms"] = per
    merged["rounds"] = len(runs)
    with open(out, "w") as fh:
        json.dump(merged, fh, indent=1)
EOF
    fi
    if [ -f "$jjson" ] && command -v python3 >/dev/null 2>&1; then
        python3 - "$jjson" "$pyjson" <<'EOF'
import json, os, sys
j = json.load(open(sys.argv[1]))
p = json.load(open(sys.argv[2]))["workloads"] if os.path.exists(sys.argv[2]) else {}
print(f"\nmedian ms per step on {j['device']}, from this run (Python first, then Java, the other way round in even rounds; each mode on its own copy of the same weights)")
m = lambda d, k: d[k]["median_ms"] if k in d else float("nan")
print("| workload | Java runStep fused | Java runStep plain | Java plain | Java captured | Python run_step | Python plain "
      "| Python plain, fused Adam | Python plain, fused Adam, graphed |")
print("|---|---|---|---|---|---|---|---|---|")
for name, r in j["workloads"].items():
    q = p.get(name, {})
    print(f"| {name} | {m(r, 'runStep-fused'):.3f} | {m(r, 'runStep-plain'):.3f} | {m(r, 'plain'):.3f} | {m(r, 'captured'):.3f} "
          f"| {m(q, 'constrained'):.3f} | {m(q, 'baseline'):.3f} | {m(q, 'fused'):.3f} | {m(q, 'graphed'):.3f} |")
rounds = j.get("rounds", 1)
if rounds > 1:
    print(f"(medians of {rounds} rounds, Python then Java in each)")
print("\nratios from this run (issue targets: fused / Python fused-Adam plain <= 1.05; captured / Python graphed <= 1.10)")
print("| workload | Java fused / Python run_step | Java fused / Java plain | Java fused / Python fused-Adam plain "
      "| Java captured / Python graphed | Java captured / Python run_step |")
print("|---|---|---|---|---|---|")
for name, r in j["workloads"].items():
    q = p.get(name, {})
    jf, jc = m(r, "runStep-fused"), m(r, "captured")
    print(f"| {name} | {jf / m(q, 'constrained'):.3f} | {jf / m(r, 'plain'):.3f} | {jf / m(q, 'fused'):.3f} "
          f"| {jc / m(q, 'graphed'):.3f} | {jc / m(q, 'constrained'):.3f} |")
if rounds > 1:
    print("\nthe same two target ratios round by round (each round's Java median over the same round's Python median)")
    per = lambda d, k: d[k].get("round_medians_ms", {}) if k in d else {}
    by_round = lambda a, b: [a[k] / b[k] for k in sorted(a, key=int) if k in b]  # the same round on both sides
    for name, r in j["workloads"].items():
        q = p.get(name, {})
        f = by_round(per(r, "runStep-fused"), per(q, "fused"))
        c = by_round(per(r, "captured"), per(q, "graphed"))
        print(f"  {name}: Java fused / Python fused-Adam plain {' '.join(f'{x:.3f}' for x in f)}; "
              f"captured / graphed {' '.join(f'{x:.3f}' for x in c)}")
if any("passes-2threads" in r for r in j["workloads"].values()):
    print("\nthe two passes alone (torch::autograd::grad), at the same time on two threads over in turn: below about 0.85, "
          "concurrent passes would pay on this device too (Constraint.setConcurrentPasses runs on the CPU only)")
    for name, r in j["workloads"].items():
        print(f"  {name}: {m(r, 'passes-2threads') / m(r, 'passes'):.3f} ({m(r, 'passes-2threads'):.3f} / {m(r, 'passes'):.3f} ms)")
EOF
    fi

    # --- the CPU: the thread rule and concurrent passes on every core of this host (not a GPU result)
    if [ $CPU_THREADS = 1 ]; then
        local n half cfgs
        n=$(nproc); half=$(( n / 2 > 1 ? n / 2 : 1 ))
        cfgs=$(printf '%s\n' "$n:1" "1:$n" "1:1" "$half:$half" | awk '!seen[$0]++' | paste -sd, -)  # once each
        sect "CPU: thread configurations and concurrent passes on $n cores (Interleaved, OpenBLAS:libtorch threads)"
        echo "+ Interleaved --workloads mlp-deep,transformer-small --engines fused,fused+concurrent --variants runStep,plain --threads $cfgs --blocks 3 --calls 3 --warmup 2"
        if T2D_EXTRA_CP="$BUNDLE/bench" T2D_BENCH_WEIGHTS="$weights" timeout 600 "$J" org.text2data.bench.Interleaved \
                --workloads mlp-deep,transformer-small --engines fused,fused+concurrent --variants runStep,plain \
                --threads "$cfgs" --blocks 3 --calls 3 --warmup 2 --json "$D/cpu-threads.json"; then
            ok "cpu: thread configurations timed on $n cores"
        else
            bad "cpu: Interleaved failed"
        fi
    fi

    summary
}

main 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
