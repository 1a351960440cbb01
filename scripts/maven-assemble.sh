# Sourced by the install scripts of the Java servers the tests run:
# assembles a server's runtime jars from Maven Central into a cache outside
# the repository. Usage, with the dependencies' XML on stdin:
#   assemble <name> <version> <required jar>... <<EOF ... EOF
# puts the jars in ${RELAYCHAT_CACHE:-~/.cache/relaychat}/<name>-<version>/lib
# and writes .installed there last, so that a rerun is a no-op.
assemble() {
  local name="$1" version="$2"
  shift 2
  local dir="${RELAYCHAT_CACHE:-$HOME/.cache/relaychat}/$name-$version"
  local deps
  deps="$(cat)"
  if [ -f "$dir/.installed" ]; then
    return 0
  fi
  if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
    source "$(dirname "${BASH_SOURCE[0]}")/root.sh"
    need_root "Java or Maven is" openjdk-17-jre-headless maven
    echo "Installing Java 17 and Maven from Debian (once per machine)..." >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null
  fi
  echo "Assembling $name $version from Maven Central into $dir (once per machine)..." >&2
  mkdir -p "$dir"
  local work
  work="$(mktemp -d "$dir/.assemble.XXXXXX")"
  # shellcheck disable=SC2064 # expanded now: $work is local
  trap "rm -rf '$work'" EXIT
  # A throwaway project whose dependencies are the server's; copy-dependencies
  # gathers them and their runtime closure.
  cat >"$work/pom.xml" <<POM
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>relaychat.test</groupId>
  <artifactId>$name-runtime</artifactId>
  <version>$version</version>
  <packaging>pom</packaging>
$deps
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>3.8.1</version>
      </plugin>
    </plugins>
  </build>
</project>
POM
  # Maven's output (colour codes even with -q) is shown only when it fails.
  if ! mvn -q -B -f "$work/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$work/lib" >"$work/mvn.log" 2>&1; then
    cat "$work/mvn.log" >&2
    echo "Maven could not assemble $name $version (see above)." >&2
    exit 1
  fi
  local jar
  for jar in "$@"; do
    if [ ! -f "$work/lib/$jar-$version.jar" ]; then
      echo "Maven did not deliver $jar-$version.jar." >&2
      exit 1
    fi
  done
  rm -rf "$dir/lib"
  mv "$work/lib" "$dir/lib"
  echo "$name $version: $(find "$dir/lib" -name '*.jar' | wc -l) jars in lib/" >"$dir/.installed"
}
