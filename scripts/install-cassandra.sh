#!/usr/bin/env bash
# Assembles Apache Cassandra from Maven Central (its jars are all there; the
# tarball's site is out of reach) for the Cassandra store tests:
# test/helpers/dev-env.ts starts it with plain `java`.
set -euo pipefail
source "$(dirname "$0")/maven-assemble.sh"
# The server alone; byteman is 'provided' and stays out.
assemble cassandra 5.0.6 cassandra-all <<'DEPS'
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>5.0.6</version>
    </dependency>
  </dependencies>
DEPS
