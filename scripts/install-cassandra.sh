#!/usr/bin/env bash
# Assembles Apache Cassandra from Maven Central (its jars are all there; the
# tarball's site is out of reach) into a cache outside the repository, for the
# Cassandra store tests: test/helpers/dev-env.ts starts it with plain `java`.
# A marker file written last makes a rerun a no-op.
set -euo pipefail
version=5.0.6
dir="${RELAYCHAT_CACHE:-$HOME/.cache/relaychat}/cassandra-$version"
marker="$dir/.installed"
if [ -f "$marker" ]; then
  exit 0
fi
if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
  source "$(dirname "$0")/root.sh"
  need_root "Java or Maven is" openjdk-17-jre-headless maven
  echo "Installing Java 17 and Maven from Debian (once per machine)..." >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null
fi
echo "Assembling Cassandra $version from Maven Central into $dir (once per machine)..." >&2
mkdir -p "$dir"
work="$(mktemp -d "$dir/.assemble.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# A throwaway project whose only dependency is the server; copy-dependencies
# gathers it and its runtime closure (byteman is 'provided' and stays out).
cat >"$work/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>relaychat.test</groupId>
  <artifactId>cassandra-runtime</artifactId>
  <version>$version</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>$version</version>
    </dependency>
  </dependencies>
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
EOF
# Maven's output (colour codes even with -q) is shown only when it fails.
if ! mvn -q -B -f "$work/pom.xml" dependency:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$work/lib" >"$work/mvn.log" 2>&1; then
  cat "$work/mvn.log" >&2
  echo "Maven could not assemble Cassandra $version (see above)." >&2
  exit 1
fi
if [ ! -f "$work/lib/cassandra-all-$version.jar" ]; then
  echo "Maven did not deliver cassandra-all-$version.jar." >&2
  exit 1
fi
rm -rf "$dir/lib"
mv "$work/lib" "$dir/lib"
echo "cassandra-all $version: $(find "$dir/lib" -name '*.jar' | wc -l) jars in lib/" >"$marker"
