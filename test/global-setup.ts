import { cassandraRunning, stopCassandra } from "./helpers/dev-env.js";

/**
 * Test files start the shared test Cassandra on first use (dev-env.ts); a
 * run that found none running stops the one it started, so it leaves no
 * JVM behind.
 */
export async function setup() {
  const wasRunning = await cassandraRunning();
  return async () => {
    if (!wasRunning) await stopCassandra();
  };
}
