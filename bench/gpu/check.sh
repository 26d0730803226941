#!/usr/bin/env bash
# Build libtext2data with CUDA, run the native tests, then check and time the CUDA path from Python
# (bench/gpu/check_cuda.py: ctypes + torch). Written to run in ONE call on a lent GPU machine:
#
#     bash bench/gpu/check.sh
#
# Needs nvcc, g++ and a python3 with torch (CUDA build); cmake is used when present (>= 3.22),
# otherwise the library is compiled with nvcc + g++ directly, mirroring native/CMakeLists.txt.
# Everything printed also goes to $OUT/gpu-check.log (or bench/gpu/last-run.log without $OUT), and the
# machine-readable results to gpu-check.json beside it. Exit status: 0 only if every check passed.
#
# Options (for local use; the GPU run needs none):
#   --host           check the CPU entry point t2d_project_host instead (no GPU needed)
#   --quick          fewer timing iterations
#   --build MODE     auto (default: cmake if usable, else nvcc), cmake, nvcc, or cpu (no CUDA at all)
# Environment: PYTHON (interpreter with torch), NVCC, T2D_CUDA_ARCH (e.g. 90: one arch, SASS + PTX),
#   T2D_PY_TIMEOUT (seconds for the Python checks, default 420).
set -u -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    LOG="$OUT/gpu-check.log"
    JSON="$OUT/gpu-check.json"
else
    LOG="$HERE/last-run.log"
    JSON="$HERE/last-run.json"
fi

MODE_HOST=0
QUICK=0
BUILD_MODE=auto
while [ $# -gt 0 ]; do
    case "$1" in
        --host) MODE_HOST=1 ;;
        --quick) QUICK=1 ;;
        --build) BUILD_MODE="${2:-auto}"; shift ;;
        --build=*) BUILD_MODE="${1#--build=}" ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
    shift
done

main() {
    local passed=0 failed=0 t_start
    t_start=$(date +%s)
    ok()   { echo "PASS $*"; passed=$((passed + 1)); }
    bad()  { echo "FAIL $*"; failed=$((failed + 1)); }
    sect() { echo; echo "=== $* ($(( $(date +%s) - t_start )) s)"; }

    sect "environment"
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "host: $(uname -srm), $(nproc) cpus, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) memory"
    echo "repo: $ROOT ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo 'no git'))"
    echo "log:  $LOG"
    local have_smi=0
    if command -v nvidia-smi >/dev/null 2>&1; then
        have_smi=1
        nvidia-smi || true
        nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total,clocks.max.sm,clocks.max.memory \
            --format=csv || true
    else
        echo "nvidia-smi: not found"
    fi

    # --- nvcc: PATH, $NVCC, $CUDA_HOME, /usr/local/cuda*, pip's nvidia-cuda-nvcc
    local nvcc="${NVCC:-}"
    if [ -z "$nvcc" ]; then
        nvcc=$(command -v nvcc 2>/dev/null || true)
    fi
    if [ -z "$nvcc" ]; then
        local cand
        for cand in "${CUDA_HOME:-}/bin/nvcc" "${CUDA_PATH:-}/bin/nvcc" /usr/local/cuda/bin/nvcc \
                    $(ls -d /usr/local/cuda-*/bin/nvcc 2>/dev/null | sort -rV); do
            if [ -x "$cand" ]; then nvcc="$cand"; break; fi
        done
    fi

    # --- python with torch: $PYTHON, python3, /usr/bin/python3 (Debian's CPU torch, for --host), python;
    #     without --host the first one whose torch sees a GPU wins
    local py="" cand want='import torch; assert torch.cuda.is_available()'
    if [ $MODE_HOST = 1 ]; then want='import torch'; fi
    for probe in "$want" 'import torch'; do
        for cand in ${PYTHON:-} python3 /usr/bin/python3 python; do
            if command -v "$cand" >/dev/null 2>&1 && "$cand" -c "$probe" >/dev/null 2>&1; then
                py=$(command -v "$cand"); break 2
            fi
        done
    done
    if [ -z "$nvcc" ] && [ -n "$py" ]; then
        cand=$("$py" -c "import os, nvidia; print(os.path.join(list(nvidia.__path__)[0], 'cuda_nvcc', 'bin', 'nvcc'))" 2>/dev/null || true)
        if [ -n "$cand" ] && [ -x "$cand" ]; then nvcc="$cand"; fi
    fi

    if [ -n "$nvcc" ]; then
        echo "nvcc: $nvcc"
        "$nvcc" --version | tail -n 2
    else
        echo "nvcc: not found"
    fi
    echo "g++: $(g++ --version 2>/dev/null | head -n 1 || echo 'not found')"
    local cmake_ok=0
    if command -v cmake >/dev/null 2>&1; then
        local cmv
        cmv=$(cmake --version | head -n 1 | awk '{print $3}')
        echo "cmake: $cmv"
        if [ "$(printf '%s\n%s\n' 3.22 "$cmv" | sort -V | head -n 1)" = "3.22" ]; then cmake_ok=1; fi
    else
        echo "cmake: not found"
    fi
    if [ -n "$py" ]; then
        echo "python: $py"
        "$py" - <<'EOF' || true
import sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| torch CUDA", torch.version.cuda,
      "| cuda available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device 0:", p.name, "| capability %d.%d" % (p.major, p.minor), "| %.1f GiB" % (p.total_memory / 2**30),
          "| %d SMs" % p.multi_processor_count, "| devices", torch.cuda.device_count())
EOF
    else
        echo "python: no interpreter with torch found"
    fi

    # --- CUDA architectures: the present GPU's (SASS + PTX), else sm_80 + sm_90 + compute_90 PTX
    local arch="${T2D_CUDA_ARCH:-}" gencode cmake_arch=""
    if [ -z "$arch" ] && [ $have_smi = 1 ]; then
        arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .\r')
    fi
    if [ -n "$arch" ] && [ -n "$nvcc" ] && ! "$nvcc" --list-gpu-code 2>/dev/null | tr ' ' '\n' | grep -qx "sm_$arch"; then
        echo "nvcc cannot target sm_$arch: using the default architectures (their PTX is JIT-compiled)"
        arch=""
    fi
    if [ -n "$arch" ]; then
        gencode="-gencode arch=compute_$arch,code=[sm_$arch,compute_$arch]"
        cmake_arch="$arch"
    else
        gencode="-gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=[sm_90,compute_90]"
    fi
    echo "cuda code: $gencode"

    # --- build
    local build lib="" t2d_test="" used=""
    build=$(mktemp -d "${TMPDIR:-/tmp}/t2d-gpu.XXXXXX")
    echo "build dir: $build"
    local src="$ROOT/native"
    local defs="-DT2D_WITH_CUDA=1"
    local cxxflags="-O3 -DNDEBUG -std=gnu++17 -fPIC -fvisibility=hidden -fvisibility-inlines-hidden -Wall -Wextra -fno-math-errno"
    local linkflags="-static-libstdc++ -static-libgcc -Wl,--exclude-libs,ALL -Wl,-z,defs"

    build_nvcc() {  # direct nvcc + g++ build, same flags as CMakeLists.txt (Release)
        local d="$build/nvcc"
        mkdir -p "$d" || return 1
        echo "+ g++ $cxxflags $defs -c common.cpp project_cpu.cpp"
        g++ $cxxflags $defs -I"$src/include" -I"$src/src" -c "$src/src/common.cpp" -o "$d/common.o" || return 1
        g++ $cxxflags $defs -I"$src/include" -I"$src/src" -c "$src/src/project_cpu.cpp" -o "$d/project_cpu.o" || return 1
        echo "+ nvcc -O3 -std=c++17 --expt-relaxed-constexpr $gencode -Xcompiler -fPIC $defs -c project_cuda.cu"
        "$nvcc" -O3 -DNDEBUG -std=c++17 --expt-relaxed-constexpr $gencode -Xcompiler -fPIC $defs \
            -I"$src/include" -I"$src/src" -c "$src/src/project_cuda.cu" -o "$d/project_cuda.o" || return 1
        echo "+ nvcc -shared -cudart static -o libtext2data.so (linker: $linkflags)"
        "$nvcc" -shared -cudart static -o "$d/libtext2data.so" "$d/common.o" "$d/project_cpu.o" "$d/project_cuda.o" \
            -Xcompiler "-static-libstdc++,-static-libgcc" -Xlinker "--exclude-libs,ALL" -Xlinker "-z,defs" \
            -Xlinker "-soname,libtext2data.so" \
            -lpthread -ldl -lrt || return 1
        g++ -O2 -std=gnu++17 -I"$src/include" -I"$src/src" "$src/test/t2d_test.cpp" -o "$d/t2d_test" \
            -L"$d" -ltext2data -Wl,-rpath,"$d" -lpthread || return 1
        lib="$d/libtext2data.so"
        t2d_test="$d/t2d_test"
    }
    build_cpu() {  # no CUDA: the stub, for --host runs on machines without nvcc
        local d="$build/cpu"
        mkdir -p "$d" || return 1
        g++ $cxxflags -I"$src/include" -I"$src/src" -shared -o "$d/libtext2data.so" "$src/src/common.cpp" \
            "$src/src/project_cpu.cpp" "$src/src/project_cuda_stub.cpp" $linkflags -Wl,-soname,libtext2data.so \
            -lpthread || return 1
        g++ -O2 -std=gnu++17 -I"$src/include" -I"$src/src" "$src/test/t2d_test.cpp" -o "$d/t2d_test" \
            -L"$d" -ltext2data -Wl,-rpath,"$d" -lpthread || return 1
        lib="$d/libtext2data.so"
        t2d_test="$d/t2d_test"
    }
    build_cmake() {
        local d="$build/cmake" args=(-S "$src" -B "$build/cmake" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$nvcc")
        if [ -n "$cmake_arch" ]; then args+=(-DCMAKE_CUDA_ARCHITECTURES="$cmake_arch"); fi
        echo "+ cmake ${args[*]}"
        CUDACXX="$nvcc" cmake "${args[@]}" || return 1
        cmake --build "$d" -j "$(nproc)" || return 1
        if ! grep -qa 'abi 1, cuda)' "$d/libtext2data.so"; then
            echo "cmake built the library without CUDA (its version string does not say cuda)"
            return 1
        fi
        lib="$d/libtext2data.so"
        t2d_test="$d/t2d_test"
    }

    sect "build"
    if [ -z "$nvcc" ] && [ "$BUILD_MODE" != cpu ]; then
        if [ $MODE_HOST = 1 ]; then
            echo "no nvcc: building the CPU-only library (enough for --host)"
            BUILD_MODE=cpu
        else
            bad "build: nvcc not found (PATH, NVCC, CUDA_HOME, /usr/local/cuda*, pip nvidia-cuda-nvcc)"
        fi
    fi
    if [ "$BUILD_MODE" = auto ]; then
        if [ $cmake_ok = 1 ]; then BUILD_MODE=cmake-then-nvcc; else BUILD_MODE=nvcc; fi
    fi
    local tb
    tb=$(date +%s)
    case "$BUILD_MODE" in
        cmake|cmake-then-nvcc)
            if build_cmake; then
                used=cmake
            else
                bad "build: cmake build of native/ failed (see above)"
                if [ "$BUILD_MODE" = cmake-then-nvcc ] && [ -n "$nvcc" ]; then
                    echo "falling back to the direct nvcc build"
                    build_nvcc && used=nvcc
                fi
            fi ;;
        nvcc) if [ -n "$nvcc" ]; then build_nvcc && used=nvcc; fi ;;
        cpu) build_cpu && used=cpu ;;
        *) bad "build: unknown --build mode $BUILD_MODE" ;;
    esac
    if [ -n "$used" ] && [ -f "$lib" ]; then
        ok "build: libtext2data.so with $used in $(( $(date +%s) - tb )) s ($(du -k "$lib" | cut -f1) KiB)"
    else
        bad "build: no library was built"
        lib=""
    fi

    if [ -n "$lib" ]; then
        local missing="" sym
        for sym in t2d_project_host t2d_project_cuda t2d_cuda_available t2d_cuda_built t2d_set_num_threads \
                   t2d_last_error t2d_last_error_tensor t2d_version; do
            nm -D --defined-only "$lib" 2>/dev/null | awk '{print $NF}' | grep -qx "$sym" || missing="$missing $sym"
        done
        local extra
        extra=$(nm -D --defined-only "$lib" 2>/dev/null | awk '$2 ~ /^[TDBRVW]$/ {print $NF}' | grep -v '^t2d_' | grep -v '^_' | head -n 5 | tr '\n' ' ')
        if [ -z "$missing" ]; then
            ok "build: exports the 8 C ABI functions${extra:+ (other exports: $extra)}"
        else
            bad "build: missing exports:$missing"
        fi
        local deps
        deps=$(ldd "$lib" 2>/dev/null | awk '{print $1}' | tr '\n' ' ')
        echo "dynamic dependencies: $deps"
        if echo "$deps" | grep -Eq 'libcudart|libstdc\+\+'; then
            bad "build: libcudart / libstdc++ should be linked statically ($deps)"
        else
            ok "build: cudart and libstdc++ static (no libcudart.so / libstdc++.so needed)"
        fi
        if [ "$used" != cpu ]; then
            local cuobjdump=""
            for cand in "$(command -v cuobjdump 2>/dev/null)" "$(dirname "$nvcc")/cuobjdump" "${CUDA_HOME:-/nonexistent}/bin/cuobjdump" \
                        /usr/local/cuda/bin/cuobjdump; do
                if [ -n "$cand" ] && [ -x "$cand" ]; then cuobjdump="$cand"; break; fi
            done
            if [ -n "$cuobjdump" ]; then
                echo "device code in the library: $("$cuobjdump" --list-elf "$lib" 2>/dev/null | grep -o 'sm_[0-9]*[a-z]*' | sort -u | tr '\n' ' ')" \
                     "| ptx: $("$cuobjdump" --list-ptx "$lib" 2>/dev/null | grep -o 'sm_[0-9]*[a-z]*' | sort -u | tr '\n' ' ')"
            else
                echo "cuobjdump not found: not listing the embedded device code"
            fi
        fi
    fi

    # --- native tests (CPU path, plus the CUDA entry's validation when no device is present)
    if [ -n "$t2d_test" ] && [ -x "$t2d_test" ]; then
        sect "native tests (native/test/t2d_test.cpp)"
        local tt rc
        tt=$(date +%s)
        timeout 180 "$t2d_test"
        rc=$?
        if [ $rc = 0 ]; then ok "native tests: t2d_test passed in $(( $(date +%s) - tt )) s"; else bad "native tests: t2d_test exit $rc"; fi
    fi

    # --- the Python checks
    local py_passed=0 py_failed=0
    if [ -n "$lib" ] && [ -n "$py" ]; then
        sect "python checks (bench/gpu/check_cuda.py)"
        local args=(--lib "$lib" --json "$JSON")
        if [ $MODE_HOST = 1 ]; then args+=(--host); else args+=(--also-host); fi
        if [ $QUICK = 1 ]; then args+=(--quick); fi
        local pylog="$build/check_cuda.out" rc
        echo "+ $py -u bench/gpu/check_cuda.py ${args[*]}"
        timeout "${T2D_PY_TIMEOUT:-420}" "$py" -u "$HERE/check_cuda.py" "${args[@]}" 2>&1 | tee "$pylog"
        rc=${PIPESTATUS[0]}
        local last
        last=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$pylog" | tail -n 1)
        if [ -n "$last" ]; then
            py_passed=$(echo "$last" | awk '{print $1}')
            py_failed=$(echo "$last" | awk '{print $3}')
        fi
        if [ $rc = 124 ]; then
            bad "python checks: timed out after ${T2D_PY_TIMEOUT:-420} s"
        elif [ -z "$last" ]; then
            bad "python checks: ended (exit $rc) without a summary line"
        elif [ $rc != 0 ] && [ "$py_failed" = 0 ]; then
            bad "python checks: exit $rc"
        fi
    elif [ -z "$py" ]; then
        bad "python checks: no python3 with torch"
    fi

    sect "summary"
    echo "shell checks: $passed passed, $failed failed; python checks: $py_passed passed, $py_failed failed"
    echo "library: ${lib:-none} (build dir $build, left in place)"
    echo "log: $LOG; json: $JSON; total $(( $(date +%s) - t_start )) s"
    echo "$((passed + py_passed)) passed, $((failed + py_failed)) failed"
    [ $((failed + py_failed)) = 0 ]
}

main 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
