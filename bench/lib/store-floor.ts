import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ConversationKind, EventSchema, MessageKind } from "../../gen/chat/v1/event_pb.js";
import { kindNumber } from "../../lib/backends/records.js";
import { openDatabase } from "../../lib/backends/sqlite/schema.js";
import { createWrites } from "../../lib/backends/sqlite/writes.js";
import type { StoreFloorProbe } from "./results.js";

/** A user's text message as the store floor probes commit it: keyed, from a device. */
export function floorMessage(
  conversationId: string,
  seq: bigint,
  actorUserId: string,
  actorDeviceId: string,
  clientMsgId: string,
) {
  return create(EventSchema, {
    conversationId,
    seq,
    eventId: `${conversationId}-${seq}`,
    actorUserId,
    actorDeviceId,
    clientMsgId,
    createdAt: timestampFromMs(Date.now()),
    kind: {
      case: "messagePosted",
      value: {
        messageKind: MessageKind.USER,
        content: { text: "a message of about the length people type" },
      },
    },
  });
}

/**
 * The least CPU ours' store spends to make one 1:1 message durable: `events`
 * text messages across `pairs` direct conversations, committed `perCommit`
 * at a time through the writer thread's own statements (lib/backends/sqlite/
 * writes.ts) on a fresh database in the temp dir, synchronous=FULL as the
 * server runs it, with its checkpoints. No sockets, no hand-off, no
 * authorization: only encoding the event and SQLite's work, on this thread.
 * At 64 events per commit pages and fsyncs are shared about as far as they
 * go, so this is the floor under the writer's cost at any rate. Takes a few
 * seconds; `committed` counts the messages read back from the database,
 * warm-up included, as a check that the work was done.
 */
export function probeStoreFloor(
  events = 40_000,
  perCommit = 64,
  pairs = 1000,
  warmUpEvents = 5000,
): StoreFloorProbe {
  const dir = mkdtempSync(join(tmpdir(), "relaychat-floor-"));
  const db = openDatabase({ path: join(dir, "chat.db") }, "writer");
  try {
    const writes = createWrites(db);
    const inTransaction = db.transaction((fn: () => void) => fn());
    const heads: bigint[] = [];
    inTransaction(() => {
      for (let i = 0; i < pairs; i++) {
        for (const side of ["a", "b"]) {
          writes.putUser(`${side}${i}`, `${side}${i}`, true);
          writes.ensureDevice(`${side}${i}`, `d${side}${i}`, 0);
        }
        writes.commit([
          create(EventSchema, {
            conversationId: `c${i}`,
            seq: 1n,
            actorUserId: `a${i}`,
            kind: {
              case: "conversationCreated",
              value: { kind: ConversationKind.DIRECT, memberUserIds: [`a${i}`, `b${i}`] },
            },
          }),
        ]);
        heads.push(1n);
      }
    });
    let made = 0;
    // Conversations in a scattered order, as a server's commits mix its pairs.
    const next = () => {
      const i = (made * 7919) % pairs;
      const side = made % 2 === 0 ? "a" : "b";
      const seq = (heads[i] ?? 1n) + 1n;
      heads[i] = seq;
      made++;
      return floorMessage(`c${i}`, seq, `${side}${i}`, `d${side}${i}`, `m${made}`);
    };
    const commitBatch = () => {
      const batch = Array.from({ length: perCommit }, next);
      const before = process.cpuUsage();
      inTransaction(() => {
        writes.commit(batch);
      });
      const spent = process.cpuUsage(before);
      return spent.user + spent.system;
    };
    for (let n = 0; n < warmUpEvents; n += perCommit) commitBatch();
    let cpuUs = 0;
    let measured = 0;
    for (; measured < events; measured += perCommit) cpuUs += commitBatch();
    const row = db
      .prepare("SELECT count(*) AS n FROM events WHERE kind = ?")
      .get(kindNumber.messagePosted) as { n: number };
    return {
      eventsPerCommit: perCommit,
      events: measured,
      cpuUsPerEvent: Math.round((cpuUs / measured) * 10) / 10,
      committed: row.n,
    };
  } finally {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
