import { cassandraRunning, pulsarRunning, stopCassandra, stopPulsar } from "./helpers/dev-env.js";

/**
 * Test files start the shared test Cassandra and Pulsar on first use
 * (dev-env.ts); a run that found one not running stops the one it started,
 * so it leaves no JVM behind.
 */
export async function setup() {
  const [cassandraWasRunning, pulsarWasRunning] = await Promise.all([
    cassandraRunning(),
    pulsarRunning(),
  ]);
  return async () => {
    await Promise.all([
      cassandraWasRunning ? undefined : stopCassandra(),
      pulsarWasRunning ? undefined : stopPulsar(),
    ]);
  };
}
