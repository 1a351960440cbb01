import { Buffer } from "node:buffer";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import cassandra from "cassandra-driver";
import {
  ConversationKind,
  type Event,
  EventSchema,
  MessageKind,
  Role,
} from "../../../gen/chat/v1/event_pb.js";
import { DevicePlatform } from "../../../gen/chat/v1/model_pb.js";
import { setBounded } from "../../bounded-map.js";
import {
  BackendUnavailableError,
  ConversationExistsError,
  DeviceStateError,
  DuplicateEventError,
  NotFoundError,
  NotMemberError,
  SeqConflictError,
  UnknownConversationError,
} from "../../errors.js";
import { decodeEvent, encodeEvent, rememberEventBytes } from "../../event-bytes.js";
import { createKeyedQueue } from "../../keyed-queue.js";
import type { EventStore } from "../event-store.js";
import type {
  MemberRecord,
  MetadataStore,
  SyncState,
  UserConversation,
} from "../metadata-store.js";
import {
  big,
  directKey,
  kindNumber,
  num,
  type Row,
  redact,
  targetOf,
  toConv,
  toDevice,
  toMember,
  toUser,
} from "../records.js";
import { defaultBucketSize, tableNames, tables, unbucketedEvents } from "./schema.js";

const { Client, errors, types } = cassandra;

export interface CassandraOptions {
  /** host:port of one or more nodes. */
  contactPoints: string[];
  localDataCenter: string;
  keyspace: string;
  /** Used when the keyspace is created (SimpleStrategy). */
  replicationFactor?: number;
  /**
   * Events per partition of a conversation's log (default 10,000). Fixed for
   * a keyspace's life: every store on it must be opened with the same size.
   */
  bucketSize?: number;
}

export interface CassandraStore extends EventStore, MetadataStore {
  /**
   * Creates the keyspace and tables if missing. Call once before use. Two
   * processes creating the same table at once can leave Cassandra with
   * conflicting schema versions: start one core first on a new keyspace.
   */
  migrate(): Promise<void>;
}

/** Driver failures that mean "try again": no node, timeouts, overload. */
const transientCodes = new Set<number>([
  types.responseErrorCodes.unavailableException,
  types.responseErrorCodes.overloaded,
  types.responseErrorCodes.isBootstrapping,
  types.responseErrorCodes.writeTimeout,
  types.responseErrorCodes.readTimeout,
  types.responseErrorCodes.readFailure,
  types.responseErrorCodes.writeFailure,
]);

/**
 * A driver failure that means "try again": the request never left or its
 * outcome is unknown. A connection that dies with a request in flight
 * (`isSocketError`) is one: the driver retries only idempotent statements,
 * and none of ours is marked so. A client's retried send is safe: if the
 * event was stored, its key is found (restored on first touch if need be).
 */
function unavailable(err: unknown): unknown {
  const transient =
    err instanceof errors.NoHostAvailableError ||
    err instanceof errors.OperationTimedOutError ||
    err instanceof errors.BusyConnectionError ||
    (err instanceof errors.ResponseError && transientCodes.has(err.code)) ||
    (err instanceof Error &&
      ((err as { isSocketError?: unknown }).isSocketError === true ||
        /shutdown|not connected|connection (closed|timeout)|no connection available/i.test(
          err.message,
        )));
  return transient ? new BackendUnavailableError("cassandra unavailable", { cause: err }) : err;
}

/** Milliseconds for a bigint column (the driver takes BigInts only). */
const ms = (n: number) => BigInt(n);

/** The driver takes blobs as Buffers only: a view of the same bytes. */
const blob = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);

/** Conversations whose heads a store remembers; past it the least recently used are read again. */
const maxHeads = 200_000;

/** How long a conversation key may go without its first event before it counts as abandoned. */
const staleKeyMs = 30_000;

const keyspacePattern = /^[a-z][a-z0-9_]{0,47}$/;

/**
 * Events and metadata in Cassandra: the store for a core that has outgrown
 * one SQLite file. The rules of EventStore.commit hold across processes:
 * an event takes its seq with INSERT ... IF NOT EXISTS (a Paxos round on
 * the conversation's partition, the one a message pays for), and
 * direct/request keys are taken the same way, so two writers can never both
 * commit a seq or open a pair twice. Idempotency keys are checked with a
 * plain read and written with the event's projection: a conversation has one
 * writer (its core), whose commits take turns. What an event changes in the
 * metadata is written after the event, idempotently, and each process checks
 * on first touching a conversation that the projection caught up with the
 * events (a writer that died between the two leaves nothing half done for
 * long, its keys included).
 *
 * Read-modify-writes of metadata rows (cursors, devices) are serialized per
 * row within the process; across processes the last write to a cell wins.
 */
export function openCassandraStore(opts: CassandraOptions): CassandraStore {
  if (!keyspacePattern.test(opts.keyspace)) {
    throw new Error(`keyspace must match ${keyspacePattern}`);
  }
  const client = new Client({
    contactPoints: opts.contactPoints,
    localDataCenter: opts.localDataCenter,
    encoding: { useBigIntAsLong: true, useUndefinedAsUnset: true },
    queryOptions: {
      prepare: true,
      consistency: types.consistencies.localQuorum,
      serialConsistency: types.consistencies.localSerial,
    },
    socketOptions: { connectTimeout: 5000, readTimeout: 12_000 },
    // A node that comes back is used again within seconds (the driver's default waits up to 10 min).
    policies: {
      reconnection: new cassandra.policies.reconnection.ExponentialReconnectionPolicy(
        250,
        5000,
        false,
      ),
    },
  });
  const ks = opts.keyspace;
  const t = Object.fromEntries(tableNames.map((n) => [n, `${ks}.${n}`])) as Record<string, string>;

  const run = async (cql: string, params: unknown[] = []) => {
    try {
      return await client.execute(cql, params, { prepare: true });
    } catch (err) {
      throw unavailable(err);
    }
  };
  const first = async (cql: string, params: unknown[]) =>
    (await run(cql, params)).first() as Row | null;
  const all = async (cql: string, params: unknown[]) => (await run(cql, params)).rows as Row[];
  /**
   * Idempotent writes in one round trip (an unlogged batch: each partition's
   * part applies on its own, so a failure may leave some applied).
   */
  const writeSideBySide = async (queries: { query: string; params: unknown[] }[]) => {
    if (queries.length === 0) return;
    if (queries.length === 1) {
      await run(queries[0]!.query, queries[0]!.params);
      return;
    }
    try {
      await client.batch(queries, { prepare: true, logged: false });
    } catch (err) {
      throw unavailable(err);
    }
  };
  /** A logged batch: all of it is applied or, after a failure, eventually all. */
  const batch = async (queries: { query: string; params: unknown[] }[]) => {
    if (queries.length === 0) return;
    try {
      await client.batch(queries, { prepare: true, logged: true });
    } catch (err) {
      throw unavailable(err);
    }
  };
  /** A conditional write: whether it applied, and the row as it stood when it did not. */
  const lwt = async (cql: string, params: unknown[]) => {
    const r = await run(cql, params);
    return { applied: r.wasApplied(), row: r.first() as Row | null };
  };

  const rows = createKeyedQueue();

  // ---- events ----

  const bucketSize = BigInt(opts.bucketSize ?? defaultBucketSize);
  /** The bucket that holds a seq (seqs start at 1). */
  const bucketOf = (seq: bigint) => (seq - 1n) / bucketSize;
  /** The highest seq a bucket holds. */
  const bucketEnd = (bucket: bigint) => (bucket + 1n) * bucketSize;

  const eventAt = (conversationId: string, seq: bigint) =>
    first(
      `SELECT event_id, body FROM ${t.event_buckets}
       WHERE conversation_id = ? AND bucket = ? AND seq = ?`,
      [conversationId, bucketOf(seq), seq],
    );

  /**
   * Up to `limit` rows (seq and the given columns) with seq > afterSeq, ascending,
   * read bucket by bucket: seqs have no holes, so a bucket that is not full
   * holds the last event.
   */
  const rowsAfter = async (
    columns: string,
    conversationId: string,
    afterSeq: bigint,
    limit: number,
  ): Promise<Row[]> => {
    const out: Row[] = [];
    let from = afterSeq;
    while (out.length < limit) {
      const bucket = bucketOf(from + 1n);
      const page = await all(
        `SELECT seq, ${columns} FROM ${t.event_buckets}
         WHERE conversation_id = ? AND bucket = ? AND seq > ? ORDER BY seq LIMIT ?`,
        [conversationId, bucket, from, limit - out.length],
      );
      out.push(...page);
      if (page.length === 0) break;
      from = big(page.at(-1)!.seq);
      if (from < bucketEnd(bucket)) break;
    }
    return out;
  };

  /**
   * The last stored seq, looked for from `from` on (a seq known to be stored,
   * or 0): the bucket that holds it, and the next while each is full.
   */
  const lastStored = async (conversationId: string, from: bigint) => {
    let last: bigint | undefined;
    for (let bucket = bucketOf(from > 0n ? from : 1n); ; bucket++) {
      const top = await first(
        `SELECT seq FROM ${t.event_buckets} WHERE conversation_id = ? AND bucket = ?
         ORDER BY seq DESC LIMIT 1`,
        [conversationId, bucket],
      );
      if (!top) return last;
      last = big(top.seq);
      if (last < bucketEnd(bucket)) return last;
    }
  };

  /** The head as projected: a lower bound of the last stored seq (0 when unknown). */
  const projectedHead = async (conversationId: string) => {
    const conv = await first(`SELECT head_seq FROM ${t.conversations} WHERE conversation_id = ?`, [
      conversationId,
    ]);
    return conv ? big(conv.head_seq) : 0n;
  };

  /**
   * Heads as this process projected them. On first touch a conversation's
   * projection is brought up to its last event (see headOf and caughtUp).
   */
  const heads = new Map<string, bigint>();
  /** Records a head, forgetting the oldest past the bound (a forgotten one is read again). */
  const setHead = (conversationId: string, seq: bigint) =>
    setBounded(heads, conversationId, seq, maxHeads);
  const commits = createKeyedQueue();

  /** The projected head, after re-projecting events a writer stored but did not project. */
  const headOf = async (conversationId: string): Promise<bigint | undefined> => {
    const cached = heads.get(conversationId);
    if (cached !== undefined) return cached;
    let projected = await projectedHead(conversationId);
    const logHead = await lastStored(conversationId, projected);
    if (logHead === undefined) return undefined;
    while (projected < logHead) {
      const missed = await rowsAfter("body", conversationId, projected, 100);
      if (missed.length === 0) break;
      let atMs = 0;
      for (const r of missed) {
        const ev = fromBinary(EventSchema, r.body as Uint8Array);
        atMs = createdMs(ev);
        await project(ev, atMs);
        projected = ev.seq;
      }
      await advanceHead(conversationId, projected, atMs);
    }
    setHead(conversationId, logHead);
    return logHead;
  };

  /**
   * Resolves once this process has checked that the conversation's
   * projection covers its events (once per conversation and process): a
   * writer that died between the two must not hide stored events from reads.
   */
  const caughtUp = async (conversationId: string) => {
    if (!heads.has(conversationId)) await commits.run(conversationId, () => headOf(conversationId));
  };

  const createdMs = (ev: Event) => (ev.createdAt ? timestampMs(ev.createdAt) : Date.now());

  /**
   * Activity revisions: increasing within this process, and across processes
   * as far as their clocks agree (microseconds since the epoch, bumped when
   * two commits share one).
   */
  let lastRev = 0n;
  const nextRev = () => {
    const now = BigInt(Date.now()) * 1000n;
    lastRev = now > lastRev ? now : lastRev + 1n;
    return lastRev;
  };
  const advanceHead = (conversationId: string, seq: bigint, atMs: number) =>
    run(
      `UPDATE ${t.conversations} SET head_seq = ?, last_activity_at = ?, activity_rev = ?
       WHERE conversation_id = ?`,
      [seq, ms(atMs), nextRev(), conversationId],
    );

  /** Takes a direct or request key for the conversation; the holder's id when another has it. */
  const takeConversationKey = async (key: string, conversationId: string) => {
    const taken = await lwt(
      `INSERT INTO ${t.conversation_keys} (key, conversation_id) VALUES (?, ?) IF NOT EXISTS`,
      [key, conversationId],
    );
    if (taken.applied) return undefined;
    const holder = taken.row!.conversation_id as string;
    if (holder === conversationId) return undefined;
    if ((await commits.run(holder, () => headOf(holder))) !== undefined) return holder;
    // No first event yet: a creation in flight, or one that died half way
    // (its key is taken over once it is older than any creation takes).
    const age = await first(
      `SELECT writetime(conversation_id) AS written FROM ${t.conversation_keys} WHERE key = ?`,
      [key],
    );
    const writtenMs = age ? Number(big(age.written) / 1000n) : 0;
    if (Date.now() - writtenMs < staleKeyMs) {
      throw new BackendUnavailableError("conversation key in flight");
    }
    const moved = await lwt(
      `UPDATE ${t.conversation_keys} SET conversation_id = ? WHERE key = ? IF conversation_id = ?`,
      [conversationId, key, holder],
    );
    return moved.applied ? undefined : (moved.row!.conversation_id as string);
  };

  const conversationKey = (ev: Event): string | undefined => {
    if (ev.kind.case !== "conversationCreated") return undefined;
    const created = ev.kind.value;
    if (created.kind === ConversationKind.DIRECT) {
      const [a, b] = created.memberUserIds;
      return `direct ${directKey(a ?? "", b ?? "")}`;
    }
    return ev.clientMsgId ? `request ${ev.actorUserId} ${ev.clientMsgId}` : undefined;
  };

  /**
   * The original event when another stored event holds this event's
   * idempotency key. A plain read: the key is written with the event's
   * projection (see project), and a conversation has one writer, whose
   * commits take turns; a key that points at no event of its own (left by an
   * attempt that lost its seq) is overwritten when this event is projected.
   */
  const heldKey = async (ev: Event): Promise<Event | undefined> => {
    const held = await first(
      `SELECT seq FROM ${t.event_keys} WHERE conversation_id = ? AND actor_user_id = ?
       AND client_msg_id = ?`,
      [ev.conversationId, ev.actorUserId, ev.clientMsgId],
    );
    if (!held || big(held.seq) === ev.seq) return undefined;
    const row = await eventAt(ev.conversationId, big(held.seq));
    if (!row) return undefined;
    const original = decodeEvent(row.body as Uint8Array);
    return original.actorUserId === ev.actorUserId && original.clientMsgId === ev.clientMsgId
      ? original
      : undefined;
  };

  /** Whether the event carries an idempotency key (creations keep theirs in conversation_keys). */
  const keyed = (ev: Event) => ev.kind.case !== "conversationCreated" && ev.clientMsgId !== "";

  const seqVerdict = (ev: Event, head: bigint | undefined): Error | undefined => {
    const conv = ev.conversationId;
    if (ev.kind.case === "conversationCreated") {
      if (head !== undefined) return new SeqConflictError(conv, head + 1n, ev.seq);
      if (ev.seq !== 1n) return new SeqConflictError(conv, 1n, ev.seq);
      return undefined;
    }
    if (head === undefined) return new UnknownConversationError(conv);
    if (ev.seq !== head + 1n) return new SeqConflictError(conv, head + 1n, ev.seq);
    return undefined;
  };

  /** One event: its verdict, or its bytes once stored and projected. */
  const commitOne = async (ev: Event): Promise<Uint8Array | Error> => {
    const conv = ev.conversationId;
    let verdict = seqVerdict(ev, await headOf(conv));
    if (verdict) {
      // The head this process knows may lag another writer's: judge by a fresh read.
      heads.delete(conv);
      verdict = seqVerdict(ev, await headOf(conv));
      if (verdict) return verdict;
    }
    const convKey = conversationKey(ev);
    if (convKey) {
      const holder = await takeConversationKey(convKey, conv);
      if (holder) return new ConversationExistsError(holder);
    }
    if (keyed(ev)) {
      const original = await heldKey(ev);
      if (original) return new DuplicateEventError(original);
    }
    const bytes = encodeEvent(ev);
    const stored = await lwt(
      `INSERT INTO ${t.event_buckets} (conversation_id, bucket, seq, event_id, kind,
        actor_user_id, client_msg_id, target_seq, body, redacted)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, false) IF NOT EXISTS`,
      [
        conv,
        bucketOf(ev.seq),
        ev.seq,
        ev.eventId,
        kindNumber[ev.kind.case as keyof typeof kindNumber] ?? 0,
        ev.actorUserId,
        keyed(ev) ? ev.clientMsgId : null,
        targetOf(ev),
        blob(bytes),
      ],
    );
    if (!stored.applied && stored.row!.event_id !== ev.eventId) {
      // Another writer took the seq first.
      heads.delete(conv);
      const now = await headOf(conv);
      return new SeqConflictError(conv, (now ?? 0n) + 1n, ev.seq);
    }
    await project(ev, createdMs(ev));
    setHead(conv, ev.seq);
    return bytes;
  };

  /** Joins (or re-joins) users at the event's seq; a current member is left as is. */
  const join = async (conv: string, userIds: string[], role: (u: string) => Role, ev: Event) => {
    const atMs = createdMs(ev);
    await Promise.all(
      userIds.map((userId) =>
        rows.run(`m ${conv} ${userId}`, async () => {
          const m = await memberRow(conv, userId);
          if (m && m.left_seq === null) return;
          await batch([
            {
              query: `INSERT INTO ${t.members} (conversation_id, user_id, role, joined_seq, joined_at,
                left_seq, delivered_seq, read_seq, receipt_at) VALUES (?, ?, ?, ?, ?, null, 0, 0, 0)`,
              params: [conv, userId, role(userId), ev.seq, ms(atMs)],
            },
            {
              query: `INSERT INTO ${t.user_conversations} (user_id, conversation_id, left_seq)
                VALUES (?, ?, null)`,
              params: [userId, conv],
            },
          ]);
        }),
      ),
    );
  };

  const countMembers = async (conv: string) => {
    const members = await all(`SELECT left_seq FROM ${t.members} WHERE conversation_id = ?`, [
      conv,
    ]);
    const count = members.filter((m) => m.left_seq === null).length;
    await run(`UPDATE ${t.conversations} SET member_count = ? WHERE conversation_id = ?`, [
      count,
      conv,
    ]);
  };

  const memberRow = (conv: string, userId: string) =>
    first(`SELECT * FROM ${t.members} WHERE conversation_id = ? AND user_id = ?`, [conv, userId]);

  /** Rewrites a stored event without what it said (a deletion's target and its edits). */
  const redactAt = async (conv: string, seq: bigint) => {
    const row = await eventAt(conv, seq);
    if (!row) return;
    const ev = redact(fromBinary(EventSchema, row.body as Uint8Array));
    await run(
      `UPDATE ${t.event_buckets} SET body = ?, redacted = true
       WHERE conversation_id = ? AND bucket = ? AND seq = ?`,
      [blob(toBinary(EventSchema, ev)), conv, bucketOf(seq), seq],
    );
  };

  /**
   * What an event changes besides the log, written so that doing it again
   * changes nothing more (the head is advanced by the caller): its
   * idempotency key, and what its kind changes.
   */
  const project = async (ev: Event, atMs: number) => {
    const key = keyed(ev)
      ? [
          {
            query: `INSERT INTO ${t.event_keys} (conversation_id, actor_user_id, client_msg_id, seq)
              VALUES (?, ?, ?, ?)`,
            params: [ev.conversationId, ev.actorUserId, ev.clientMsgId, ev.seq],
          },
        ]
      : [];
    const k = ev.kind;
    // Writing implies having read up to here; bot and system posts do not.
    if (k.case === "messagePosted" && ev.actorUserId && k.value.messageKind === MessageKind.USER) {
      await projectOwnPost(ev, atMs, key);
      return;
    }
    await Promise.all([writeSideBySide(key), projectKind(ev, atMs)]);
  };

  /**
   * A user's message moves the sender's read mark, and the sending device's
   * cursor when it stood right below (a device that sends has not thereby
   * received what others posted since). Both rows are read, then written
   * with the key in one unlogged batch: the writes are idempotent, so one
   * that half applied is completed when the event is projected again.
   */
  const projectOwnPost = async (
    ev: Event,
    atMs: number,
    writes: { query: string; params: unknown[] }[],
  ) => {
    const conv = ev.conversationId;
    const user = ev.actorUserId;
    const device = ev.actorDeviceId;
    const body = async () => {
      const [m, c] = await Promise.all([
        memberRow(conv, user),
        device
          ? first(
              `SELECT delivered_seq FROM ${t.device_cursors} WHERE device_id = ? AND conversation_id = ?`,
              [device, conv],
            )
          : null,
      ]);
      if (m && m.left_seq === null && big(m.read_seq) < ev.seq) {
        const delivered = big(m.delivered_seq) > ev.seq ? big(m.delivered_seq) : ev.seq;
        writes.push({
          query: `UPDATE ${t.members} SET read_seq = ?, delivered_seq = ?, receipt_at = ?
            WHERE conversation_id = ? AND user_id = ?`,
          params: [ev.seq, delivered, ms(atMs), conv, user],
        });
      }
      if (device && c && big(c.delivered_seq) === ev.seq - 1n) {
        writes.push({
          query: `INSERT INTO ${t.device_cursors} (device_id, conversation_id, delivered_seq)
            VALUES (?, ?, ?)`,
          params: [device, conv, ev.seq],
        });
      }
      await writeSideBySide(writes);
    };
    // The member row's lock, then the cursor's: nothing takes them the other way round.
    await rows.run(`m ${conv} ${user}`, () =>
      device ? rows.run(`d ${device} ${conv}`, body) : body(),
    );
  };

  const projectKind = async (ev: Event, atMs: number) => {
    const conv = ev.conversationId;
    const k = ev.kind;
    switch (k.case) {
      case "conversationCreated": {
        const direct = k.value.kind === ConversationKind.DIRECT;
        await run(
          `INSERT INTO ${t.conversations} (conversation_id, kind, title, created_by, created_at,
            head_seq, last_activity_at, member_count, activity_rev) VALUES (?, ?, ?, ?, ?, 0, ?, 0, 0)`,
          [conv, k.value.kind, k.value.title, ev.actorUserId, ms(atMs), ms(atMs)],
        );
        await join(
          conv,
          k.value.memberUserIds,
          (u) => (direct ? Role.MEMBER : u === ev.actorUserId ? Role.OWNER : Role.MEMBER),
          ev,
        );
        await countMembers(conv);
        break;
      }
      case "membersAdded": {
        const role = k.value.role || Role.MEMBER;
        await join(conv, k.value.userIds, () => role, ev);
        await countMembers(conv);
        break;
      }
      case "memberRemoved": {
        const userId = k.value.userId;
        await rows.run(`m ${conv} ${userId}`, async () => {
          const m = await memberRow(conv, userId);
          if (!m || m.left_seq !== null) return;
          await batch([
            {
              query: `UPDATE ${t.members} SET left_seq = ? WHERE conversation_id = ? AND user_id = ?`,
              params: [ev.seq, conv, userId],
            },
            {
              query: `UPDATE ${t.user_conversations} SET left_seq = ? WHERE user_id = ? AND conversation_id = ?`,
              params: [ev.seq, userId, conv],
            },
          ]);
        });
        await countMembers(conv);
        break;
      }
      case "memberRoleChanged": {
        const { userId, role } = k.value;
        await rows.run(`m ${conv} ${userId}`, async () => {
          const m = await memberRow(conv, userId);
          if (!m || m.left_seq !== null) return;
          await run(`UPDATE ${t.members} SET role = ? WHERE conversation_id = ? AND user_id = ?`, [
            role,
            conv,
            userId,
          ]);
        });
        break;
      }
      case "conversationRenamed":
        await run(`UPDATE ${t.conversations} SET title = ? WHERE conversation_id = ?`, [
          k.value.title,
          conv,
        ]);
        break;
      case "messagePosted":
        // A user's own post is projected by projectOwnPost; other posts change nothing else.
        break;
      case "messageEdited":
        await run(`INSERT INTO ${t.edits} (conversation_id, target_seq, seq) VALUES (?, ?, ?)`, [
          conv,
          k.value.targetSeq,
          ev.seq,
        ]);
        break;
      case "reactionAdded":
      case "reactionRemoved":
        await run(
          `INSERT INTO ${t.reactions} (conversation_id, target_seq, actor_user_id, seq)
           VALUES (?, ?, ?, ?)`,
          [conv, k.value.targetSeq, ev.actorUserId, ev.seq],
        );
        break;
      case "messageDeleted": {
        const target = k.value.targetSeq;
        await redactAt(conv, target);
        const edits = await all(
          `SELECT seq FROM ${t.edits} WHERE conversation_id = ? AND target_seq = ?`,
          [conv, target],
        );
        for (const e of edits) await redactAt(conv, big(e.seq));
        break;
      }
      default:
        break;
    }
  };

  const setCursor = (device: string, conv: string, seq: bigint) =>
    run(
      `INSERT INTO ${t.device_cursors} (device_id, conversation_id, delivered_seq) VALUES (?, ?, ?)`,
      [device, conv, seq],
    );

  // ---- metadata reads ----

  async function devicesOf(userId: string) {
    const ids = await all(`SELECT device_id FROM ${t.user_devices} WHERE user_id = ?`, [userId]);
    const found = await Promise.all(ids.map((r) => deviceRow(r.device_id as string)));
    return found
      .filter((r) => r !== null)
      .map(toDevice)
      .sort((a, b) => a.createdAtMs - b.createdAtMs || (a.deviceId < b.deviceId ? -1 : 1));
  }

  const conversationRow = (conversationId: string) =>
    first(`SELECT * FROM ${t.conversations} WHERE conversation_id = ?`, [conversationId]);

  const deviceRow = (deviceId: string) =>
    first(`SELECT * FROM ${t.devices} WHERE device_id = ?`, [deviceId]);

  const userRow = (userId: string) => first(`SELECT * FROM ${t.users} WHERE user_id = ?`, [userId]);

  /** The user's conversations (current and left) with their membership and revision. */
  const userConversations = async (userId: string) => {
    const ids = await all(`SELECT conversation_id FROM ${t.user_conversations} WHERE user_id = ?`, [
      userId,
    ]);
    const found = await Promise.all(
      ids.map(async (r) => {
        const id = r.conversation_id as string;
        await caughtUp(id);
        const [c, m] = await Promise.all([conversationRow(id), memberRow(id, userId)]);
        return c && m ? { c, m } : undefined;
      }),
    );
    return found.filter((x) => x !== undefined);
  };

  /** Most recently active first; ties by conversation id, descending. */
  const byActivity = (a: UserConversation, b: UserConversation) =>
    b.conversation.lastActivityMs - a.conversation.lastActivityMs ||
    (b.conversation.conversationId < a.conversation.conversationId ? -1 : 1);

  const eventsAfter = (conversationId: string, afterSeq: bigint, limit: number) =>
    rowsAfter("body", conversationId, afterSeq, limit);
  /**
   * The newest `limit` rows with minSeq <= seq < beforeSeq (0: after the
   * head), oldest first, read bucket by bucket downwards from the head.
   */
  const eventsBefore = async (
    conversationId: string,
    beforeSeq: bigint,
    minSeq: bigint,
    limit: number,
  ) => {
    // A seq this process knows is stored bounds the page without a read; the head needs one.
    const known = heads.get(conversationId);
    let below = beforeSeq;
    if (beforeSeq === 0n || known === undefined || beforeSeq > known + 1n) {
      const head = await lastStored(conversationId, known ?? (await projectedHead(conversationId)));
      if (head === undefined) return [];
      if (beforeSeq === 0n || beforeSeq > head) below = head + 1n;
    }
    const pages: Row[][] = [];
    let wanted = limit;
    while (wanted > 0 && below > minSeq && below > 1n) {
      const bucket = bucketOf(below - 1n);
      const start = bucket * bucketSize + 1n;
      const page = await all(
        `SELECT body FROM ${t.event_buckets} WHERE conversation_id = ? AND bucket = ?
         AND seq < ? AND seq >= ? ORDER BY seq DESC LIMIT ?`,
        [conversationId, bucket, below, minSeq > start ? minSeq : start, wanted],
      );
      pages.push(page);
      wanted -= page.length;
      below = start;
    }
    return pages.flat().reverse();
  };
  const bytesOf = (r: Row) => r.body as Uint8Array;

  /**
   * Copies the log of a keyspace made before it had buckets into
   * event_buckets, indexing its reactions on the way; the old table is left
   * as it was. A scan of every event, once, by the process that creates
   * event_buckets, before it serves.
   */
  async function carryOver() {
    const reaction = new Set([kindNumber.reactionAdded, kindNumber.reactionRemoved]);
    let pageState: string | undefined;
    do {
      let page: cassandra.types.ResultSet;
      try {
        page = await client.execute(
          `SELECT conversation_id, seq, event_id, kind, actor_user_id, client_msg_id, target_seq,
             body, redacted FROM ${ks}.${unbucketedEvents}`,
          [],
          { prepare: true, fetchSize: 500, ...(pageState ? { pageState } : {}) },
        );
      } catch (err) {
        throw unavailable(err);
      }
      const writes = (page.rows as Row[]).flatMap((r) => {
        const seq = big(r.seq);
        const copy = {
          query: `INSERT INTO ${t.event_buckets} (conversation_id, bucket, seq, event_id, kind,
              actor_user_id, client_msg_id, target_seq, body, redacted)
              VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
          params: [
            r.conversation_id,
            bucketOf(seq),
            seq,
            r.event_id,
            r.kind,
            r.actor_user_id,
            r.client_msg_id,
            r.target_seq,
            r.body,
            r.redacted ?? false,
          ],
        };
        if (!reaction.has(r.kind as number)) return [copy];
        const indexed = {
          query: `INSERT INTO ${t.reactions} (conversation_id, target_seq, actor_user_id, seq)
              VALUES (?, ?, ?, ?)`,
          params: [r.conversation_id, r.target_seq, r.actor_user_id, seq],
        };
        return [copy, indexed];
      });
      // Side by side, a few at a time: one batch of a page would pass Cassandra's batch size limit.
      for (let i = 0; i < writes.length; i += 50) {
        await Promise.all(writes.slice(i, i + 50).map((w) => run(w.query, w.params)));
      }
      pageState = page.pageState ?? undefined;
    } while (pageState);
  }

  return {
    async migrate() {
      const existing = await all(
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?",
        [ks],
      );
      const have = new Set(existing.map((r) => r.table_name));
      if (tableNames.every((n) => have.has(n))) return;
      await run(
        `CREATE KEYSPACE IF NOT EXISTS ${ks} WITH replication =
         {'class': 'SimpleStrategy', 'replication_factor': ${opts.replicationFactor ?? 1}}`,
      );
      for (const table of tables) await run(table.replace(/EXISTS (\w+)/, `EXISTS ${ks}.$1`));
      if (have.has(unbucketedEvents) && !have.has("event_buckets")) await carryOver();
    },

    async commit(events) {
      // Each conversation's events in order; conversations side by side.
      const groups = new Map<string, number[]>();
      events.forEach((ev, i) => {
        const g = groups.get(ev.conversationId);
        if (g) g.push(i);
        else groups.set(ev.conversationId, [i]);
      });
      // Sparse: an index is in it once its event is judged (undefined = committed).
      const outcomes: (Error | undefined)[] = new Array(events.length);
      let failure: Error | undefined;
      /** Events of the batch not judged: not known to be committed. */
      const undecided = (indexes: number[], err: Error) => {
        for (const i of indexes) if (!(i in outcomes)) outcomes[i] = err;
      };
      const commitGroup = (conv: string, indexes: number[]) =>
        commits.run(conv, async () => {
          const advanced: { seq: bigint; atMs: number }[] = [];
          try {
            for (const i of indexes) {
              const ev = events[i]!;
              const outcome = await commitOne(ev);
              if (outcome instanceof Error) {
                outcomes[i] = outcome;
                continue;
              }
              rememberEventBytes(ev, outcome);
              outcomes[i] = undefined;
              advanced.push({ seq: ev.seq, atMs: createdMs(ev) });
            }
            const last = advanced.at(-1);
            if (last) await advanceHead(conv, last.seq, last.atMs);
          } catch (err) {
            // What this conversation's events did is unknown: read it afresh next time.
            heads.delete(conv);
            const e =
              err instanceof Error
                ? err
                : new BackendUnavailableError("commit failed", { cause: err });
            failure ??= e;
            undecided(indexes, e);
          }
        });
      // Creations that take a direct or request key go in batch order: the
      // first of two for one pair must be the one that opens it.
      if (events.some((ev) => conversationKey(ev) !== undefined)) {
        for (const [conv, indexes] of groups) {
          if (failure) undecided(indexes, failure);
          else await commitGroup(conv, indexes);
        }
      } else {
        await Promise.all([...groups].map(([conv, indexes]) => commitGroup(conv, indexes)));
      }
      // Conversations commit apart, so one may fail while others committed:
      // their verdicts say so. With nothing committed the batch fails whole.
      if (failure && !outcomes.some((o, i) => o === undefined && i in outcomes)) throw failure;
      return outcomes;
    },
    async readAfter(conversationId, afterSeq, limit) {
      return (await eventsAfter(conversationId, afterSeq, limit)).map((r) =>
        decodeEvent(bytesOf(r)),
      );
    },
    async readBefore(conversationId, beforeSeq, minSeq, limit) {
      return (await eventsBefore(conversationId, beforeSeq, minSeq, limit)).map((r) =>
        decodeEvent(bytesOf(r)),
      );
    },
    async readAfterEncoded(conversationId, afterSeq, limit) {
      return (await eventsAfter(conversationId, afterSeq, limit)).map(bytesOf);
    },
    async readBeforeEncoded(conversationId, beforeSeq, minSeq, limit) {
      return (await eventsBefore(conversationId, beforeSeq, minSeq, limit)).map(bytesOf);
    },
    async readEvent(conversationId, seq) {
      const row = await eventAt(conversationId, seq);
      return row ? decodeEvent(bytesOf(row)) : undefined;
    },
    async findByClientMsgId(conversationId, actorUserId, clientMsgId) {
      const key = await first(
        `SELECT seq FROM ${t.event_keys} WHERE conversation_id = ? AND actor_user_id = ?
         AND client_msg_id = ?`,
        [conversationId, actorUserId, clientMsgId],
      );
      if (!key) return undefined;
      const row = await eventAt(conversationId, big(key.seq));
      if (!row) return undefined;
      const ev = decodeEvent(bytesOf(row));
      // A key left by a writer that lost its seq points at someone else's event.
      return ev.actorUserId === actorUserId && ev.clientMsgId === clientMsgId ? ev : undefined;
    },
    async readReactions(conversationId, targetSeq, actorUserId) {
      const refs = await all(
        `SELECT seq FROM ${t.reactions} WHERE conversation_id = ? AND target_seq = ?
         AND actor_user_id = ?`,
        [conversationId, targetSeq, actorUserId],
      );
      const found = await Promise.all(refs.map((r) => eventAt(conversationId, big(r.seq))));
      return found.flatMap((row) => (row ? [decodeEvent(bytesOf(row))] : []));
    },
    async countUnread(conversationId, userId, afterSeq, cap) {
      let count = 0;
      let from = afterSeq;
      // Pages of the log after the cursor, until the cap or the head.
      for (;;) {
        const page = await rowsAfter("kind, actor_user_id, redacted", conversationId, from, 1000);
        for (const r of page) {
          if (r.kind === kindNumber.messagePosted && r.actor_user_id !== userId && !r.redacted) {
            if (++count >= cap) return cap;
          }
        }
        if (page.length < 1000) return count;
        from = big(page.at(-1)!.seq);
      }
    },

    putUser(userId, displayName, createOnly) {
      return rows.run(`u ${userId}`, async () => {
        const t0 = Date.now();
        const created = await lwt(
          `INSERT INTO ${t.users} (user_id, display_name, created_at, updated_at)
           VALUES (?, ?, ?, ?) IF NOT EXISTS`,
          [userId, displayName, ms(t0), ms(t0)],
        );
        if (created.applied) {
          return {
            user: { userId, displayName, createdAtMs: t0, updatedAtMs: t0 },
            created: true,
          };
        }
        const existing = toUser(created.row!);
        if (createOnly || existing.displayName === displayName) {
          return { user: existing, created: false };
        }
        await run(`UPDATE ${t.users} SET display_name = ?, updated_at = ? WHERE user_id = ?`, [
          displayName,
          ms(t0),
          userId,
        ]);
        return { user: { ...existing, displayName, updatedAtMs: t0 }, created: false };
      });
    },
    async getUsers(userIds) {
      const found = await Promise.all([...new Set(userIds)].map(userRow));
      return found.filter((r) => r !== null).map(toUser);
    },
    ensureDevice(userId, deviceId, platform) {
      return rows.run(`d ${deviceId}`, async () => {
        const t0 = Date.now();
        const existing = await deviceRow(deviceId);
        const check = (row: Row) => {
          const d = toDevice(row);
          if (d.userId !== userId) throw new DeviceStateError("device belongs to another user");
          if (d.revokedAtMs) throw new DeviceStateError("device is revoked");
          return d;
        };
        if (existing) {
          const d = check(existing);
          await run(`UPDATE ${t.devices} SET last_active_at = ? WHERE device_id = ?`, [
            ms(t0),
            deviceId,
          ]);
          return { ...d, lastActiveAtMs: t0 };
        }
        const created = await lwt(
          `INSERT INTO ${t.devices} (device_id, user_id, platform, display_name, push_token,
            created_at, last_active_at, revoked_at) VALUES (?, ?, ?, '', '', ?, ?, 0) IF NOT EXISTS`,
          [deviceId, userId, platform || DevicePlatform.UNSPECIFIED, ms(t0), ms(t0)],
        );
        if (!created.applied) return check(created.row!);
        await run(`INSERT INTO ${t.user_devices} (user_id, device_id) VALUES (?, ?)`, [
          userId,
          deviceId,
        ]);
        return toDevice((await deviceRow(deviceId))!);
      });
    },
    updateDevice(userId, deviceId, patch) {
      return rows.run(`d ${deviceId}`, async () => {
        const row = await deviceRow(deviceId);
        if (!row || row.user_id !== userId) throw new NotFoundError("device not found");
        if (num(row.revoked_at)) throw new DeviceStateError("device is revoked");
        const old = row.push_token as string;
        // A token names one app install: whoever registers it last gets its notifications.
        if (patch.pushToken !== "") {
          const holders = await all(`SELECT device_id FROM ${t.push_tokens} WHERE push_token = ?`, [
            patch.pushToken,
          ]);
          for (const h of holders) {
            const other = h.device_id as string;
            if (other !== deviceId) await clearToken(other, patch.pushToken);
          }
        }
        await run(
          `UPDATE ${t.devices} SET platform = ?, display_name = ?, push_token = ?, last_active_at = ?
           WHERE device_id = ?`,
          [patch.platform, patch.displayName, patch.pushToken, ms(Date.now()), deviceId],
        );
        if (old !== "" && old !== patch.pushToken) {
          await run(`DELETE FROM ${t.push_tokens} WHERE push_token = ? AND device_id = ?`, [
            old,
            deviceId,
          ]);
        }
        if (patch.pushToken !== "") {
          await run(`INSERT INTO ${t.push_tokens} (push_token, device_id) VALUES (?, ?)`, [
            patch.pushToken,
            deviceId,
          ]);
        }
        return toDevice((await deviceRow(deviceId))!);
      });
    },
    async getDevice(deviceId) {
      const row = await deviceRow(deviceId);
      return row ? toDevice(row) : undefined;
    },
    listDevices: devicesOf,
    revokeDevice(userId, deviceId) {
      return rows.run(`d ${deviceId}`, async () => {
        const row = await deviceRow(deviceId);
        if (!row || row.user_id !== userId) throw new NotFoundError("device not found");
        if (num(row.revoked_at) === 0) {
          await run(`UPDATE ${t.devices} SET revoked_at = ?, push_token = '' WHERE device_id = ?`, [
            ms(Date.now()),
            deviceId,
          ]);
          if (row.push_token) {
            await run(`DELETE FROM ${t.push_tokens} WHERE push_token = ? AND device_id = ?`, [
              row.push_token,
              deviceId,
            ]);
          }
        }
        return toDevice((await deviceRow(deviceId))!);
      });
    },
    forgetPushToken(deviceId, pushToken) {
      return rows.run(`d ${deviceId}`, () => clearToken(deviceId, pushToken));
    },
    async pushTargets(userIds) {
      const perUser = await Promise.all([...new Set(userIds)].map(devicesOf));
      return perUser.flat().filter((d) => d.revokedAtMs === 0 && d.pushToken !== "");
    },

    async getConversation(conversationId) {
      await caughtUp(conversationId);
      const row = await conversationRow(conversationId);
      return row ? toConv(row) : undefined;
    },
    async findDirect(userA, userB) {
      return findByKey(`direct ${directKey(userA, userB)}`);
    },
    async findGroupRequest(creatorUserId, clientRequestId) {
      return findByKey(`request ${creatorUserId} ${clientRequestId}`);
    },
    async getMember(conversationId, userId) {
      const row = await memberRow(conversationId, userId);
      return row ? toMember(row) : undefined;
    },
    async listMembers(conversationId) {
      const members = await all(`SELECT * FROM ${t.members} WHERE conversation_id = ?`, [
        conversationId,
      ]);
      return members
        .filter((r) => r.left_seq === null)
        .map(toMember)
        .sort(
          (a, b) =>
            (a.joinedSeq < b.joinedSeq ? -1 : a.joinedSeq > b.joinedSeq ? 1 : 0) ||
            (a.userId < b.userId ? -1 : 1),
        );
    },
    async listUserConversations(userId, limit, after) {
      const found = await userConversations(userId);
      const revOf = new Map<string, bigint>();
      let userRev = 0n;
      const current: UserConversation[] = [];
      for (const { c, m } of found) {
        const rev = big(c.activity_rev ?? 0n);
        if (rev > userRev) userRev = rev;
        if (m.left_seq !== null) continue;
        revOf.set(c.conversation_id as string, rev);
        current.push({ conversation: toConv(c), member: toMember(m) });
      }
      current.sort(byActivity);
      /** True when `u` sorts after (below) the keyset position. */
      const isBelow = (u: UserConversation) =>
        after === undefined ||
        u.conversation.lastActivityMs < after.lastActivityMs ||
        (u.conversation.lastActivityMs === after.lastActivityMs &&
          u.conversation.conversationId < after.conversationId);
      const below = current.filter(isBelow).slice(0, limit);
      if (after?.rev === undefined) return { moved: [], below, rev: userRev };
      const since = after.rev;
      const movedAll = current
        .filter((u) => !isBelow(u) && revOf.get(u.conversation.conversationId)! > since)
        .sort((a, b) => {
          const ra = revOf.get(a.conversation.conversationId)!;
          const rb = revOf.get(b.conversation.conversationId)!;
          return ra < rb ? -1 : ra > rb ? 1 : 0;
        })
        .slice(0, limit);
      // Oldest moves first, at most `limit`: when more moved, the revision
      // given back is the last one returned, so the rest come next time.
      const rev =
        movedAll.length === limit
          ? revOf.get(movedAll.at(-1)!.conversation.conversationId)!
          : userRev;
      return { moved: movedAll.sort(byActivity), below, rev };
    },
    async syncStates(userId, deviceId) {
      const [found, cursors] = await Promise.all([
        userConversations(userId),
        all(`SELECT conversation_id, delivered_seq FROM ${t.device_cursors} WHERE device_id = ?`, [
          deviceId,
        ]),
      ]);
      const cursorOf = new Map(
        cursors.map((r) => [r.conversation_id as string, big(r.delivered_seq)]),
      );
      return found.map(
        ({ c, m }): SyncState => ({
          conversationId: c.conversation_id as string,
          joinedSeq: big(m.joined_seq),
          leftSeq: m.left_seq === null ? undefined : big(m.left_seq),
          headSeq: big(c.head_seq),
          lastActivityMs: num(c.last_activity_at),
          deviceCursor: cursorOf.get(c.conversation_id as string),
        }),
      );
    },
    async advanceReceipt(userId, deviceId, conversationId, deliveredSeq, readSeq) {
      const top = deliveredSeq > readSeq ? deliveredSeq : readSeq;
      const result = await rows.run(`m ${conversationId} ${userId}`, async () => {
        const row = await memberRow(conversationId, userId);
        const leftSeq = row && row.left_seq !== null ? big(row.left_seq) : undefined;
        // Checked before anything moves: a refused receipt moves no cursor, the device's included.
        if (!row || (leftSeq !== undefined && top > leftSeq)) {
          throw new NotMemberError(conversationId, userId);
        }
        const member = toMember(row);
        // A former member's own cursors are shown to nobody any more: only the device's moves.
        if (leftSeq !== undefined) return { member, changed: false };
        const read = readSeq > member.readSeq ? readSeq : member.readSeq;
        const delivered = top > member.deliveredSeq ? top : member.deliveredSeq;
        if (read === member.readSeq && delivered === member.deliveredSeq) {
          return { member, changed: false };
        }
        const at = Date.now();
        await run(
          `UPDATE ${t.members} SET read_seq = ?, delivered_seq = ?, receipt_at = ?
           WHERE conversation_id = ? AND user_id = ?`,
          [read, delivered, ms(at), conversationId, userId],
        );
        const moved: MemberRecord = {
          ...member,
          readSeq: read,
          deliveredSeq: delivered,
          receiptUpdatedAtMs: at,
        };
        return { member: moved, changed: true };
      });
      if (top > 0n) {
        await rows.run(`d ${deviceId} ${conversationId}`, async () => {
          const c = await first(
            `SELECT delivered_seq FROM ${t.device_cursors} WHERE device_id = ? AND conversation_id = ?`,
            [deviceId, conversationId],
          );
          if (!c || big(c.delivered_seq) < top) await setCursor(deviceId, conversationId, top);
        });
      }
      return result;
    },
    async sharedPeers(userId, candidates) {
      const mine = await all(
        `SELECT conversation_id, left_seq FROM ${t.user_conversations} WHERE user_id = ?`,
        [userId],
      );
      const current = new Set(
        mine.filter((r) => r.left_seq === null).map((r) => r.conversation_id),
      );
      if (current.size === 0) return [];
      const peers = await Promise.all(
        [...new Set(candidates)].map(async (peer) => {
          const theirs = await all(
            `SELECT conversation_id, left_seq FROM ${t.user_conversations} WHERE user_id = ?`,
            [peer],
          );
          return theirs.some((r) => r.left_seq === null && current.has(r.conversation_id))
            ? peer
            : undefined;
        }),
      );
      return peers.filter((p) => p !== undefined);
    },
    async close() {
      await commits.idle();
      await rows.idle();
      await client.shutdown();
    },
  };

  async function findByKey(key: string) {
    const row = await first(`SELECT conversation_id FROM ${t.conversation_keys} WHERE key = ?`, [
      key,
    ]);
    if (!row) return undefined;
    const id = row.conversation_id as string;
    await caughtUp(id);
    // A key whose creation never stored its first event names no conversation.
    return heads.has(id) ? id : undefined;
  }

  /**
   * Clears a device's token if it still has this one: conditional, so it needs
   * no lock on the device (two installs trading tokens take each other's).
   */
  async function clearToken(deviceId: string, pushToken: string) {
    await run(`DELETE FROM ${t.push_tokens} WHERE push_token = ? AND device_id = ?`, [
      pushToken,
      deviceId,
    ]);
    const cleared = await lwt(
      `UPDATE ${t.devices} SET push_token = '' WHERE device_id = ? IF push_token = ?`,
      [deviceId, pushToken],
    );
    return cleared.applied;
  }
}
