import { Buffer } from "node:buffer";
import { toBinary } from "@bufbuild/protobuf";
import cassandraDriver from "cassandra-driver";
import { afterAll, describe, expect, it } from "vitest";
import { type Event, EventSchema } from "../../gen/chat/v1/event_pb.js";
import {
  type CassandraStore,
  openCassandraStore,
} from "../../lib/backends/cassandra/cassandra-store.js";
import { tableNames } from "../../lib/backends/cassandra/schema.js";
import { directKey, kindNumber } from "../../lib/backends/records.js";
import {
  BackendUnavailableError,
  DuplicateEventError,
  SeqConflictError,
} from "../../lib/errors.js";
import { dropKeyspace, ensureCassandra } from "../helpers/dev-env.js";
import { startTcpProxy } from "../helpers/tcp-proxy.js";
import { eventStoreContract } from "./event-store.contract.js";
import { ev, newConversationId, type StoreFactory, seqsOf } from "./fixtures.js";
import { metadataStoreContract } from "./metadata-store.contract.js";

const cassandra = await ensureCassandra();
// One keyspace per test file and process: files run side by side.
const keyspace = `contract_${process.pid}`;
// Buckets of 3 events, so every read of more than a few events spans buckets.
const bucketSize = 3;
const open = () =>
  openCassandraStore({
    contactPoints: [cassandra.contactPoint],
    localDataCenter: cassandra.localDataCenter,
    keyspace,
    bucketSize,
  });
{
  const setup = open();
  await setup.migrate();
  await setup.close();
}
afterAll(() => dropKeyspace(keyspace));

/** Empties every table of the test's keyspace. */
async function truncate() {
  const client = new cassandraDriver.Client({
    contactPoints: [cassandra.contactPoint],
    localDataCenter: cassandra.localDataCenter,
  });
  try {
    for (const name of tableNames) await client.execute(`TRUNCATE ${keyspace}.${name}`);
  } finally {
    await client.shutdown();
  }
}

/** A fresh store per test on emptied tables; reopen is a new session on the same keyspace. */
const cassandraFactory: StoreFactory = async () => {
  await truncate();
  let store: CassandraStore = open();
  return {
    get events() {
      return store;
    },
    get metadata() {
      return store;
    },
    async reopen() {
      await store.close();
      store = open();
      return { events: store, metadata: store };
    },
    async cleanup() {
      await store.close();
    },
  };
};

eventStoreContract("cassandra", cassandraFactory);
metadataStoreContract("cassandra", cassandraFactory);

/** Writes an event's row alone, as a writer that died right after storing it leaves it. */
async function storeEventOnly(event: Event) {
  const raw = new cassandraDriver.Client({
    contactPoints: [cassandra.contactPoint],
    localDataCenter: cassandra.localDataCenter,
  });
  try {
    await raw.execute(
      `INSERT INTO ${keyspace}.event_buckets (conversation_id, bucket, seq, event_id, kind,
        actor_user_id, client_msg_id, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      [
        event.conversationId,
        cassandraDriver.types.Long.fromNumber(Math.floor((Number(event.seq) - 1) / bucketSize)),
        cassandraDriver.types.Long.fromNumber(Number(event.seq)),
        event.eventId,
        kindNumber[event.kind.case!],
        event.actorUserId,
        event.clientMsgId || null,
        Buffer.from(toBinary(EventSchema, event)),
      ],
      { prepare: true },
    );
  } finally {
    await raw.shutdown();
  }
}

describe("Cassandra store, beyond the contract", () => {
  it("lets only one of two writers take a seq, and the loser's retry keeps its key", async () => {
    const a = open();
    const b = open();
    try {
      await truncate();
      const conv = newConversationId();
      expect(await a.commit([ev.group(conv, "ann", ["ben"])])).toEqual([undefined]);
      // Both know the head is 1; each proposes its own event for seq 2.
      await b.readAfter(conv, 0n, 1);
      const [va, vb] = await Promise.all([
        a.commit([ev.posted(conv, 2, "ann", "from a", { clientMsgId: "ka" })]),
        b.commit([ev.posted(conv, 2, "ben", "from b", { clientMsgId: "kb" })]),
      ]);
      const verdicts = [...va, ...vb];
      expect(verdicts.filter((v) => v === undefined)).toHaveLength(1);
      expect(verdicts.find((v) => v !== undefined)).toBeInstanceOf(SeqConflictError);
      const stored = await a.readAfter(conv, 0n, 10);
      expect(seqsOf(stored)).toEqual([1, 2]);
      // The loser retries at the next seq under the same key: it is not called a duplicate.
      const loserIsA = va[0] !== undefined;
      const loser = loserIsA ? a : b;
      const retry = loserIsA
        ? ev.posted(conv, 3, "ann", "from a", { clientMsgId: "ka" })
        : ev.posted(conv, 3, "ben", "from b", { clientMsgId: "kb" });
      expect(await loser.commit([retry])).toEqual([undefined]);
      expect(seqsOf(await a.readAfter(conv, 0n, 10))).toEqual([1, 2, 3]);
      // And a second retry is.
      const again = { ...retry, seq: 4n };
      const [dup] = await loser.commit([again]);
      expect(dup).toBeInstanceOf(DuplicateEventError);
      expect((dup as DuplicateEventError).original.seq).toBe(3n);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("projects an event a writer stored but did not project, when the conversation is next touched", async () => {
    const store = open();
    try {
      await truncate();
      const conv = newConversationId();
      await store.commit([ev.group(conv, "ann", ["ben"])]);
      // As a writer that died after storing seq 2 would leave it: the event, no projection.
      const lost = ev.added(conv, 2, "ann", ["cat"]);
      await storeEventOnly(lost);
      const fresh = open();
      try {
        expect(await fresh.commit([ev.posted(conv, 3, "cat", "hi")])).toEqual([undefined]);
        expect((await fresh.getConversation(conv))?.headSeq).toBe(3n);
        expect((await fresh.listMembers(conv)).map((m) => m.userId)).toEqual(["ann", "ben", "cat"]);
      } finally {
        await fresh.close();
      }
    } finally {
      await store.close();
    }
  });

  it("restores the idempotency key of a message a writer stored but did not project", async () => {
    const store = open();
    try {
      await truncate();
      const conv = newConversationId();
      await store.commit([ev.group(conv, "ann", ["ben"])]);
      // A writer that died right after storing seq 2 leaves the event without its key row.
      const lost = ev.posted(conv, 2, "ann", "once", { clientMsgId: "k-lost" });
      await storeEventOnly(lost);
      const fresh = open();
      try {
        // The client's retry of that message, sequenced after it: the original, not a second copy.
        const [verdict] = await fresh.commit([
          ev.posted(conv, 3, "ann", "once", { clientMsgId: "k-lost" }),
        ]);
        expect(verdict).toBeInstanceOf(DuplicateEventError);
        expect((verdict as DuplicateEventError).original.eventId).toBe(lost.eventId);
        expect((await fresh.findByClientMsgId(conv, "ann", "k-lost"))?.seq).toBe(2n);
        expect(seqsOf(await fresh.readAfter(conv, 0n, 10))).toEqual([1, 2]);
      } finally {
        await fresh.close();
      }
    } finally {
      await store.close();
    }
  });

  it("carries a log from before buckets over into them when it creates them, its reactions indexed", async () => {
    const old = `${keyspace}_unbucketed`;
    const raw = new cassandraDriver.Client({
      contactPoints: [cassandra.contactPoint],
      localDataCenter: cassandra.localDataCenter,
    });
    const conv = newConversationId();
    // More than a page of the copy's scan, between the events that react.
    const posts = Array.from({ length: 700 }, (_, i) => ev.posted(conv, 4 + i, "ann", `p${i}`));
    const log = [
      ev.group(conv, "ann", ["ben"]),
      ev.posted(conv, 2, "ann", "hi"),
      ev.reacted(conv, 3, "ben", 2, "👍"),
      ...posts,
      ev.reacted(conv, 704, "ben", 2, "🎉"),
      ev.unreacted(conv, 705, "ben", 2, "👍"),
    ];
    try {
      await raw.execute(
        `CREATE KEYSPACE ${old} WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}`,
      );
      // The log's table as it was before buckets, and nothing else.
      await raw.execute(`CREATE TABLE ${old}.events (
        conversation_id text, seq bigint, event_id text, kind int, actor_user_id text,
        client_msg_id text, target_seq bigint, body blob, redacted boolean,
        PRIMARY KEY ((conversation_id), seq))`);
      const long = (n: bigint) => cassandraDriver.types.Long.fromNumber(Number(n));
      for (let i = 0; i < log.length; i += 50) {
        await Promise.all(
          log.slice(i, i + 50).map((e) => {
            const k = e.kind;
            const target = k.case === "reactionAdded" || k.case === "reactionRemoved";
            return raw.execute(
              `INSERT INTO ${old}.events (conversation_id, seq, event_id, kind, actor_user_id,
                target_seq, body, redacted) VALUES (?, ?, ?, ?, ?, ?, ?, false)`,
              [
                e.conversationId,
                long(e.seq),
                e.eventId,
                kindNumber[k.case!],
                e.actorUserId,
                target ? long(k.value.targetSeq) : null,
                Buffer.from(toBinary(EventSchema, e)),
              ],
              { prepare: true },
            );
          }),
        );
      }

      const store = openCassandraStore({
        contactPoints: [cassandra.contactPoint],
        localDataCenter: cassandra.localDataCenter,
        keyspace: old,
        bucketSize,
      });
      try {
        await store.migrate();
        expect(seqsOf(await store.readAfter(conv, 0n, 1000))).toEqual(
          log.map((e) => Number(e.seq)),
        );
        expect((await store.readEvent(conv, 704n))?.eventId).toBe(log[703]!.eventId);
        const found = await store.readReactions(conv, 2n, "ben");
        expect(found.map((e) => [e.seq, e.kind.case])).toEqual([
          [3n, "reactionAdded"],
          [704n, "reactionAdded"],
          [705n, "reactionRemoved"],
        ]);
        // It goes on where the old log stopped, its projection caught up on the way.
        expect(await store.commit([ev.posted(conv, 706, "ben", "next")])).toEqual([undefined]);
        expect((await store.getConversation(conv))?.headSeq).toBe(706n);
      } finally {
        await store.close();
      }
    } finally {
      await raw.shutdown();
      await dropKeyspace(old);
    }
  });

  it("answers BackendUnavailableError when its connection dies with a write in flight, and the retry stores it once", async () => {
    const proxy = await startTcpProxy(cassandra.contactPoint);
    const store = openCassandraStore({
      contactPoints: [proxy.address],
      localDataCenter: cassandra.localDataCenter,
      keyspace,
    });
    try {
      const conv = newConversationId();
      // Prepares the statements a send uses, so that what is cut is the send's own request.
      await store.commit([ev.group(conv, "ann", ["ben"])]);
      await store.commit([ev.posted(conv, 2, "ann", "before", { clientMsgId: "k2" })]);
      const sent = ev.posted(conv, 3, "ann", "cut", { clientMsgId: "k3" });
      proxy.cutOnNextRequest();
      // The outcome is unknown (the request left, no answer came): "try again", not an internal error.
      await expect(store.commit([sent])).rejects.toBeInstanceOf(BackendUnavailableError);
      expect(proxy.cuts).toBe(1);
      await expect
        .poll(() => store.commit([sent]).catch((err: unknown) => err), { timeout: 20_000 })
        .toEqual([undefined]);
      expect(seqsOf(await store.readAfter(conv, 0n, 10))).toEqual([1, 2, 3]);
    } finally {
      await store.close().catch(() => undefined);
      await proxy.close();
    }
  });

  it("reports what committed when one conversation of a batch fails and others commit", async () => {
    const store = open();
    const raw = new cassandraDriver.Client({
      contactPoints: [cassandra.contactPoint],
      localDataCenter: cassandra.localDataCenter,
    });
    try {
      const fine = newConversationId();
      await store.commit([ev.group(fine, "ann", ["ben"])]);
      // Another creation of the pair ann–zed holds its key with no first event yet
      // (in flight elsewhere): opening the pair fails for now, as a write that times out does.
      const [ann, zed] = [`ann${process.pid}`, `zed${Date.now()}`];
      await raw.execute(
        `INSERT INTO ${keyspace}.conversation_keys (key, conversation_id) VALUES (?, ?)`,
        [`direct ${directKey(ann, zed)}`, newConversationId()],
        { prepare: true },
      );
      const posted = ev.posted(fine, 2, "ann", "kept");
      const blocked = ev.direct(newConversationId(), ann, zed);
      const verdicts = await store.commit([posted, blocked]);
      expect(verdicts[0]).toBeUndefined();
      expect(verdicts[1]).toBeInstanceOf(BackendUnavailableError);
      expect(seqsOf(await store.readAfter(fine, 0n, 10))).toEqual([1, 2]);
      // Nothing of a batch committed: it fails whole, as before.
      await expect(store.commit([ev.direct(newConversationId(), ann, zed)])).rejects.toBeInstanceOf(
        BackendUnavailableError,
      );
    } finally {
      await raw.shutdown();
      await store.close();
    }
  });

  it("answers BackendUnavailableError when no node can be reached", async () => {
    const store = openCassandraStore({
      contactPoints: ["127.0.0.1:1"],
      localDataCenter: cassandra.localDataCenter,
      keyspace,
    });
    try {
      await expect(store.readAfter(newConversationId(), 0n, 10)).rejects.toBeInstanceOf(
        BackendUnavailableError,
      );
    } finally {
      await store.close().catch(() => undefined);
    }
  });
});
