import { describe, expect, it } from "vitest";
import { probeCassandraFloor } from "../../bench/lib/cassandra-floor.js";
import { cassandraPid, ensureCassandra } from "../helpers/dev-env.js";

describe("probeCassandraFloor", () => {
  it("commits every message it times through the Cassandra store, and charges the node's CPU per message", async () => {
    const node = await ensureCassandra();
    // The tests' node is started by the dev-env helper, which knows its pid.
    const pid = cassandraPid();
    expect(pid).toBeGreaterThan(0);
    const floor = await probeCassandraFloor({
      ...node,
      ...(pid ? { pid } : {}),
      conversations: 4,
      perConversation: 5,
      warmUpRounds: 1,
    });
    expect(floor.conversations).toBe(4);
    expect(floor.events).toBe(20);
    // Both rounds' messages, read back from the keyspace.
    expect(floor.committed).toBe(40);
    expect(floor.eventsPerSec).toBeGreaterThan(0);
    expect(floor.serverCpuUsPerEvent).toBeGreaterThan(0);
    expect(floor.cassandraCpuUsPerEvent).toBeGreaterThan(0);
  }, 120_000);
});
