import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { ServerFrameSchema, SessionResponseSchema } from "../../gen/chat/v1/chat_service_pb.js";
import { type Event, EventSchema } from "../../gen/chat/v1/event_pb.js";
import { SyncBatchSchema } from "../../gen/chat/v1/model_pb.js";
import { decodeEvent, eventBytes } from "../../lib/event-bytes.js";
import { encodeSessionResponse } from "../../services/edge/wire.js";

const ev = (seq: bigint, text = "hi ✓"): Event =>
  create(EventSchema, {
    conversationId: "c_1",
    seq,
    eventId: `e_${seq}`,
    actorUserId: "u_a",
    actorDeviceId: "d_a",
    clientMsgId: `m_${seq}`,
    createdAt: timestampFromMs(1_700_000_000_123),
    kind: { case: "messagePosted", value: { content: { text, replyToSeq: 2n } } },
  });

const viaToBinary = (f: ReturnType<typeof create<typeof ServerFrameSchema>>) =>
  toBinary(SessionResponseSchema, create(SessionResponseSchema, { frame: f }));

describe("encodeSessionResponse", () => {
  const frames = [
    create(ServerFrameSchema, { frame: { case: "event", value: ev(7n) } }),
    create(ServerFrameSchema, {
      frame: { case: "sendAck", value: { event: ev(8n), duplicate: false } },
      replyToFrameId: "f_1",
    }),
    create(ServerFrameSchema, {
      frame: { case: "sendAck", value: { event: ev(9n), duplicate: true } },
      replyToFrameId: "f_2",
    }),
    create(ServerFrameSchema, { frame: { case: "sendAck", value: { duplicate: false } } }),
    // Lengths of two and three varint bytes.
    create(ServerFrameSchema, { frame: { case: "event", value: ev(10n, "x".repeat(300)) } }),
    create(ServerFrameSchema, {
      frame: { case: "sendAck", value: { event: ev(11n, "é".repeat(20_000)), duplicate: true } },
      replyToFrameId: "f".repeat(200),
    }),
    create(ServerFrameSchema, {
      frame: {
        case: "sync",
        value: create(SyncBatchSchema, {
          conversationId: "c_1",
          events: [ev(3n), ev(4n, "")],
          gap: true,
          gapAfterSeq: 1n,
          headSeq: 4n,
        }),
      },
    }),
    create(ServerFrameSchema, {
      frame: { case: "sync", value: create(SyncBatchSchema, { conversationId: "c_2" }) },
    }),
    create(ServerFrameSchema, { frame: { case: "accepted", value: {} }, replyToFrameId: "f_3" }),
    create(ServerFrameSchema, { frame: { case: "error", value: { code: 3, message: "bad" } } }),
  ];

  it("writes exactly what toBinary writes", () => {
    for (const f of frames) expect(encodeSessionResponse(f)).toEqual(viaToBinary(f));
  });

  it("reuses the bytes a decoded event came from", () => {
    const bytes = toBinary(EventSchema, ev(5n));
    const decoded = decodeEvent(bytes);
    expect(eventBytes(decoded)).toBe(bytes);
    const f = create(ServerFrameSchema, { frame: { case: "event", value: decoded } });
    const back = fromBinary(SessionResponseSchema, encodeSessionResponse(f));
    expect(back.frame?.frame.value).toEqual(ev(5n));
  });
});
