import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { type Event, EventSchema, MessageKind } from "../../gen/chat/v1/event_pb.js";
import type { EventStore } from "../../lib/backends/event-store.js";
import type { MetadataStore } from "../../lib/backends/metadata-store.js";
import {
  ConversationExistsError,
  DuplicateEventError,
  SeqConflictError,
  UnknownConversationError,
} from "../../lib/errors.js";
import {
  ev,
  freshPerTest,
  newConversationId,
  range,
  type StoreFactory,
  type StoreHandle,
  seqsOf,
  textOf,
} from "./fixtures.js";

export type { StoreFactory, StoreHandle } from "./fixtures.js";

/** An event decoded from bytes by the reference decoder. */
const decoded = (bytes: Uint8Array) => fromBinary(EventSchema, bytes);
/** An event as the reference decoder builds it (a store may hand out its own objects). */
const copy = (event: Event) => decoded(toBinary(EventSchema, event));

/** Commits a batch and fails the test unless every event committed. */
async function commitAll(events: EventStore, batch: Parameters<EventStore["commit"]>[0]) {
  const verdicts = await events.commit(batch);
  expect(verdicts.map((v) => v?.message)).toEqual(batch.map(() => undefined));
}

/** A group created by ann with ben, then `messages` posts by ann and ben in turn. */
async function groupWithMessages(events: EventStore, messages: number) {
  const conv = newConversationId();
  await commitAll(events, [ev.group(conv, "ann", ["ben"])]);
  const posts = range(2, messages + 1).map((seq) =>
    ev.posted(conv, seq, seq % 2 === 0 ? "ann" : "ben", `m${seq}`),
  );
  if (posts.length > 0) await commitAll(events, posts);
  return conv;
}

/**
 * The EventStore contract (SQLite, Cassandra): commit verdicts, range reads,
 * idempotency lookups, unread counts, redaction and durability.
 */
export function eventStoreContract(name: string, factory: StoreFactory) {
  describe(`EventStore contract: ${name}`, () => {
    let handle: StoreHandle;
    let events: EventStore;
    let metadata: MetadataStore;
    const fresh = freshPerTest(factory);
    const open = async () => {
      handle = await fresh();
      ({ events, metadata } = handle);
    };

    describe("commit verdicts", () => {
      it("commits contiguous seqs, within one batch and across batches", async () => {
        await open();
        const conv = newConversationId();
        await commitAll(events, [
          ev.group(conv, "ann", ["ben"]),
          ev.posted(conv, 2, "ann", "a"),
          ev.posted(conv, 3, "ben", "b"),
        ]);
        await commitAll(events, [ev.posted(conv, 4, "ann", "c")]);
        expect(seqsOf(await events.readAfter(conv, 0n, 100))).toEqual([1, 2, 3, 4]);
        expect((await metadata.getConversation(conv))?.headSeq).toBe(4n);
      });

      it("rejects holes and reused seqs with SeqConflictError naming the expected seq", async () => {
        await open();
        const conv = await groupWithMessages(events, 2);
        const verdicts = await events.commit([
          ev.posted(conv, 5, "ann", "hole"),
          ev.posted(conv, 2, "ann", "reuse"),
          ev.posted(conv, 3, "ann", "reuse head"),
        ]);
        expect(verdicts).toHaveLength(3);
        for (const [i, got] of [5n, 2n, 3n].entries()) {
          expect(verdicts[i]).toBeInstanceOf(SeqConflictError);
          expect((verdicts[i] as SeqConflictError).expected).toBe(4n);
          expect((verdicts[i] as SeqConflictError).got).toBe(got);
          expect((verdicts[i] as SeqConflictError).conversationId).toBe(conv);
        }
        expect(seqsOf(await events.readAfter(conv, 0n, 100))).toEqual([1, 2, 3]);
        expect(textOf(await events.readEvent(conv, 2n))).toBe("m2");
        expect((await metadata.getConversation(conv))?.headSeq).toBe(3n);
      });

      it("requires a creation to be seq 1 of a new conversation", async () => {
        await open();
        const fresh = newConversationId();
        const atTwo = ev.group(fresh, "ann", ["ben"]);
        atTwo.seq = 2n;
        const existing = await groupWithMessages(events, 1);
        const verdicts = await events.commit([atTwo, ev.group(existing, "ann", ["cat"])]);
        expect(verdicts[0]).toBeInstanceOf(SeqConflictError);
        expect((verdicts[0] as SeqConflictError).expected).toBe(1n);
        expect(verdicts[1]).toBeInstanceOf(SeqConflictError);
        expect(await metadata.getConversation(fresh)).toBeUndefined();
        expect(await events.readAfter(fresh, 0n, 10)).toEqual([]);
        expect((await metadata.listMembers(existing)).map((m) => m.userId).sort()).toEqual([
          "ann",
          "ben",
        ]);
      });

      it("rejects a reused client_msg_id of the same actor with the original event", async () => {
        await open();
        const conv = await groupWithMessages(events, 0);
        const original = ev.posted(conv, 2, "ann", "first", { clientMsgId: "k1" });
        await commitAll(events, [original]);
        const verdicts = await events.commit([
          ev.posted(conv, 3, "ann", "retry", { clientMsgId: "k1" }),
          // Same key, other sender: a different message.
          ev.posted(conv, 3, "ben", "ben's", { clientMsgId: "k1" }),
        ]);
        expect(verdicts[0]).toBeInstanceOf(DuplicateEventError);
        const dup = (verdicts[0] as DuplicateEventError).original;
        expect(dup.eventId).toBe(original.eventId);
        expect(dup.seq).toBe(2n);
        expect(textOf(dup)).toBe("first");
        expect(verdicts[1]).toBeUndefined();
        expect(textOf(await events.readEvent(conv, 3n))).toBe("ben's");
        // The key is scoped to the conversation.
        const other = await groupWithMessages(events, 0);
        await commitAll(events, [ev.posted(other, 2, "ann", "elsewhere", { clientMsgId: "k1" })]);
      });

      it("detects a reused client_msg_id inside one batch and commits the events after it", async () => {
        await open();
        const conv = await groupWithMessages(events, 0);
        const first = ev.posted(conv, 2, "ann", "one", { clientMsgId: "same" });
        const verdicts = await events.commit([
          first,
          ev.posted(conv, 3, "ann", "two", { clientMsgId: "same" }),
          ev.posted(conv, 3, "ann", "three", { clientMsgId: "other" }),
          ev.posted(conv, 4, "ann", "no key"),
          ev.posted(conv, 5, "ann", "no key either"),
        ]);
        expect(verdicts[0]).toBeUndefined();
        expect(verdicts[1]).toBeInstanceOf(DuplicateEventError);
        expect((verdicts[1] as DuplicateEventError).original.eventId).toBe(first.eventId);
        expect(verdicts.slice(2)).toEqual([undefined, undefined, undefined]);
        const stored = await events.readAfter(conv, 1n, 10);
        expect(stored.map(textOf)).toEqual(["one", "three", "no key", "no key either"]);
      });

      it("opens one direct conversation per user pair, whichever side creates it", async () => {
        await open();
        const first = newConversationId();
        await commitAll(events, [ev.direct(first, "ann", "ben")]);
        const second = newConversationId();
        const verdicts = await events.commit([
          ev.direct(second, "ben", "ann"),
          ev.direct(newConversationId(), "ann", "cat"),
        ]);
        expect(verdicts[0]).toBeInstanceOf(ConversationExistsError);
        expect((verdicts[0] as ConversationExistsError).conversationId).toBe(first);
        expect(verdicts[1]).toBeUndefined();
        expect(await metadata.getConversation(second)).toBeUndefined();
        expect(await metadata.findDirect("ben", "ann")).toBe(first);
        expect(await metadata.findDirect("ann", "ben")).toBe(first);
      });

      it("rejects the second direct creation for a pair inside one batch", async () => {
        await open();
        const a = newConversationId();
        const b = newConversationId();
        const verdicts = await events.commit([
          ev.direct(a, "ann", "ben"),
          ev.direct(b, "ben", "ann"),
        ]);
        expect(verdicts[0]).toBeUndefined();
        expect((verdicts[1] as ConversationExistsError).conversationId).toBe(a);
      });

      it("opens one group per creator's request id", async () => {
        await open();
        const g1 = newConversationId();
        await commitAll(events, [ev.group(g1, "ann", ["ben"], { clientMsgId: "req-1" })]);
        const again = newConversationId();
        const byBen = newConversationId();
        const noKey1 = newConversationId();
        const noKey2 = newConversationId();
        const verdicts = await events.commit([
          ev.group(again, "ann", ["cat"], { clientMsgId: "req-1" }),
          ev.group(byBen, "ben", ["ann"], { clientMsgId: "req-1" }),
          ev.group(noKey1, "ann", ["ben"]),
          ev.group(noKey2, "ann", ["ben"]),
        ]);
        expect(verdicts[0]).toBeInstanceOf(ConversationExistsError);
        expect((verdicts[0] as ConversationExistsError).conversationId).toBe(g1);
        expect(verdicts.slice(1)).toEqual([undefined, undefined, undefined]);
        expect(await metadata.findGroupRequest("ann", "req-1")).toBe(g1);
        expect(await metadata.findGroupRequest("ben", "req-1")).toBe(byBen);
        expect(await metadata.findGroupRequest("cat", "req-1")).toBeUndefined();
      });

      it("keeps a group's request id apart from its creator's message keys", async () => {
        await open();
        const g = newConversationId();
        await commitAll(events, [ev.group(g, "ann", ["ben"], { clientMsgId: "1" })]);
        const verdicts = await events.commit([
          ev.posted(g, 2, "ann", "first", { clientMsgId: "1" }),
        ]);
        expect(verdicts).toEqual([undefined]);
        expect((await events.findByClientMsgId(g, "ann", "1"))?.seq).toBe(2n);
      });

      it("rejects changes to unknown conversations and commits the rest of the batch", async () => {
        await open();
        const conv = newConversationId();
        const ghost = newConversationId();
        const verdicts = await events.commit([
          ev.group(conv, "ann", ["ben"]),
          ev.posted(ghost, 1, "ann", "nowhere"),
          ev.posted(ghost, 2, "ann", "nowhere"),
          ev.posted(conv, 2, "ann", "here"),
        ]);
        expect(verdicts[0]).toBeUndefined();
        expect(verdicts[1]).toBeInstanceOf(UnknownConversationError);
        expect((verdicts[1] as UnknownConversationError).conversationId).toBe(ghost);
        expect(verdicts[2]).toBeInstanceOf(UnknownConversationError);
        expect(verdicts[3]).toBeUndefined();
        expect(await events.readAfter(ghost, 0n, 10)).toEqual([]);
        expect(await metadata.getConversation(ghost)).toBeUndefined();
        expect(seqsOf(await events.readAfter(conv, 0n, 10))).toEqual([1, 2]);
      });

      it("returns an empty verdict list for an empty batch", async () => {
        await open();
        expect(await events.commit([])).toEqual([]);
      });
    });

    describe("reads", () => {
      it("reads forward after a seq, ascending and limited", async () => {
        await open();
        const conv = await groupWithMessages(events, 10);
        expect(seqsOf(await events.readAfter(conv, 0n, 100))).toEqual(range(1, 11));
        expect(seqsOf(await events.readAfter(conv, 5n, 3))).toEqual([6, 7, 8]);
        expect(seqsOf(await events.readAfter(conv, 9n, 10))).toEqual([10, 11]);
        expect(await events.readAfter(conv, 11n, 10)).toEqual([]);
        expect(await events.readAfter(newConversationId(), 0n, 10)).toEqual([]);
      });

      it("reads the newest events of a window backward, returned ascending", async () => {
        await open();
        const conv = await groupWithMessages(events, 10);
        // beforeSeq 0 means "after the head".
        expect(seqsOf(await events.readBefore(conv, 0n, 1n, 3))).toEqual([9, 10, 11]);
        expect(seqsOf(await events.readBefore(conv, 0n, 1n, 100))).toEqual(range(1, 11));
        expect(seqsOf(await events.readBefore(conv, 5n, 1n, 10))).toEqual([1, 2, 3, 4]);
        expect(seqsOf(await events.readBefore(conv, 8n, 4n, 10))).toEqual([4, 5, 6, 7]);
        expect(seqsOf(await events.readBefore(conv, 8n, 4n, 2))).toEqual([6, 7]);
        expect(seqsOf(await events.readBefore(conv, 12n, 11n, 5))).toEqual([11]);
        expect(await events.readBefore(conv, 4n, 4n, 5)).toEqual([]);
        expect(await events.readBefore(newConversationId(), 0n, 1n, 5)).toEqual([]);
      });

      it("reads the same windows as stored, each event as its encoding", async () => {
        await open();
        const conv = await groupWithMessages(events, 10);
        const windows: [bigint, number][] = [
          [0n, 100],
          [5n, 3],
          [9n, 10],
          [11n, 10],
        ];
        for (const [after, limit] of windows) {
          const want = (await events.readAfter(conv, after, limit)).map(copy);
          const got = await events.readAfterEncoded(conv, after, limit);
          expect(got.map(decoded), `after ${after}`).toStrictEqual(want);
        }
        const backward: [bigint, bigint, number][] = [
          [0n, 1n, 3],
          [0n, 1n, 100],
          [5n, 1n, 10],
          [8n, 4n, 2],
          [4n, 4n, 5],
        ];
        for (const [before, min, limit] of backward) {
          const want = (await events.readBefore(conv, before, min, limit)).map(copy);
          const got = await events.readBeforeEncoded(conv, before, min, limit);
          expect(got.map(decoded), `before ${before} from ${min}`).toStrictEqual(want);
        }
        expect(await events.readAfterEncoded(newConversationId(), 0n, 10)).toEqual([]);
        expect(await events.readBeforeEncoded(newConversationId(), 0n, 1n, 5)).toEqual([]);
      });

      it("reads one event with every field as committed", async () => {
        await open();
        const conv = await groupWithMessages(events, 0);
        const posted = ev.posted(conv, 2, "ann", "hello", {
          clientMsgId: "c-1",
          deviceId: "phone",
          atMs: 1_700_000_000_123,
        });
        await commitAll(events, [posted]);
        const got = await events.readEvent(conv, 2n);
        expect(got).toBeDefined();
        expect(got!.eventId).toBe(posted.eventId);
        expect(got!.actorUserId).toBe("ann");
        expect(got!.actorDeviceId).toBe("phone");
        expect(got!.clientMsgId).toBe("c-1");
        expect(got!.createdAt?.seconds).toBe(1_700_000_000n);
        expect(got!.createdAt?.nanos).toBe(123_000_000);
        expect(got!.redacted).toBe(false);
        expect(got!.kind.case).toBe("messagePosted");
        if (got!.kind.case === "messagePosted") {
          expect(got!.kind.value.content?.text).toBe("hello");
          expect(got!.kind.value.content?.attachments[0]?.mediaRef).toBe("media/hello");
        }
        expect(await events.readEvent(conv, 3n)).toBeUndefined();
        expect(await events.readEvent(newConversationId(), 1n)).toBeUndefined();
      });

      it("finds an event by its actor's client_msg_id", async () => {
        await open();
        const conv = await groupWithMessages(events, 0);
        const posted = ev.posted(conv, 2, "ann", "keyed", { clientMsgId: "k-9" });
        await commitAll(events, [posted]);
        expect((await events.findByClientMsgId(conv, "ann", "k-9"))?.eventId).toBe(posted.eventId);
        expect(await events.findByClientMsgId(conv, "ben", "k-9")).toBeUndefined();
        expect(await events.findByClientMsgId(conv, "ann", "k-10")).toBeUndefined();
        expect(await events.findByClientMsgId(newConversationId(), "ann", "k-9")).toBeUndefined();
      });

      it("reads one user's reactions on one message, added and removed, ascending", async () => {
        await open();
        const conv = await groupWithMessages(events, 2);
        await commitAll(events, [
          ev.reacted(conv, 4, "ben", 2, "👍"),
          ev.reacted(conv, 5, "ann", 2, "👍"),
          ev.reacted(conv, 6, "ben", 3, "👍"),
          ev.edited(conv, 7, "ann", 2, "m2 v2"),
          ev.reacted(conv, 8, "ben", 2, "🎉"),
        ]);
        await commitAll(events, [ev.unreacted(conv, 9, "ben", 2, "👍")]);
        const kinds = (list: Event[]) =>
          list.map((e) => [e.seq, e.kind.case, (e.kind.value as { emoji?: string }).emoji]);
        expect(kinds(await events.readReactions(conv, 2n, "ben"))).toEqual([
          [4n, "reactionAdded", "👍"],
          [8n, "reactionAdded", "🎉"],
          [9n, "reactionRemoved", "👍"],
        ]);
        expect(kinds(await events.readReactions(conv, 2n, "ann"))).toEqual([
          [5n, "reactionAdded", "👍"],
        ]);
        expect(kinds(await events.readReactions(conv, 3n, "ben"))).toEqual([
          [6n, "reactionAdded", "👍"],
        ]);
        expect(await events.readReactions(conv, 3n, "ann")).toEqual([]);
        expect(await events.readReactions(newConversationId(), 2n, "ben")).toEqual([]);
      });
    });

    describe("countUnread", () => {
      it("counts other users' messages after a seq, up to the cap", async () => {
        await open();
        const conv = newConversationId();
        await commitAll(events, [
          ev.group(conv, "ann", ["ben", "cat"]),
          ev.posted(conv, 2, "ben", "b1"),
          ev.posted(conv, 3, "ann", "a1"),
          ev.posted(conv, 4, "cat", "c1"),
          ev.reacted(conv, 5, "ben", 3, "👍"),
          ev.renamed(conv, 6, "ann", "new title"),
          ev.posted(conv, 7, "ben", "b2"),
          ev.posted(conv, 8, "ann", "a2"),
        ]);
        // Only messages count: not the creation, reactions or renames.
        expect(await events.countUnread(conv, "ann", 0n, 100)).toBe(3);
        expect(await events.countUnread(conv, "ann", 3n, 100)).toBe(2);
        expect(await events.countUnread(conv, "ben", 0n, 100)).toBe(3);
        expect(await events.countUnread(conv, "ben", 7n, 100)).toBe(1);
        expect(await events.countUnread(conv, "ben", 8n, 100)).toBe(0);
        expect(await events.countUnread(conv, "ann", 0n, 2)).toBe(2);
        expect(await events.countUnread(conv, "dan", 0n, 100)).toBe(5);
      });

      it("does not count deleted messages", async () => {
        await open();
        const conv = newConversationId();
        await commitAll(events, [
          ev.group(conv, "ann", ["ben"]),
          ev.posted(conv, 2, "ann", "a1"),
          ev.posted(conv, 3, "ann", "a2"),
          ev.edited(conv, 4, "ann", 2, "a1 v2"),
          ev.posted(conv, 5, "ann", "a3"),
        ]);
        expect(await events.countUnread(conv, "ben", 0n, 100)).toBe(3);
        await commitAll(events, [ev.deleted(conv, 6, "ann", 2)]);
        expect(await events.countUnread(conv, "ben", 0n, 100)).toBe(2);
        expect(await events.countUnread(conv, "ben", 3n, 100)).toBe(1);
      });
    });

    describe("redaction", () => {
      it("clears a deleted message's content and its edits' texts, keeping their places", async () => {
        await open();
        const conv = newConversationId();
        await commitAll(events, [
          ev.group(conv, "ann", ["ben"]),
          ev.posted(conv, 2, "ann", "secret"),
          ev.posted(conv, 3, "ben", "keep me"),
          ev.edited(conv, 4, "ann", 2, "secret v2"),
          ev.edited(conv, 5, "ben", 3, "kept v2"),
          ev.reacted(conv, 6, "ben", 2, "👀"),
        ]);
        await commitAll(events, [ev.deleted(conv, 7, "ann", 2)]);

        const target = await events.readEvent(conv, 2n);
        expect(target?.redacted).toBe(true);
        expect(target?.kind.case).toBe("messagePosted");
        if (target?.kind.case === "messagePosted") {
          expect(target.kind.value.content?.text ?? "").toBe("");
          expect(target.kind.value.content?.attachments ?? []).toEqual([]);
        }
        expect(target?.eventId).toBeTruthy();
        expect(target?.actorUserId).toBe("ann");

        const edit = await events.readEvent(conv, 4n);
        expect(edit?.redacted).toBe(true);
        expect(edit?.kind.case).toBe("messageEdited");
        if (edit?.kind.case === "messageEdited") {
          expect(edit.kind.value.text).toBe("");
          expect(edit.kind.value.targetSeq).toBe(2n);
        }

        // Untouched: other messages, their edits, and the tombstone itself.
        const other = await events.readEvent(conv, 3n);
        expect(other?.redacted).toBe(false);
        expect(textOf(other)).toBe("keep me");
        const otherEdit = await events.readEvent(conv, 5n);
        expect(otherEdit?.redacted).toBe(false);
        if (otherEdit?.kind.case === "messageEdited")
          expect(otherEdit.kind.value.text).toBe("kept v2");
        const tombstone = await events.readEvent(conv, 7n);
        expect(tombstone?.kind.case).toBe("messageDeleted");

        // Range reads see the redacted versions too, decoded or as stored.
        const all = await events.readAfter(conv, 0n, 10);
        expect(seqsOf(all)).toEqual(range(1, 7));
        expect(all[1]?.redacted).toBe(true);
        expect(textOf(all[1])).toBe("");
        const stored = (await events.readAfterEncoded(conv, 0n, 10)).map(decoded);
        expect(stored).toStrictEqual(all.map(copy));
        expect(stored[1]?.redacted).toBe(true);
        expect(textOf(stored[1])).toBe("");
        const storedEdit = stored[3];
        expect(storedEdit?.redacted).toBe(true);
        expect(storedEdit?.kind.case === "messageEdited" && storedEdit.kind.value.text).toBe("");
      });

      it("keeps the message kind of a redacted message", async () => {
        await open();
        const conv = await groupWithMessages(events, 0);
        const bot = ev.posted(conv, 2, "bot", "beep");
        if (bot.kind.case === "messagePosted") bot.kind.value.messageKind = MessageKind.BOT;
        await commitAll(events, [bot, ev.deleted(conv, 3, "ann", 2)]);
        const got = await events.readEvent(conv, 2n);
        expect(got?.redacted).toBe(true);
        if (got?.kind.case === "messagePosted") {
          expect(got.kind.value.messageKind).toBe(MessageKind.BOT);
        } else {
          expect.fail("redacted message lost its kind");
        }
      });
    });

    describe("durability", () => {
      it("keeps committed events, keys and heads across a reopen", async () => {
        await open();
        const conv = await groupWithMessages(events, 5);
        const keyed = ev.posted(conv, 7, "ann", "keyed", { clientMsgId: "durable-key" });
        const direct = newConversationId();
        await commitAll(events, [keyed, ev.direct(direct, "ann", "ben")]);

        ({ events, metadata } = await handle!.reopen());

        expect(seqsOf(await events.readAfter(conv, 0n, 100))).toEqual(range(1, 7));
        expect(textOf(await events.readEvent(conv, 7n))).toBe("keyed");
        expect((await metadata.getConversation(conv))?.headSeq).toBe(7n);
        expect((await events.findByClientMsgId(conv, "ann", "durable-key"))?.eventId).toBe(
          keyed.eventId,
        );
        const verdicts = await events.commit([
          ev.posted(conv, 8, "ann", "retry", { clientMsgId: "durable-key" }),
          ev.direct(newConversationId(), "ben", "ann"),
          ev.posted(conv, 9, "ann", "hole"),
          ev.posted(conv, 8, "ben", "next"),
        ]);
        expect((verdicts[0] as DuplicateEventError).original.eventId).toBe(keyed.eventId);
        expect((verdicts[1] as ConversationExistsError).conversationId).toBe(direct);
        expect(verdicts[2]).toBeInstanceOf(SeqConflictError);
        expect(verdicts[3]).toBeUndefined();
        expect((await metadata.getConversation(conv))?.headSeq).toBe(8n);
      });
    });
  });
}
