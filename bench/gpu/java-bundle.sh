#!/usr/bin/env bash
# Prepares, HERE (a machine with a JDK >= 22, Maven, CMake and network to Maven Central), the self-contained
# runtime that bench/gpu/java-check.sh runs on a GPU machine with no JDK, no Maven and no network:
#
#     bench/gpu/java-bundle.sh            # -> bench/gpu/java-bundle/ (gitignored)
#     bench/gpu/java-bundle.sh --parts    # also bench/gpu/java-bundle.parts/java-bundle.tgz.part-aa, -ab, ...
#
# The folder holds:
#   jre/            a jlink'd JRE of the JDK used here (java.base, java.desktop, java.logging, java.management,
#                   java.naming, java.sql, jdk.unsupported)
#   natives/        org/bytedeco/pytorch/linux-x86_64-gpu/*.so, unpacked from bytedeco's linux-x86_64-gpu
#                   libtorch jar (458 MB, downloaded once by `mvn -Pgpu`): a class-path folder, in place of the jar
#   lib/            the library's jar (libtext2data.so inside, built with CUDA when nvcc is here) and its runtime
#                   dependencies under -Pgpu (the CUDA presets' classes among them), libtext2data.so beside them
#   test/           the project's test classes and resources, and the JUnit console launcher + AssertJ
#   bench/          the GPU step benchmark (bench/src/.../GpuStepBench.java, Workloads, TransformerDenoiser) and the
#                   CPU harness (Interleaved, for java-check.sh --cpu-threads)
#   bin/java        the bundled java with the project's JVM flags and the bundle's class path
#   MANIFEST.txt    what was bundled (commit, JDK, libtorch, sizes)
# --parts writes a gzip'd tar of that folder split into 52 MiB parts (split -b 52M), so that each part can
# travel to the device machine in its own call (bench/gpu/README.md, "The Java side").
#
# Options: --out DIR (default bench/gpu/java-bundle), --parts, --skip-build (reuse target/ from an earlier
# -Pgpu build), --keep-sm LIST (e.g. 90 for an H100 or H200: libtorch_cuda.so keeps the GPU code of those
# architectures only, the rest blanked by fatbin_keep.py; the parts shrink from 9 to 5, and the bundle runs on
# GPUs of those architectures only). Environment: JAVA_HOME (a JDK >= 22 with jlink; else the newest under
# /usr/lib/jvm).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
B="$HERE/java-bundle"
PARTS=0
BUILD=1
KEEP_SM=""
while [ $# -gt 0 ]; do
    case "$1" in
        --out) B="$2"; shift ;;
        --out=*) B="${1#--out=}" ;;
        --parts) PARTS=1 ;;
        --skip-build) BUILD=0 ;;
        --keep-sm) KEEP_SM="$2"; shift ;;
        --keep-sm=*) KEEP_SM="${1#--keep-sm=}" ;;
        -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;  # the comment block above
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
    shift
done
case "$B" in /*) ;; *) B="$PWD/$B" ;; esac

say() { echo "java-bundle: $*"; }
die() { echo "java-bundle: $*" >&2; exit 1; }

# --- a JDK with jlink
jdk=""
for c in "${JAVA_HOME:-}" $(ls -d /usr/lib/jvm/* 2>/dev/null | sort -rV); do
    [ -n "$c" ] && [ -x "$c/bin/jlink" ] && [ -x "$c/bin/javac" ] || continue
    v=$("$c/bin/java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = \([0-9]*\).*/\1/p' | head -n1)
    if [ -n "$v" ] && [ "$v" -ge 22 ]; then jdk="$c"; break; fi
done
[ -n "$jdk" ] || die "needs a JDK >= 22 with jlink (set JAVA_HOME)"
export JAVA_HOME="$jdk" PATH="$jdk/bin:$PATH"
command -v mvn >/dev/null || die "needs Maven (mvn)"
say "JDK $jdk"

cd "$ROOT"
MVN=(mvn -B -ntp -q -Dstyle.color=never -Pgpu)
if [ $BUILD = 1 ]; then
    say "building with -Pgpu (the first run downloads bytedeco's linux-x86_64-gpu libtorch, 458 MB) ..."
    "${MVN[@]}" -DskipTests -Dmaven.javadoc.skip=true -Dmaven.source.skip=true package
fi
# the library (core) and the CLI beside it (tools)
jar=$(ls "$ROOT"/core/target/text2data-core-*.jar 2>/dev/null | grep -v -- '-sources\|-javadoc\|-tests' | head -n 1)
tools_jar=$(ls "$ROOT"/tools/target/text2data-tools-*.jar 2>/dev/null | grep -v -- '-sources\|-javadoc\|-tests' | head -n 1)
[ -n "$jar" ] && [ -f "$jar" ] && [ -n "$tools_jar" ] || die "no core/target/text2data-core-*.jar or tools/target/text2data-tools-*.jar: run without --skip-build"
[ -d "$ROOT/core/target/test-classes" ] && [ -d "$ROOT/tools/target/test-classes" ] || die "no */target/test-classes: run without --skip-build"
cpfile=$(mktemp); tcpfile=$(mktemp)
trap 'rm -f "$cpfile" "$tcpfile"' EXIT
# runtime: the tools module's class path (written by its package phase), less the core jar, copied on its own below;
# test: the core module's (JUnit, AssertJ; core depends on no module of ours, so it resolves on its own)
[ -f "$ROOT/tools/target/classpath.txt" ] || die "no tools/target/classpath.txt: run without --skip-build"
tr ':' '\n' < "$ROOT/tools/target/classpath.txt" | grep -v '/text2data-core-[^/]*\.jar$' | paste -sd: - > "$cpfile"
"${MVN[@]}" -pl core dependency:build-classpath -Dmdep.outputFile="$tcpfile" -Dmdep.includeScope=test
gpujar=$(tr ':' '\n' < "$cpfile" | grep -- '/pytorch-[^/]*-linux-x86_64-gpu\.jar$' || true)
[ -n "$gpujar" ] || die "the -Pgpu class path has no pytorch-*-linux-x86_64-gpu.jar"

rm -rf "$B"
mkdir -p "$B"/{lib,natives,test/lib,bench,bin}

say "jlink ..."
jlink --add-modules java.base,java.desktop,java.logging,java.management,java.naming,java.sql,jdk.unsupported \
    --strip-debug --no-man-pages --no-header-files --output "$B/jre"

say "unpacking libtorch's CUDA natives from $(basename "$gpujar") ..."
unzip -q "$gpujar" 'org/bytedeco/pytorch/linux-x86_64-gpu/*' -d "$B/natives"
if [ -n "$KEEP_SM" ]; then
    say "keeping the GPU code of sm_$KEEP_SM only in libtorch_cuda.so ..."
    python3 "$HERE/fatbin_keep.py" "$B/natives/org/bytedeco/pytorch/linux-x86_64-gpu/libtorch_cuda.so" "$KEEP_SM"
fi

cp "$jar" "$tools_jar" "$B/lib/"
# test-only jars (the dependency plugin's runtime scope lists them too here) go to test/lib
testjar='/(junit-[^/]*|opentest4j-[^/]*|apiguardian-api-[^/]*|assertj-core-[^/]*|byte-buddy-[^/]*)\.jar$'
tr ':' '\n' < "$cpfile" | grep -v -- '-linux-x86_64-gpu\.jar$' | grep -Ev "$testjar" | while read -r f; do
    [ -n "$f" ] && cp "$f" "$B/lib/"
done
lib_so="$ROOT/core/target/classes/org/text2data/native/linux-x86_64/libtext2data.so"
[ -f "$lib_so" ] || die "no $lib_so (the native build did not run)"
cp "$lib_so" "$B/lib/"
if grep -qa 'abi 1, cuda)' "$lib_so"; then cuda_lib="with the CUDA path"; else cuda_lib="CPU path only (no nvcc here)"; fi

mkdir -p "$B/test/classes"
cp -r "$ROOT/core/target/test-classes/." "$ROOT/tools/target/test-classes/." "$B/test/classes/"
console=$(ls ~/.m2/repository/org/junit/platform/junit-platform-console-standalone/*/junit-platform-console-standalone-*.jar 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$console" ]; then
    v=$(tr ':' '\n' < "$tcpfile" | sed -n 's|.*/junit-platform-engine-\([0-9.]*\)\.jar$|\1|p' | head -n 1)
    mvn -B -ntp -q dependency:get -Dartifact="org.junit.platform:junit-platform-console-standalone:${v:-1.14.1}"
    console=$(ls ~/.m2/repository/org/junit/platform/junit-platform-console-standalone/*/junit-platform-console-standalone-*.jar | sort -V | tail -n 1)
fi
cp "$console" "$B/test/lib/junit-platform-console-standalone.jar"
# the console launcher brings JUnit itself; AssertJ (and its byte-buddy) beside it
tr ':' '\n' < "$tcpfile" | grep -E '/(assertj-core|byte-buddy)-[^/]*\.jar$' | while read -r f; do cp "$f" "$B/test/lib/"; done

say "compiling the GPU step benchmark and the CPU harness ..."
javac --release 25 -nowarn -d "$B/bench" -cp "$jar:$tools_jar:$(cat "$cpfile")" \
    "$ROOT"/bench/src/main/java/org/text2data/bench/{GpuStepBench,Interleaved,Workloads,TransformerDenoiser}.java \
    "$ROOT"/bench/src/main/java/org/text2data/BenchAccess.java

# class path relative to the bundle; bin/java resolves it
cp_rel="natives"
for f in "$B"/lib/*.jar; do cp_rel="$cp_rel:lib/$(basename "$f")"; done
echo "$cp_rel" > "$B/classpath.txt"
cat > "$B/bin/java" <<'EOF'
#!/usr/bin/env bash
# The bundled JRE with the project's JVM flags; the class path is the bundle's (classpath.txt), plus $T2D_EXTRA_CP.
# JavaCPP's cache goes inside the bundle unless -Dorg.bytedeco.javacpp.cachedir is given.
B=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cp=""
IFS=: read -r -a parts < "$B/classpath.txt"
for p in "${parts[@]}"; do cp="$cp${cp:+:}$B/$p"; done
exec "$B/jre/bin/java" --enable-native-access=ALL-UNNAMED --sun-misc-unsafe-memory-access=allow -Xss4m \
    -Dorg.bytedeco.javacpp.cachedir="${T2D_JAVACPP_CACHE:-$B/javacpp-cache}" \
    -cp "$cp${T2D_EXTRA_CP:+:$T2D_EXTRA_CP}" "$@"
EOF
chmod +x "$B/bin/java"

{
    echo "text2data-jvm Java bundle for bench/gpu/java-check.sh"
    echo "made: $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(uname -srm)"
    echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "jdk: $("$B/jre/bin/java" -version 2>&1 | head -n 1)"
    echo "libtorch: $(basename "$gpujar")${KEEP_SM:+ (libtorch_cuda.so: GPU code of sm_$KEEP_SM only)}"
    echo "libtext2data.so: $cuda_lib"
    echo "size: $(du -sh "$B" | cut -f1)"
} > "$B/MANIFEST.txt"
cat "$B/MANIFEST.txt"

if [ $PARTS = 1 ]; then
    P="$(dirname "$B")/$(basename "$B").parts"
    rm -rf "$P"
    mkdir -p "$P"
    say "tar + gzip + split -b 52M into $P ..."
    tar -C "$(dirname "$B")" --exclude="$(basename "$B")/javacpp-cache" -cf - "$(basename "$B")" | gzip -6 | split -b 52M - "$P/$(basename "$B").tgz.part-"
    (cd "$P" && sha256sum "$(basename "$B")".tgz.part-* > SHA256SUMS)
    ls -la "$P"
fi
say "done: $B"
