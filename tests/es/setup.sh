#!/usr/bin/env bash
# Build the Elasticsearch test node (tests/es/node.py runs it): resolve the server and its netty4
# module from Maven Central into ~/.m2, lay them out as a distribution would, and compile the
# launcher and the GET / plugin. Idempotent and quick when nothing changed (a stamp of the
# inputs), so node.py calls it before every start and .ci/run calls it once up front.
#
# Needs: mvn, python3, a JDK >= 21 (Elasticsearch 9); cc and libzstd1 for the native libraries.
# The JDK is taken from $ESNODE_JAVA_HOME, else $JAVA_HOME, else the newest /usr/lib/jvm/* that
# is >= 21 (Debian 12's default-jdk is 17: on these machines the JDK >= 21 is the preinstalled
# Temurin one).
#
# Output: $ESNODE_BUILD_DIR (default tests/es/build): java-home, classpath.txt, classes/,
# modules/{transport-netty4,pyskydive-rest-root}/, native/, stamp. Prints the build directory last.
# Exit status: 0 built (or up to date), 3 a prerequisite is missing, 1 anything else.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
out="${ESNODE_BUILD_DIR:-$here/build}"

die() {
    echo "tests/es/setup.sh: $*" >&2
    exit 1
}
unavailable() { # a missing prerequisite, not a failure: exit 3 (node.py skips on it)
    echo "tests/es/setup.sh: $*" >&2
    exit 3
}

java_major() { # JAVA_HOME -> major version from its `release` file (empty if none)
    local v
    [ -x "$1/bin/javac" ] && [ -r "$1/release" ] || return 0
    v="$(sed -n 's/^JAVA_VERSION="\([0-9]*\).*/\1/p' "$1/release")"
    echo "$v"
}

find_jdk() {
    local h m best="" bestm=0
    for h in "${ESNODE_JAVA_HOME:-}" "${JAVA_HOME:-}"; do
        [ -n "$h" ] || continue
        m="$(java_major "$h")"
        if [ -n "$m" ] && [ "$m" -ge 21 ]; then
            echo "$h"
            return 0
        fi
    done
    for h in /usr/lib/jvm/*; do
        [ -L "$h" ] && continue
        m="$(java_major "$h")"
        if [ -n "$m" ] && [ "$m" -ge 21 ] && [ "$m" -gt "$bestm" ]; then
            best="$h"
            bestm="$m"
        fi
    done
    [ -n "$best" ] && echo "$best"
}

jdk="$(find_jdk)" || unavailable "no JDK >= 21 (set ESNODE_JAVA_HOME; Elasticsearch 9 needs Java 21+)"

# Skip when the inputs have not changed since the last build.
stamp="$(
    {
        echo "$jdk"
        cat "$here/pom.xml" "$0"
        find "$here/src" -type f | LC_ALL=C sort | xargs cat
    } | sha256sum | cut -d' ' -f1
)"
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp" ]; then
    echo "$out"
    exit 0
fi

command -v mvn >/dev/null || unavailable "mvn not found (apt-get install maven)"
command -v python3 >/dev/null || unavailable "python3 not found"

tmp="$out.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

# 1. Resolve (into ~/.m2) and lay out: the server classpath, and the netty4 module's jars.
if ! mvn -q -B -Dstyle.color=never -f "$here/pom.xml" -Desnode.out="$tmp" \
    dependency:build-classpath@server dependency:copy-dependencies@netty4 >"$tmp/mvn.log" 2>&1; then
    cat "$tmp/mvn.log" >&2
    die "mvn failed to resolve the Elasticsearch artifacts"
fi
[ -s "$tmp/classpath.txt" ] || die "mvn wrote no classpath"

# 2. The modules' descriptors. netty4's is inside its jar; it names a JPMS module, but here the
#    server runs from the class path, so load it as a classic (non-modular) plugin.
python3 - "$tmp" <<'EOF'
import glob, os, sys, zipfile
out = sys.argv[1]
mod = os.path.join(out, "modules", "transport-netty4")
(jar,) = glob.glob(os.path.join(mod, "transport-netty4-*.jar"))
with zipfile.ZipFile(jar) as z:
    desc = z.read("META-INF/es-plugins/transport-netty4/plugin-descriptor.properties").decode()
lines = [l for l in desc.splitlines() if l.strip() and not l.startswith("modulename=")]
# jars the server already has (the plugin APIs) must not be in the module too (jar hell)
with open(os.path.join(out, "classpath.txt")) as f:
    on_classpath = {os.path.basename(p) for p in f.read().strip().split(os.pathsep)}
for name in os.listdir(mod):
    if name in on_classpath:
        os.remove(os.path.join(mod, name))
with open(os.path.join(mod, "plugin-descriptor.properties"), "w") as f:
    f.write("\n".join(lines) + "\n")
props = dict(l.split("=", 1) for l in lines if "=" in l and not l.startswith("#"))
root = os.path.join(out, "modules", "pyskydive-rest-root")
os.makedirs(root)
with open(os.path.join(root, "plugin-descriptor.properties"), "w") as f:
    f.write(
        "description=GET / and HEAD / for the pyskydive test node (stands in for rest-root)\n"
        f"version={props['elasticsearch.version']}\n"
        "name=pyskydive-rest-root\n"
        "classname=org.pyskydive.esnode.root.RootPlugin\n"
        "java.version=21\n"
        f"elasticsearch.version={props['elasticsearch.version']}\n"
    )
EOF

# 3. Compile the launcher (on the class path) and the GET / plugin (a module jar: it must not
#    also be on the class path, or the plugin loader's jar-hell check refuses it).
cp="$(cat "$tmp/classpath.txt")"
mkdir -p "$tmp/classes" "$tmp/rootplugin-classes"
"$jdk/bin/javac" -nowarn --release 21 -encoding UTF-8 -d "$tmp/classes" -cp "$cp" \
    $(find "$here/src/main/java" -name '*.java')
"$jdk/bin/javac" -nowarn --release 21 -encoding UTF-8 -d "$tmp/rootplugin-classes" -cp "$cp" \
    $(find "$here/src/rootplugin/java" -name '*.java')
"$jdk/bin/jar" --create --file "$tmp/modules/pyskydive-rest-root/pyskydive-rest-root.jar" \
    -C "$tmp/rootplugin-classes" .
rm -rf "$tmp/rootplugin-classes"

# 4. Native libraries (-Des.nativelibs.path): the system's libzstd and a stand-in libvec (see
#    src/native/vec.c). Without them the node still runs, but zstd (best_compression) hangs.
zstd="$(cc -print-file-name=libzstd.so.1 2>/dev/null || true)"
if command -v cc >/dev/null && [ -f "$zstd" ]; then
    mkdir -p "$tmp/native"
    ln -s "$(readlink -f "$zstd")" "$tmp/native/libzstd.so"
    cc -shared -fPIC -O2 -o "$tmp/native/libvec.so" "$here/src/native/vec.c"
else
    echo "tests/es/setup.sh: warning: no cc or no libzstd.so.1: the node runs without native" \
        "libraries (index.codec: best_compression will not work)" >&2
fi

echo "$jdk" >"$tmp/java-home"
echo "$stamp" >"$tmp/stamp"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "$out"
