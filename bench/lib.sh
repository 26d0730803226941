# Shared by bench/run-jmh and bench/compare (sourced, not run).
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
export PYTHONDONTWRITEBYTECODE=1
export T2D_BENCH_WEIGHTS="${T2D_BENCH_WEIGHTS:-$BENCH/target/weights}"
PY=/usr/bin/python3

find_jdk() { # a JDK >= 22, newest first (the launcher's rule)
  local c v best="" best_v=0
  for c in "${TEXT2DATA_JAVA_HOME:-}" "${JAVA_HOME:-}" /usr/lib/jvm/*; do
    [ -n "$c" ] && [ -x "$c/bin/javac" ] || continue
    v="$("$c/bin/java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = \([0-9]*\).*/\1/p' | head -n1)"
    [ -n "$v" ] && [ "$v" -ge 22 ] && [ "$v" -gt "$best_v" ] && { best="$c"; best_v="$v"; }
  done
  [ -n "$best" ] || { echo "bench: needs a JDK 22 or newer (25 recommended)" >&2; exit 3; }
  export JAVA_HOME="$best" PATH="$best/bin:$PATH"
}

build() { # installs the library's jar when its sources changed, then packages bench/ (JMH)
  find_jdk
  local jar="$HOME/.m2/repository/org/text2data/text2data-tools/0.1.0-SNAPSHOT/text2data-tools-0.1.0-SNAPSHOT.jar"
  # The stamp is this checkout's: ~/.m2 is shared by every checkout of the project, and a jar another
  # checkout installed later (newer than the stamp) must not pass for this one's: the bench is compiled
  # against it. At run time this checkout's classes also come first on the class path.
  local stamp="$ROOT/tools/target/.bench-installed"
  if [ ! -f "$jar" ] || [ ! -f "$stamp" ] || [ "$jar" -nt "$stamp" ] || [ -n "$(find "$ROOT/pom.xml" "$ROOT/core/pom.xml" "$ROOT/tools/pom.xml" "$ROOT/core/src/main" "$ROOT/tools/src/main" "$ROOT/native" -newer "$stamp" -type f -print -quit 2>/dev/null)" ]; then
    echo "bench: installing the library (mvn install, no tests) ..." >&2
    (cd "$ROOT" && mvn -q -B -ntp -Dstyle.color=never -DskipTests -Dmaven.javadoc.skip=true install) >&2
    touch "$stamp"
  fi
  if [ ! -f "$BENCH/target/benchmarks.jar" ] || [ -n "$(find "$BENCH/pom.xml" "$BENCH/src" "$stamp" -newer "$BENCH/target/benchmarks.jar" -type f -print -quit)" ]; then
    echo "bench: building the JMH suite ..." >&2
    (cd "$BENCH" && mvn -q -B -ntp -Dstyle.color=never package) >&2
  fi
  CP="$ROOT/core/target/classes:$ROOT/tools/target/classes:$BENCH/target/benchmarks.jar:$(cat "$BENCH/target/classpath.txt")"
  JAVA=(java --enable-native-access=ALL-UNNAMED --sun-misc-unsafe-memory-access=allow -Xss4m -cp "$CP")
}

weights() { # the workloads' initial weights and batch, written once by the Python side
  local missing=0 w
  for w in mlp-deep-small mlp-deep mlp-wide transformer-small; do
    [ -f "$T2D_BENCH_WEIGHTS/$w.bin" ] && [ -f "$T2D_BENCH_WEIGHTS/$w.json" ] || missing=1
  done
  [ "$missing" = 0 ] && return 0
  if [ -x "$PY" ] && "$PY" -c 'import torch, numpy' 2>/dev/null; then
    echo "bench: writing the workloads' weights to $T2D_BENCH_WEIGHTS ..." >&2
    (cd "$BENCH/python" && "$PY" -c "import sys, workloads
for n in workloads.WORKLOADS: workloads.get(n, sys.argv[1])" "$T2D_BENCH_WEIGHTS")
  else
    echo "bench: no /usr/bin/python3 with torch and numpy: Java builds the models from libtorch's seeded init" >&2
  fi
}
