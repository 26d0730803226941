#!/usr/bin/env bash
# A/B of CUDA kernel variants in one call on a lent GPU: the library as committed ("base") and the library with
# each patch applied, each built with cmake from a copy of native/, then timed in turns by check_cuda.py
# --timing-only, whose timing lists still check every result against float64 (the order of the variants is
# reversed every other round).
#
#     bash bench/gpu/ab.sh [--rounds N] [--check] [--host] [PATCH...]
#
# PATCH: a `git diff` / `git show` of native/ (applied with patch -p1 at the repository's root); default: every
# bench/gpu/experiments/*.patch. --rounds N (default 3): turns per variant; the summary gives each list's median
# over the turns that passed their checks. --check: also run check_cuda.py's whole correctness suite once on each
# variant (about 40 s each on an H100). --host: the same for the CPU path (check_cuda.py --host; no GPU needed, for
# patches of the CPU code and to try the script). Needs nvcc, cmake and a python3 with torch (PYTHON, NVCC and
# T2D_CUDA_ARCH as in check.sh). Everything printed also goes to $OUT/ab.log (or bench/gpu/ab-last.log without
# $OUT, the turns' files in bench/gpu/ab-last/, emptied first). Exit status: 0 when every variant built and every
# turn passed its checks. Environment: T2D_AB_TURN_TIMEOUT (s per check_cuda.py run, default 240).
set -u -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ROUNDS=3
CHECK=0
HOST=()
PATCHES=()
TURN_TIMEOUT="${T2D_AB_TURN_TIMEOUT:-240}"
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="${2:?--rounds needs a number}"; shift ;;
        --check) CHECK=1 ;;
        --host) HOST=(--host) ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        -*) echo "unknown option: $1" >&2; exit 2 ;;
        *) [ -f "$1" ] || { echo "no such patch: $1" >&2; exit 2; }
           PATCHES+=("$(cd "$(dirname "$1")" && pwd)/$(basename "$1")") ;;
    esac
    shift
done
if [ ${#PATCHES[@]} = 0 ]; then
    for p in "$HERE"/experiments/*.patch; do [ -f "$p" ] && PATCHES+=("$p"); done
fi
case "$ROUNDS" in ''|*[!0-9]*|0) echo "--rounds: a positive number, got '$ROUNDS'" >&2; exit 2 ;; esac
NAMES=(base)
for p in ${PATCHES[@]+"${PATCHES[@]}"}; do
    n=$(basename "$p" .patch)
    for m in "${NAMES[@]}"; do
        [ "$n" != "$m" ] || { echo "two variants would be called '$n' (base is the committed library): rename the patch" >&2; exit 2; }
    done
    NAMES+=("$n")
done

if [ -n "${OUT:-}" ]; then DEST="$OUT"; LOG="$OUT/ab.log"; else DEST="$HERE/ab-last"; LOG="$HERE/ab-last.log"; fi
mkdir -p "$DEST"
rm -f "$DEST"/ab-*-r*.json "$DEST"/ab-*-r*.log "$DEST"/check-*.log  # an earlier run's turns must not be summarised

main() {
    local nvcc="${NVCC:-nvcc}"
    nvcc=$(command -v "$nvcc" 2>/dev/null || true)
    [ -n "$nvcc" ] || [ ! -x /usr/local/cuda/bin/nvcc ] || nvcc=/usr/local/cuda/bin/nvcc
    [ -n "$nvcc" ] || { echo "FAIL nvcc not found (PATH, NVCC, /usr/local/cuda/bin)"; return 1; }
    command -v cmake >/dev/null || { echo "FAIL cmake not found"; return 1; }
    local py="" cand
    for cand in ${PYTHON:-} python3 /usr/bin/python3; do  # the first with torch, as check.sh
        if command -v "$cand" >/dev/null && "$cand" -c 'import torch' 2>/dev/null; then py=$(command -v "$cand"); break; fi
    done
    [ -n "$py" ] || { echo "FAIL no python3 with torch (PYTHON)"; return 1; }
    local arch="${T2D_CUDA_ARCH:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .\r')}"
    if [ -n "$arch" ] && ! "$nvcc" --list-gpu-code 2>/dev/null | tr ' ' '\n' | grep -qx "sm_$arch"; then
        echo "nvcc cannot target sm_$arch: building for the CMakeLists default"; arch=""
    fi
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); repo at $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "nvcc: $nvcc; cuda arch: ${arch:-the CMakeLists default}; rounds: $ROUNDS; variants: ${NAMES[*]}"
    local work failed=0 i
    work=$(mktemp -d "${TMPDIR:-/tmp}/t2d-ab.XXXXXX")
    local libs=() built=()
    for i in "${!NAMES[@]}"; do
        local name="${NAMES[$i]}" src="$work/${NAMES[$i]}"
        libs+=("")
        if ! mkdir -p "$src" || ! cp -r "$ROOT/native" "$src/"; then
            echo "FAIL $name: could not copy native/"; failed=1; continue
        fi
        if [ "$i" -gt 0 ] && ! patch -d "$src" -p1 --quiet --forward < "${PATCHES[$((i - 1))]}"; then
            echo "FAIL $name: the patch does not apply to this checkout"; failed=1; continue
        fi
        local args=(-S "$src/native" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$nvcc")
        [ -n "$arch" ] && args+=(-DCMAKE_CUDA_ARCHITECTURES="$arch")
        if CUDACXX="$nvcc" cmake "${args[@]}" > "$src/build.log" 2>&1 \
                && cmake --build "$src/build" -j "$(nproc)" --target text2data >> "$src/build.log" 2>&1 \
                && grep -qa 'abi 1, cuda)' "$src/build/libtext2data.so"; then
            echo "built $name"
            libs[$i]="$src/build/libtext2data.so"
            built+=("$name")
        else
            echo "FAIL $name: the build failed:"; tail -n 30 "$src/build.log"; failed=1
        fi
    done
    if [ $CHECK = 1 ]; then
        for i in "${!NAMES[@]}"; do
            [ -n "${libs[$i]}" ] || continue
            echo "=== ${NAMES[$i]}: check_cuda.py, every check"
            timeout "$TURN_TIMEOUT" "$py" -B "$HERE/check_cuda.py" --lib "${libs[$i]}" --no-timing ${HOST[@]+"${HOST[@]}"} \
                > "$DEST/check-${NAMES[$i]}.log" 2>&1 \
                || { echo "FAIL ${NAMES[$i]}: check_cuda.py (see check-${NAMES[$i]}.log)"; failed=1; }
            grep -E '^FAIL|passed, .* failed$' "$DEST/check-${NAMES[$i]}.log"
        done
    fi
    local r order
    for ((r = 1; r <= ROUNDS; r++)); do
        order=("${!NAMES[@]}")
        if (( r % 2 == 0 )); then order=($(printf '%s\n' "${order[@]}" | sort -rn)); fi
        for i in "${order[@]}"; do
            [ -n "${libs[$i]}" ] || continue
            local j="$DEST/ab-${NAMES[$i]}-r$r.json"
            timeout "$TURN_TIMEOUT" "$py" -B "$HERE/check_cuda.py" --lib "${libs[$i]}" --timing-only ${HOST[@]+"${HOST[@]}"} \
                --json "$j" > "${j%.json}.log" 2>&1 \
                || { echo "FAIL ${NAMES[$i]} round $r (see ${j%.json}.log; not in the summary)"; grep '^FAIL' "${j%.json}.log"
                     rm -f "$j"; failed=1; }
        done
    done
    "$py" - "$DEST" ${built[@]+"${built[@]}"} <<'EOF' || failed=1
import glob, json, os, statistics, sys
dest, names = sys.argv[1], sys.argv[2:]
rows = {}  # (list, name) -> [(ms, fraction, span_us)]
for name in names:
    for f in sorted(glob.glob(os.path.join(dest, "ab-%s-r*.json" % name))):
        o = json.load(open(f))
        if o.get("failed", 1):  # a turn whose checks failed says nothing about speed
            continue
        for t in o.get("timings", []):
            for lst, m in t.get("lists", {}).items():
                rows.setdefault((lst, name), []).append(
                    (m["fused"].get("gpu_ms", m["fused"]["wall_ms"]), m["fraction_of_copy"],
                     m.get("device_span_us", float("nan"))))
lists = sorted({k[0] for k in rows}, key=lambda s: (s.count("f32") == 0, s))
print("\nper list: median over the turns that passed of the fused call's time (GPU: CUDA events, L2 flushed; --host: "
      "wall), its share of the same turn's copy bandwidth, and the device span (GPU, warm L2); then the variant's time "
      "over base's")
for lst in lists:
    base = rows.get((lst, "base"))
    for name in names:
        v = rows.get((lst, name))
        if not v:
            continue
        ms = statistics.median(x[0] for x in v)
        rel = ("%.3f" % (ms / statistics.median(x[0] for x in base))) if base else "n/a"
        span = statistics.median(x[2] for x in v)
        print("%-22s %-34s %8.4f ms  %5.1f%% of copy  span %s  %s  (turns %s)" % (
            lst, name, ms, 100 * statistics.median(x[1] for x in v), "n/a" if span != span else "%.2f us" % span, rel,
            " ".join("%.4f" % x[0] for x in v)))
EOF
    rm -rf "$work"
    return $failed
}

main 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
