import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import {
  type EncodedSyncBatch,
  EncodedSyncBatchSchema,
  ReadHistoryResponseSchema,
} from "../../gen/chat/internal/v1/store_service_pb.js";
import {
  GetHistoryResponseSchema,
  SendRequestSchema,
  SendResponseSchema,
  ServerFrameSchema,
  type SessionRequest,
  SessionRequestSchema,
  SessionResponseSchema,
} from "../../gen/chat/v1/chat_service_pb.js";
import { type Event, EventSchema } from "../../gen/chat/v1/event_pb.js";
import { SyncBatchSchema } from "../../gen/chat/v1/model_pb.js";
import { decodeEvent, eventBytes } from "../../lib/event-bytes.js";
import {
  answersInBinary,
  decodePlainSend,
  decodePlainSendRequest,
  decodeSendRequest,
  decodeSessionRequest,
  encodeSendResponse,
  encodeSessionResponse,
  historyAnswer,
  storedSyncBatch,
  withEvents,
} from "../../services/edge/wire.js";
import { expectLeavesRestToFromBinary, expectReadsPlain, rng } from "../helpers/fast-decode.js";

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

/** A batch as the session builds it from a store read with `encoded`. */
const stored = (events: Event[], more: Partial<EncodedSyncBatch> = {}) =>
  storedSyncBatch(
    create(EncodedSyncBatchSchema, {
      conversationId: "c_1",
      events: events.map((e) => toBinary(EventSchema, e)),
      gap: true,
      gapAfterSeq: 2n,
      headSeq: 9n,
      ...more,
    }),
  );

const unreachable = (): never => {
  throw new Error("unreachable");
};

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
    // Events as stored, behind the known fields, and a field this build does not know.
    create(ServerFrameSchema, { frame: { case: "sync", value: stored([ev(5n), ev(6n, "é")]) } }),
    create(ServerFrameSchema, {
      frame: {
        case: "sync",
        value: fromBinary(SyncBatchSchema, new Uint8Array([0x0a, 0x01, 0x63, 0x38, 0x07])),
      },
      replyToFrameId: "f_4",
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

describe("encodeSendResponse", () => {
  it("writes exactly what toBinary writes, with or without an event, duplicate or not", () => {
    for (const res of [
      create(SendResponseSchema, { event: ev(8n), duplicate: false }),
      create(SendResponseSchema, { event: ev(9n, "é".repeat(20_000)), duplicate: true }),
      create(SendResponseSchema, { duplicate: true }),
      create(SendResponseSchema),
    ]) {
      expect(encodeSendResponse(res)).toEqual(toBinary(SendResponseSchema, res));
    }
  });

  it("keeps unknown fields, as toBinary does", () => {
    const res = fromBinary(
      SendResponseSchema,
      new Uint8Array([...toBinary(SendResponseSchema, create(SendResponseSchema)), 0x18, 0x01]),
    );
    expect(encodeSendResponse(res)).toEqual(new Uint8Array([0x18, 0x01]));
  });
});

describe("withEvents", () => {
  it("tells binary content types of every protocol from JSON and unknown ones", () => {
    for (const t of [
      "application/proto",
      "application/connect+proto",
      "application/grpc",
      "application/grpc+proto",
      "application/grpc-web",
      "Application/GRPC-Web+Proto; charset=utf-8",
    ]) {
      expect(answersInBinary(t), t).toBe(true);
    }
    for (const t of [
      null,
      "",
      "application/json",
      "application/connect+json",
      "application/grpc+json",
      "application/grpc-web+json",
      "application/grpc-web-text",
      "text/plain",
    ]) {
      expect(answersInBinary(t), String(t)).toBe(false);
    }
  });

  it("carries stored bytes in a binary response and the events themselves in any other", () => {
    const events = [ev(3n), ev(4n, "x".repeat(300))];
    const init = { hasMore: true, headSeq: 4n };
    const binary = withEvents(GetHistoryResponseSchema, init, events, true);
    expect(binary.events).toEqual([]);
    expect(binary.$unknown).toHaveLength(2);
    const decoded = fromBinary(
      GetHistoryResponseSchema,
      toBinary(GetHistoryResponseSchema, binary),
    );
    expect(decoded).toStrictEqual(
      fromBinary(
        GetHistoryResponseSchema,
        toBinary(GetHistoryResponseSchema, create(GetHistoryResponseSchema, { ...init, events })),
      ),
    );
    const json = withEvents(GetHistoryResponseSchema, init, events, false);
    expect(json.events).toBe(events);
    expect(json.$unknown).toBeUndefined();
    const batch = withEvents(SyncBatchSchema, { conversationId: "c_1", headSeq: 4n }, events, true);
    expect(fromBinary(SyncBatchSchema, toBinary(SyncBatchSchema, batch)).events).toStrictEqual(
      decoded.events,
    );
  });
});

describe("storedSyncBatch", () => {
  it("is read by clients as the batch with its events, in order", () => {
    const events = [ev(3n), ev(4n, "x".repeat(300)), ev(5n, "")];
    const batch = stored(events);
    expect(batch.events).toEqual([]);
    const reference = create(SyncBatchSchema, {
      conversationId: "c_1",
      events,
      gap: true,
      gapAfterSeq: 2n,
      headSeq: 9n,
    });
    expect(fromBinary(SyncBatchSchema, toBinary(SyncBatchSchema, batch))).toStrictEqual(
      fromBinary(SyncBatchSchema, toBinary(SyncBatchSchema, reference)),
    );
    const frame = create(ServerFrameSchema, { frame: { case: "sync", value: batch } });
    expect(fromBinary(SessionResponseSchema, encodeSessionResponse(frame)).frame).toStrictEqual(
      create(ServerFrameSchema, { frame: { case: "sync", value: reference } }),
    );
  });

  it("holds an empty batch as one without events", () => {
    const batch = stored([], { gap: false, gapAfterSeq: 0n });
    expect(batch.$unknown).toEqual([]);
    expect(toBinary(SyncBatchSchema, batch)).toEqual(
      toBinary(SyncBatchSchema, create(SyncBatchSchema, { conversationId: "c_1", headSeq: 9n })),
    );
  });
});

describe("historyAnswer", () => {
  const events = [ev(5n), ev(6n, "é".repeat(200)), ev(7n)];
  const reference = create(GetHistoryResponseSchema, { events, hasMore: true, headSeq: 9n });
  const asClientReads = (msg: typeof reference) =>
    fromBinary(GetHistoryResponseSchema, toBinary(GetHistoryResponseSchema, msg));

  it("writes a page read as stored into a binary answer as it is", () => {
    const res = create(ReadHistoryResponseSchema, {
      encodedEvents: events.map((e) => toBinary(EventSchema, e)),
      hasMore: true,
      headSeq: 9n,
    });
    const answer = historyAnswer(res, true);
    expect(answer.events).toEqual([]);
    expect(answer.$unknown).toHaveLength(3);
    expect(asClientReads(answer)).toStrictEqual(asClientReads(reference));
  });

  it("answers from decoded events for JSON and for a store that predates encoded reads", () => {
    const res = create(ReadHistoryResponseSchema, { events, hasMore: true, headSeq: 9n });
    expect(asClientReads(historyAnswer(res, true))).toStrictEqual(asClientReads(reference));
    const json = historyAnswer(res, false);
    expect(json.events).toBe(res.events);
    expect(json.$unknown).toBeUndefined();
  });

  it("answers an empty page either way", () => {
    const res = create(ReadHistoryResponseSchema, { hasMore: false, headSeq: 1n });
    for (const binary of [true, false]) {
      const answer = asClientReads(historyAnswer(res, binary));
      expect(answer.events).toEqual([]);
      expect(answer.headSeq).toBe(1n);
    }
  });
});

describe("decodeSessionRequest", () => {
  const pieces = [
    "",
    "a",
    "c_01HZX",
    "m-1:2.3",
    "✓",
    "é",
    "😀",
    "\ufffd",
    "\u0000",
    "x".repeat(300),
  ];
  const sends = (seed: number, n: number): SessionRequest[] => {
    const r = rng(seed);
    const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)]!;
    const str = () => Array.from({ length: Math.floor(r() * 3) }, () => pick(pieces)).join("");
    return Array.from({ length: n }, () =>
      create(SessionRequestSchema, {
        frameId: str(),
        action: {
          case: "send",
          value: {
            conversationId: str(),
            clientMsgId: str(),
            ...(r() < 0.9
              ? {
                  content: {
                    text: r() < 0.02 ? "z".repeat(70_000) : str(),
                    replyToSeq: pick([
                      0n,
                      1n,
                      127n,
                      128n,
                      2n ** 32n + 5n,
                      2n ** 53n + 1n,
                      2n ** 64n - 1n,
                    ]),
                  },
                }
              : {}),
          },
        },
      }),
    );
  };
  it("reads a plain send itself, into exactly what fromBinary returns, from a Buffer or a Uint8Array", () => {
    const plain = sends(7, 3000).map((req) => toBinary(SessionRequestSchema, req));
    expectReadsPlain(SessionRequestSchema, decodePlainSend, plain);
  });

  it("leaves everything else to fromBinary, with the same result or the same error", () => {
    const others = [
      create(SessionRequestSchema, { action: { case: "subscribe", value: { cursors: [] } } }),
      create(SessionRequestSchema, { frameId: "f", action: { case: "heartbeat", value: {} } }),
      create(SessionRequestSchema, { frameId: "only a frame id" }),
      create(SessionRequestSchema, {
        action: {
          case: "send",
          value: {
            conversationId: "c",
            clientMsgId: "m",
            content: { text: "see", attachments: [{ mediaRef: "s3://x", sizeBytes: 5n }] },
          },
        },
      }),
    ];
    expectLeavesRestToFromBinary({
      schema: SessionRequestSchema,
      decode: decodeSessionRequest,
      fast: decodePlainSend,
      plain: sends(13, 400).map((req) => toBinary(SessionRequestSchema, req)),
      others: others.map((req) => toBinary(SessionRequestSchema, req)),
      seed: 11,
    });
  });

  // A unary Send call's request is a send frame's SendRequest on its own.
  const sendRequests = (seed: number, n: number) =>
    sends(seed, n).map((req) =>
      toBinary(SendRequestSchema, req.action.case === "send" ? req.action.value : unreachable()),
    );

  it("reads a unary Send's plain request itself, into exactly what fromBinary returns", () => {
    expectReadsPlain(SendRequestSchema, decodePlainSendRequest, sendRequests(17, 3000));
  });

  it("leaves a unary Send's other requests to fromBinary, with the same result or the same error", () => {
    const withAttachment = toBinary(
      SendRequestSchema,
      create(SendRequestSchema, {
        conversationId: "c",
        clientMsgId: "m",
        content: { text: "see", attachments: [{ mediaRef: "s3://x", sizeBytes: 5n }] },
      }),
    );
    // A session frame's send field (11) is unknown to a SendRequest.
    const sessionFrame = toBinary(SessionRequestSchema, sends(29, 1)[0]!);
    expectLeavesRestToFromBinary({
      schema: SendRequestSchema,
      decode: decodeSendRequest,
      fast: decodePlainSendRequest,
      plain: sendRequests(19, 400),
      others: [withAttachment, sessionFrame],
      seed: 23,
    });
  });
});
