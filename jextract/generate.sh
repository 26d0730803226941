#!/bin/sh
# Regenerates the Java bindings of native/include/text2data.h into core/src/main/java/org/text2data/ffi
# and records the header's SHA-256 (checked by BindingsUpToDateTest).
# Needs jextract (https://github.com/openjdk/jextract) on PATH or in $JEXTRACT; it is not part of this
# repository. Run from anywhere.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
JEXTRACT=${JEXTRACT:-$(command -v jextract || true)}
if [ -z "$JEXTRACT" ] || [ ! -x "$JEXTRACT" ]; then
    echo "jextract not found: put it on PATH or set JEXTRACT=/path/to/bin/jextract" >&2
    exit 1
fi
cd "$ROOT"
rm -rf core/src/main/java/org/text2data/ffi
"$JEXTRACT" @jextract/text2data.args
mkdir -p core/src/main/resources/org/text2data/ffi
sha256sum native/include/text2data.h | cut -d' ' -f1 > core/src/main/resources/org/text2data/ffi/header.sha256
"$JEXTRACT" --version > jextract/jextract.version 2>&1
echo "bindings regenerated; header sha256 $(cat core/src/main/resources/org/text2data/ffi/header.sha256)"
