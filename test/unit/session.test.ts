import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import {
  ReadHistoryResponseSchema,
  type ReadSyncRequest,
  ReadSyncRequestSchema,
  ReadSyncResponseSchema,
} from "../../gen/chat/internal/v1/store_service_pb.js";
import {
  type SendResponse,
  SendResponseSchema,
  type ServerFrame,
  ServerFrameSchema,
  SessionResponseSchema,
} from "../../gen/chat/v1/chat_service_pb.js";
import { type Event, EventSchema } from "../../gen/chat/v1/event_pb.js";
import { type SyncBatch, SyncBatchSchema } from "../../gen/chat/v1/model_pb.js";
import { createRootLogger } from "../../lib/logger.js";
import { Session } from "../../services/edge/session.js";
import { encodeSessionResponse } from "../../services/edge/wire.js";
import type { StoreClient } from "../../services/router/store-client.js";

const caller = { userId: "ann", deviceId: "ann-phone", tokenExpiresAtMs: Date.now() + 60_000 };

/** A session that never needs the store (no subscribe, no gaps), unless one is given. */
function session(store?: Partial<StoreClient>, binary = true) {
  const none = new Proxy({}, { get: () => () => Promise.reject(new Error("no store here")) });
  return new Session(
    caller,
    "session",
    {
      store: (store ?? none) as StoreClient,
      outboxMaxFrames: 64,
      gapWaitMs: 50,
      syncLimit: 100,
      baselineWindowMs: 0,
      log: createRootLogger("silent"),
    },
    binary,
  );
}

const posted = (seq: bigint, clientMsgId: string): Event =>
  create(EventSchema, {
    conversationId: "c_1",
    seq,
    eventId: `e${seq}`,
    actorUserId: "ann",
    actorDeviceId: "ann-phone",
    clientMsgId,
    kind: { case: "messagePosted", value: { content: { text: "x" } } },
  });

/** Frames queued so far (the stream is closed gracefully to end iteration). */
async function drain(s: Session): Promise<ServerFrame[]> {
  s.close();
  const out: ServerFrame[] = [];
  for await (const f of s.frames()) out.push(f);
  return out;
}

describe("session send acks", () => {
  it("acks a durable send through its returning event, once", async () => {
    const s = session();
    const ev = posted(2n, "m1");
    s.sendStarted("c_1", "m1", "f1");
    s.offer(ev);
    s.sendFinished("c_1", "m1", "f1", create(SendResponseSchema, { event: ev }));
    s.ackOverdue(Date.now() + 10_000);
    const frames = await drain(s);
    expect(frames.map((f) => [f.frame.case, f.replyToFrameId])).toEqual([["sendAck", "f1"]]);
  });

  it("builds ack frames with every field set, as decoding them does", async () => {
    const s = session();
    s.sendStarted("c_1", "m1", "f1");
    s.offer(posted(2n, "m1"));
    s.sendStarted("c_1", "m0", "f0");
    s.sendFinished("c_1", "m0", "f0", create(SendResponseSchema, { duplicate: true }));
    const frames = await drain(s);
    expect(frames.map((f) => [f.frame.case, f.replyToFrameId])).toEqual([
      ["sendAck", "f1"],
      ["sendAck", "f0"],
    ]);
    // Frames on the send path are object literals (no create()): a field left
    // out would be missing here and present in the decoded copy.
    for (const f of frames) {
      expect(f).toStrictEqual(fromBinary(ServerFrameSchema, toBinary(ServerFrameSchema, f)));
    }
  });

  it("acks directly once due when fan-out never brings the event back", async () => {
    const s = session();
    const ev = posted(2n, "m1");
    s.sendStarted("c_1", "m1", "f1");
    s.sendFinished("c_1", "m1", "f1", create(SendResponseSchema, { event: ev }));
    s.ackOverdue(Date.now());
    s.ackOverdue(Date.now() + 10_000);
    s.ackOverdue(Date.now() + 20_000);
    const frames = await drain(s);
    expect(frames).toHaveLength(1);
    expect(frames[0]!.replyToFrameId).toBe("f1");
    expect(frames[0]!.frame.case === "sendAck" && frames[0]!.frame.value.event?.eventId).toBe("e2");
  });

  it("acks a duplicate at once and forgets a failed send", async () => {
    const s = session();
    const ev = posted(2n, "m1");
    s.sendStarted("c_1", "m1", "f1");
    s.sendFinished("c_1", "m1", "f1", create(SendResponseSchema, { event: ev, duplicate: true }));
    s.sendStarted("c_1", "m2", "f2");
    s.sendFailed("c_1", "m2", "f2");
    s.ackOverdue(Date.now() + 10_000);
    // The failed send's event can no longer turn into an ack.
    s.offer(posted(3n, "m2"));
    const frames = await drain(s);
    expect(frames.map((f) => [f.frame.case, f.replyToFrameId])).toEqual([["sendAck", "f1"]]);
  });
});

describe("session sync", () => {
  const missed = [posted(2n, "m0"), posted(3n, "m1"), posted(4n, "m2")];
  const batch = { conversationId: "c_1", gap: false, gapAfterSeq: 1n, headSeq: 4n };
  /** A store that answers one ReadSync with the missed events, in the form asked for. */
  const store = (asked: ReadSyncRequest[]): Partial<StoreClient> => ({
    readSync: async (init) => {
      const req = create(ReadSyncRequestSchema, init);
      asked.push(req);
      return req.encoded
        ? create(ReadSyncResponseSchema, {
            encodedBatches: [{ ...batch, events: missed.map((e) => toBinary(EventSchema, e)) }],
          })
        : create(ReadSyncResponseSchema, { batches: [{ ...batch, events: missed }] });
    },
  });

  it.each([
    ["binary", true],
    ["JSON", false],
  ])(
    "sends what was missed to a %s stream as its writer can carry it, and acks a send among it",
    async (_name, binary) => {
      const asked: ReadSyncRequest[] = [];
      const s = session(store(asked), binary);
      s.sendStarted("c_1", "m1", "f1");
      await s.subscribe([]);
      const frames = await drain(s);
      expect(asked.map((r) => r.encoded)).toEqual([binary]);
      expect(frames.map((f) => [f.frame.case, f.replyToFrameId])).toEqual([
        ["sync", ""],
        ["sendAck", "f1"],
        ["syncComplete", ""],
      ]);
      const sync = frames[0]!.frame.value as SyncBatch;
      // A JSON writer drops unknown fields: only a binary stream gets the stored bytes.
      expect(sync.events.length).toBe(binary ? 0 : 3);
      const asRead = fromBinary(SessionResponseSchema, encodeSessionResponse(frames[0]!));
      expect(asRead.frame?.frame.value).toStrictEqual(
        create(SyncBatchSchema, { ...batch, events: missed }),
      );
      const ack = frames[1]!.frame.value as SendResponse;
      expect(ack.event).toStrictEqual(missed[1]);
    },
  );
});

describe("session gaps", () => {
  it("reads a gap again when the store could not answer, and delivers in order once it can", async () => {
    let reads = 0;
    const s = session({
      readSync: async () => create(ReadSyncResponseSchema, {}),
      readHistory: async () => {
        reads++;
        // Away for the first two reads, as a store node that is restarting.
        if (reads <= 2) throw new ConnectError("store is away", Code.Unavailable);
        return create(ReadHistoryResponseSchema, { events: [posted(2n, "m2")], headSeq: 3n });
      },
    });
    await s.subscribe([
      { $typeName: "chat.v1.ConversationCursor", conversationId: "c_1", seq: 1n },
    ]);
    // Seq 2 was committed but its fan-out never came: seq 3 waits behind the gap.
    s.offer(posted(3n, "m3"));
    await expect.poll(() => reads, { timeout: 5000 }).toBe(3);
    const frames = await drain(s);
    const events = frames.filter((f) => f.frame.case === "event");
    expect(events.map((f) => (f.frame.value as Event).seq)).toEqual([2n, 3n]);
  });
});
