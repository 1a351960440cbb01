#!/usr/bin/env bash
# Assembles an Apache Pulsar standalone broker from Maven Central (its jars are
# all there; the release tarball's site is out of reach) into a cache outside
# the repository, for the Pulsar tests: test/helpers/dev-env.ts starts it with
# plain `java`. A marker file written last makes a rerun a no-op.
set -euo pipefail
# 4.0.8 lacks artifacts on Maven Central; 4.0.7 resolves whole.
version=4.0.7
dir="${RELAYCHAT_CACHE:-$HOME/.cache/relaychat}/pulsar-$version"
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
echo "Assembling Pulsar $version from Maven Central into $dir (once per machine)..." >&2
mkdir -p "$dir"
work="$(mktemp -d "$dir/.assemble.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# A throwaway project whose only dependency is the broker, which brings the
# standalone starter, the bookie, the RocksDB metadata store and the WebSocket
# API. Pulsar's own pom pins the versions its release was built with. Left
# out: what only stream storage and the functions worker load (both are off
# in standalone as the helper starts it), some of which does not resolve.
cat >"$work/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>relaychat.test</groupId>
  <artifactId>pulsar-runtime</artifactId>
  <version>$version</version>
  <packaging>pom</packaging>
  <dependencyManagement>
    <dependencies>
      <dependency>
        <groupId>org.apache.pulsar</groupId>
        <artifactId>pulsar</artifactId>
        <version>$version</version>
        <type>pom</type>
        <scope>import</scope>
      </dependency>
    </dependencies>
  </dependencyManagement>
  <dependencies>
    <dependency>
      <groupId>org.apache.pulsar</groupId>
      <artifactId>pulsar-broker</artifactId>
      <version>$version</version>
      <exclusions>
        <exclusion>
          <groupId>io.etcd</groupId>
          <artifactId>jetcd-core-shaded</artifactId>
        </exclusion>
        <exclusion>
          <groupId>org.apache.bookkeeper</groupId>
          <artifactId>stream-storage-server</artifactId>
        </exclusion>
        <exclusion>
          <groupId>io.kubernetes</groupId>
          <artifactId>*</artifactId>
        </exclusion>
        <exclusion>
          <groupId>io.grpc</groupId>
          <artifactId>grpc-all</artifactId>
        </exclusion>
      </exclusions>
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
  echo "Maven could not assemble Pulsar $version (see above)." >&2
  exit 1
fi
for jar in pulsar-broker pulsar-websocket; do
  if [ ! -f "$work/lib/$jar-$version.jar" ]; then
    echo "Maven did not deliver $jar-$version.jar." >&2
    exit 1
  fi
done
rm -rf "$dir/lib"
mv "$work/lib" "$dir/lib"
echo "pulsar-broker $version: $(find "$dir/lib" -name '*.jar' | wc -l) jars in lib/" >"$marker"
