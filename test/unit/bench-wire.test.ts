import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import {
  decodeFrame,
  decodeSendResponse,
  encodeSend,
  encodeSendRequest,
} from "../../bench/clients/ours-wire.js";
import {
  SendRequestSchema,
  SendResponseSchema,
  ServerFrameSchema,
  SessionRequestSchema,
  SessionResponseSchema,
} from "../../gen/chat/v1/chat_service_pb.js";
import { type Event, EventSchema } from "../../gen/chat/v1/event_pb.js";

const posted = (seq: bigint, text: string): Event =>
  create(EventSchema, {
    conversationId: "c_01kbmabcdefghjkmnpqrstvwxy",
    seq,
    eventId: `e_${seq}`,
    actorUserId: "u_a",
    actorDeviceId: "d_a",
    clientMsgId: `m_${seq}`,
    createdAt: timestampFromMs(1_700_000_000_123),
    redacted: false,
    kind: {
      case: "messagePosted",
      value: {
        content: { text, replyToSeq: 2n, attachments: [{ mediaRef: "m/1", sizeBytes: 9n }] },
      },
    },
  });

const bytesOf = (
  frame: NonNullable<MessageInitShape<typeof ServerFrameSchema>["frame"]>,
  replyToFrameId = "",
) =>
  toBinary(
    SessionResponseSchema,
    create(SessionResponseSchema, { frame: create(ServerFrameSchema, { frame, replyToFrameId }) }),
  );

describe("bench client codec", () => {
  it("encodes a send exactly as protobuf-es reads it", () => {
    const text = `s3:17:${"é".repeat(100)}`;
    const req = fromBinary(SessionRequestSchema, encodeSend("c_1", "m_9", text));
    expect(req.action.case).toBe("send");
    if (req.action.case !== "send") return;
    expect(req.action.value.conversationId).toBe("c_1");
    expect(req.action.value.clientMsgId).toBe("m_9");
    expect(req.action.value.content?.text).toBe(text);
  });

  it("encodes a unary Send call's body and reads its answer as protobuf-es does", () => {
    const req = fromBinary(SendRequestSchema, encodeSendRequest("c_1", "m_9", "hé"));
    expect([req.conversationId, req.clientMsgId, req.content?.text]).toEqual(["c_1", "m_9", "hé"]);
    const answer = toBinary(
      SendResponseSchema,
      create(SendResponseSchema, { event: posted(9n, "hé"), duplicate: false }),
    );
    expect(decodeSendResponse(answer)).toEqual({
      case: "sendAck",
      event: { conversationId: "c_01kbmabcdefghjkmnpqrstvwxy", seq: 9, actor: "u_a", text: "hé" },
      duplicate: false,
    });
  });

  it("reads events, acks, sync batches, completion and errors", () => {
    const long = "x".repeat(300);
    expect(decodeFrame(bytesOf({ case: "event", value: posted(300n, long) }))).toEqual({
      case: "event",
      event: { conversationId: "c_01kbmabcdefghjkmnpqrstvwxy", seq: 300, actor: "u_a", text: long },
    });
    expect(
      decodeFrame(
        bytesOf({ case: "sendAck", value: { event: posted(7n, "hi"), duplicate: true } }, "f_1"),
      ),
    ).toEqual({
      case: "sendAck",
      event: { conversationId: "c_01kbmabcdefghjkmnpqrstvwxy", seq: 7, actor: "u_a", text: "hi" },
      duplicate: true,
    });
    const renamed = create(EventSchema, {
      conversationId: "c_2",
      seq: 4n,
      kind: { case: "conversationRenamed", value: { title: "t" } },
    });
    expect(
      decodeFrame(
        bytesOf({
          case: "sync",
          value: { conversationId: "c_2", events: [renamed, posted(5n, "a")], headSeq: 5n },
        }),
      ),
    ).toEqual({
      case: "sync",
      events: [
        { conversationId: "c_2", seq: 4, actor: "", text: "" },
        { conversationId: "c_01kbmabcdefghjkmnpqrstvwxy", seq: 5, actor: "u_a", text: "a" },
      ],
    });
    expect(decodeFrame(bytesOf({ case: "syncComplete", value: {} }))).toEqual({
      case: "syncComplete",
    });
    expect(
      decodeFrame(bytesOf({ case: "error", value: { code: 8, message: "slow down" } })),
    ).toEqual({ case: "error", code: 8, message: "slow down" });
    expect(decodeFrame(bytesOf({ case: "heartbeat", value: {} }))).toEqual({ case: "other" });
  });

  it("refuses truncated input instead of reading past it", () => {
    const bytes = bytesOf({ case: "event", value: posted(1n, "hello") });
    expect(() => decodeFrame(bytes.subarray(0, bytes.length - 3))).toThrow(/truncated/);
  });
});
