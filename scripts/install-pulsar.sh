#!/usr/bin/env bash
# Assembles an Apache Pulsar standalone broker from Maven Central (its jars
# are all there; the release tarball's site is out of reach) for the Pulsar
# log tests: test/helpers/dev-env.ts starts it with plain `java`.
set -euo pipefail
source "$(dirname "$0")/maven-assemble.sh"
# 4.0.8 lacks artifacts on Maven Central; 4.0.7 resolves whole. The broker
# brings the standalone starter, the bookie, the RocksDB metadata store and
# the WebSocket API; Pulsar's own pom pins the versions its release was built
# with. Left out: what only stream storage and the functions worker load
# (both off in standalone as the helper starts it), some of which does not
# resolve.
assemble pulsar 4.0.7 pulsar-broker pulsar-websocket <<'DEPS'
  <dependencyManagement>
    <dependencies>
      <dependency>
        <groupId>org.apache.pulsar</groupId>
        <artifactId>pulsar</artifactId>
        <version>4.0.7</version>
        <type>pom</type>
        <scope>import</scope>
      </dependency>
    </dependencies>
  </dependencyManagement>
  <dependencies>
    <dependency>
      <groupId>org.apache.pulsar</groupId>
      <artifactId>pulsar-broker</artifactId>
      <version>4.0.7</version>
      <exclusions>
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
DEPS
