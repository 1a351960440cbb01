import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import cassandra from "cassandra-driver";
import { ConversationKind, EventSchema } from "../../gen/chat/v1/event_pb.js";
import { openCassandraStore } from "../../lib/backends/cassandra/cassandra-store.js";
import { kindNumber } from "../../lib/backends/records.js";
import { cpuUsOf } from "./procs.js";
import type { CassandraFloorProbe } from "./results.js";
import { floorMessage } from "./store-floor.js";

export interface CassandraFloorOptions {
  contactPoint: string;
  localDataCenter: string;
  /** The node's process, whose CPU is charged to the messages; unknown for a node started elsewhere. */
  pid?: number;
  conversations?: number;
  /** Messages each conversation commits per round. */
  perConversation?: number;
  /** Rounds before the measured one (the node's JIT and caches warm up). */
  warmUpRounds?: number;
}

/**
 * What ours' Cassandra store costs per 1:1 message with nothing else
 * running: `conversations` direct conversations commit keyed messages side
 * by side, each conversation's one at a time as a server's commits do, through
 * openCassandraStore in a keyspace of its own (dropped afterwards). Every
 * message takes the same path as a server's (its key read, the seq's Paxos
 * round, key, read mark and device cursor, head). Measures the last round:
 * Cassandra's CPU and this process's (the driver, encoding) per message, and
 * messages per second with the node saturated. `committed` counts the
 * messages read back, warm-up included, as a check that the work was done.
 */
export async function probeCassandraFloor(
  opts: CassandraFloorOptions,
): Promise<CassandraFloorProbe> {
  const conversations = opts.conversations ?? 50;
  const perConversation = opts.perConversation ?? 40;
  const rounds = (opts.warmUpRounds ?? 2) + 1;
  const keyspace = `floor_${randomBytes(4).toString("hex")}`;
  const store = openCassandraStore({
    contactPoints: [opts.contactPoint],
    localDataCenter: opts.localDataCenter,
    keyspace,
  });
  try {
    await store.migrate();
    const convs = Array.from({ length: conversations }, (_, i) => `floor-c${i}`);
    await Promise.all(
      convs.map(async (c, i) => {
        const created = create(EventSchema, {
          conversationId: c,
          seq: 1n,
          eventId: `${c}-1`,
          actorUserId: `a${i}`,
          createdAt: timestampFromMs(Date.now()),
          kind: {
            case: "conversationCreated",
            value: { kind: ConversationKind.DIRECT, memberUserIds: [`a${i}`, `b${i}`] },
          },
        });
        const [verdict] = await store.commit([created]);
        if (verdict) throw verdict;
        // The sending device has synced the conversation, so each message moves its cursor.
        await store.advanceReceipt(`a${i}`, `da${i}`, c, 1n, 0n);
      }),
    );
    let cassandraUs = 0;
    let serverUs = 0;
    let ms = 0;
    for (let round = 0; round < rounds; round++) {
      const cassandraBefore = nodeCpuUs(opts.pid);
      const serverBefore = process.cpuUsage();
      const began = performance.now();
      await Promise.all(
        convs.map(async (c, i) => {
          for (let k = 0; k < perConversation; k++) {
            const seq = BigInt(2 + round * perConversation + k);
            const posted = floorMessage(c, seq, `a${i}`, `da${i}`, `m${seq}`);
            const [verdict] = await store.commit([posted]);
            if (verdict) throw verdict;
          }
        }),
      );
      ms = performance.now() - began;
      const spent = process.cpuUsage(serverBefore);
      cassandraUs = nodeCpuUs(opts.pid) - cassandraBefore;
      serverUs = spent.user + spent.system;
    }
    const events = conversations * perConversation;
    const committed = await countMessages(opts, keyspace);
    return {
      conversations,
      events,
      ...(opts.pid ? { cassandraCpuUsPerEvent: Math.round(cassandraUs / events) } : {}),
      serverCpuUsPerEvent: Math.round(serverUs / events),
      eventsPerSec: Math.round((events * 1000) / ms),
      committed,
    };
  } finally {
    await store.close().catch(() => undefined);
    await dropKeyspace(opts, keyspace);
  }
}

const nodeCpuUs = (pid: number | undefined) => (pid ? cpuUsOf(pid) : 0);

const clientOf = (opts: CassandraFloorOptions) =>
  new cassandra.Client({
    contactPoints: [opts.contactPoint],
    localDataCenter: opts.localDataCenter,
  });

async function countMessages(opts: CassandraFloorOptions, keyspace: string): Promise<number> {
  const client = clientOf(opts);
  try {
    const r = await client.execute(
      `SELECT count(*) AS n FROM ${keyspace}.event_buckets WHERE kind = ? ALLOW FILTERING`,
      [kindNumber.messagePosted],
      { prepare: true },
    );
    return Number(r.first()?.n ?? 0);
  } finally {
    await client.shutdown();
  }
}

async function dropKeyspace(opts: CassandraFloorOptions, keyspace: string): Promise<void> {
  const client = clientOf(opts);
  try {
    await client.execute(`DROP KEYSPACE IF EXISTS ${keyspace}`);
  } finally {
    await client.shutdown();
  }
}
