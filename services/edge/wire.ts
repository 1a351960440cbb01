import {
  create,
  type DescField,
  fromBinary,
  type Message,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import type { GenMessage } from "@bufbuild/protobuf/codegenv2";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import type {
  EncodedSyncBatch,
  ReadHistoryResponse,
} from "../../gen/chat/internal/v1/store_service_pb.js";
import {
  type GetHistoryResponse,
  GetHistoryResponseSchema,
  type SendRequest,
  SendRequestSchema,
  type SendResponse,
  SendResponseSchema,
  type ServerFrame,
  type SessionRequest,
  SessionRequestSchema,
  SessionResponseSchema,
} from "../../gen/chat/v1/chat_service_pb.js";
import type { Event, MessageContent } from "../../gen/chat/v1/event_pb.js";
import { type SyncBatch, SyncBatchSchema } from "../../gen/chat/v1/model_pb.js";
import {
  eventBytes,
  hasUnknown,
  readPlainContent,
  storedEventFields,
} from "../../lib/event-bytes.js";
import { notPlain, PlainReader } from "../../lib/plain-reader.js";

// Field numbers from chat/v1/chat_service.proto and model.proto.
const responseFrame = 1;
const frameReplyTo = 1;
const frameSendAck = 11;
const frameEvent = 12;
const frameSync = 16;
const ackEvent = 1;
const ackDuplicate = 2;
const syncConversationId = 1;
const syncEvents = 2;
const syncGap = 3;
const syncGapAfterSeq = 4;
const syncHeadSeq = 5;

const writeEvent = (w: BinaryWriter, fieldNo: number, event: Event) =>
  w.tag(fieldNo, WireType.LengthDelimited).bytes(eventBytes(event));

/**
 * Encodes a SessionResponse carrying `f`, byte for byte as toBinary would.
 * Frames that carry events (event, send-ack, sync) embed each event's cached
 * encoding (see eventBytes), so an event fanned out to many streams is
 * encoded once; other frames go through toBinary.
 */
export function encodeSessionResponse(f: ServerFrame): Uint8Array {
  const k = f.frame;
  if (
    hasUnknown(f) ||
    (k.case !== "event" && k.case !== "sendAck" && k.case !== "sync") ||
    (k.case === "sendAck" && hasUnknown(k.value))
  ) {
    return toBinary(SessionResponseSchema, create(SessionResponseSchema, { frame: f }));
  }
  if (k.case === "sync") {
    const w = new BinaryWriter();
    w.tag(responseFrame, WireType.LengthDelimited).fork();
    if (f.replyToFrameId !== "") {
      w.tag(frameReplyTo, WireType.LengthDelimited).string(f.replyToFrameId);
    }
    w.tag(frameSync, WireType.LengthDelimited).fork();
    writeSync(w, k.value);
    return w.join().join().finish();
  }
  // Event and send-ack frames, the per-message ones, are laid out by hand:
  // a BinaryWriter costs more than the copy of the event's bytes.
  const replyTo = f.replyToFrameId === "" ? undefined : utf8.encode(f.replyToFrameId);
  const ev = k.case === "event" ? k.value : k.value.event;
  const evBytes = ev ? eventBytes(ev) : undefined;
  const duplicate = k.case === "sendAck" && k.value.duplicate;
  // The case's own field: the event itself, or a SendResponse around it.
  const caseLen = k.case === "event" ? evBytes!.length : sendResponseSize(evBytes, duplicate);
  const frameLen = (replyTo ? fieldSize(replyTo.length) : 0) + fieldSize(caseLen);
  const out = new Uint8Array(fieldSize(frameLen));
  let at = putHeader(out, 0, tagLen(responseFrame), frameLen);
  if (replyTo) {
    at = putHeader(out, at, tagLen(frameReplyTo), replyTo.length);
    out.set(replyTo, at);
    at += replyTo.length;
  }
  if (k.case === "event") {
    at = putHeader(out, at, tagLen(frameEvent), caseLen);
    out.set(evBytes!, at);
    return out;
  }
  at = putHeader(out, at, tagLen(frameSendAck), caseLen);
  putSendResponse(out, at, evBytes, duplicate);
  return out;
}

/**
 * Encodes a SendResponse (a unary Send call's answer) byte for byte as
 * toBinary would, around the event's cached encoding (see eventBytes).
 */
export function encodeSendResponse(res: SendResponse): Uint8Array {
  if (hasUnknown(res)) return toBinary(SendResponseSchema, res);
  const evBytes = res.event ? eventBytes(res.event) : undefined;
  const out = new Uint8Array(sendResponseSize(evBytes, res.duplicate));
  putSendResponse(out, 0, evBytes, res.duplicate);
  return out;
}

/**
 * How a call frames its messages and ends: gRPC (status in HTTP trailers),
 * gRPC-Web (status in a last message), the Connect streaming protocol
 * (status in an end-stream message; JSON or binary messages) or Connect's
 * unary protocol (one bare message each way; an error is an HTTP status and
 * a JSON body).
 */
export type Dialect = "grpc" | "grpc-web" | "connect-proto" | "connect-json";

/** The dialect of each content type (without parameters) the edge serves. */
export const dialects: ReadonlyMap<string, Dialect> = new Map<string, Dialect>([
  ["application/grpc", "grpc"],
  ["application/grpc+proto", "grpc"],
  ["application/grpc-web", "grpc-web"],
  ["application/grpc-web+proto", "grpc-web"],
  ["application/connect+proto", "connect-proto"],
  ["application/connect+json", "connect-json"],
  ["application/proto", "connect-proto"],
  ["application/json", "connect-json"],
]);

/** Whether a call with this request content type is answered in binary protobuf. */
export function answersInBinary(contentType: string | null): boolean {
  if (!contentType) return false;
  const dialect = dialects.get(contentType.split(";", 1)[0]!.trim().toLowerCase());
  return dialect !== undefined && dialect !== "connect-json";
}

/**
 * A response message with `events` in its repeated `events` field. In a
 * binary response they ride as unknown fields holding each event's stored
 * encoding (see storedEventFields), so Connect's toBinary copies a page of
 * history instead of walking every event by reflection; clients decode the
 * same message either way. A JSON response (or any content type not known to
 * be binary) gets the events themselves.
 */
export function withEvents<
  Desc extends GenMessage<Message & { events: Event[] }> & { field: { events: DescField } },
>(
  schema: Desc,
  init: MessageInitShape<Desc>,
  events: Event[],
  binary: boolean,
): MessageShape<Desc> {
  const msg = create(schema, init);
  if (binary) msg.$unknown = storedEventFields(schema.field.events.number, events.map(eventBytes));
  else msg.events = events;
  return msg;
}

/**
 * The GetHistory answer to a page the store read with `encoded` set when the
 * answer is binary: its events go out as the store holds them, neither
 * decoded nor encoded on the way. A store that predates `encoded` (during a
 * rolling upgrade of a split deployment) answers with decoded events, which
 * are then written out as withEvents does.
 */
export function historyAnswer(res: ReadHistoryResponse, binary: boolean): GetHistoryResponse {
  const init = { hasMore: res.hasMore, headSeq: res.headSeq };
  if (!binary || res.encodedEvents.length === 0) {
    return withEvents(GetHistoryResponseSchema, init, res.events, binary);
  }
  const msg = create(GetHistoryResponseSchema, init);
  msg.$unknown = storedEventFields(GetHistoryResponseSchema.field.events.number, res.encodedEvents);
  return msg;
}

/**
 * A SyncBatch holding a batch the store read with `encoded`: its events ride
 * as unknown fields holding their stored bytes (see storedEventFields), so
 * binary writers copy them instead of decoding and encoding each. For binary
 * answers only: JSON has no unknown fields.
 */
export function storedSyncBatch(b: EncodedSyncBatch): SyncBatch {
  const batch = create(SyncBatchSchema, {
    conversationId: b.conversationId,
    gap: b.gap,
    gapAfterSeq: b.gapAfterSeq,
    headSeq: b.headSeq,
  });
  batch.$unknown = storedEventFields(SyncBatchSchema.field.events.number, b.events);
  return batch;
}

const utf8 = new TextEncoder();

/** A length-delimited field's tag byte (field numbers below 16). */
const tagLen = (fieldNo: number) => (fieldNo << 3) | WireType.LengthDelimited;

const varintSize = (n: number) => {
  let size = 1;
  while (n >= 0x80) {
    n >>>= 7;
    size++;
  }
  return size;
};

/** Bytes of a length-delimited field with a one-byte tag and `len` bytes of payload. */
const fieldSize = (len: number) => 1 + varintSize(len) + len;

/** Bytes of a SendResponse holding an event of these bytes (if any) and the duplicate flag. */
const sendResponseSize = (evBytes: Uint8Array | undefined, duplicate: boolean) =>
  (evBytes ? fieldSize(evBytes.length) : 0) + (duplicate ? 2 : 0);

/** Writes a SendResponse's fields at `at`: the event's bytes, then duplicate when set. */
function putSendResponse(
  out: Uint8Array,
  at: number,
  evBytes: Uint8Array | undefined,
  duplicate: boolean,
) {
  if (evBytes) {
    at = putHeader(out, at, tagLen(ackEvent), evBytes.length);
    out.set(evBytes, at);
    at += evBytes.length;
  }
  if (duplicate) {
    out[at++] = (ackDuplicate << 3) | WireType.Varint;
    out[at] = 1;
  }
}

/** Writes a one-byte tag and the payload's length; returns where the payload starts. */
function putHeader(out: Uint8Array, at: number, tag: number, len: number): number {
  out[at++] = tag;
  while (len >= 0x80) {
    out[at++] = (len & 0x7f) | 0x80;
    len >>>= 7;
  }
  out[at++] = len;
  return at;
}

function writeSync(w: BinaryWriter, b: SyncBatch) {
  if (b.conversationId !== "") {
    w.tag(syncConversationId, WireType.LengthDelimited).string(b.conversationId);
  }
  for (const ev of b.events) writeEvent(w, syncEvents, ev);
  if (b.gap) w.tag(syncGap, WireType.Varint).bool(true);
  if (b.gapAfterSeq !== 0n) w.tag(syncGapAfterSeq, WireType.Varint).uint64(b.gapAfterSeq);
  if (b.headSeq !== 0n) w.tag(syncHeadSeq, WireType.Varint).uint64(b.headSeq);
  // Written last and verbatim, as toBinary does: stored events (see storedSyncBatch) among them.
  if (b.$unknown) for (const u of b.$unknown) w.tag(u.no, u.wireType).raw(u.data);
}

// Field numbers of what clients send most: SessionRequest.frame_id and .send,
// and SendRequest (chat/v1/chat_service.proto).
const requestFrameId = 1;
const requestSend = 11;
const sendConversationId = 1;
const sendClientMsgId = 2;
const sendContent = 3;

/**
 * Decodes a client's SessionRequest exactly as fromBinary does. A send of a
 * text message (frame id, conversation, client_msg_id, text, reply-to), the
 * frame clients send most, is read field by field into the same objects
 * (fromBinary's reflection costs several µs a frame); anything else goes to
 * fromBinary, which also throws the error for bad input.
 */
export function decodeSessionRequest(bytes: Uint8Array): SessionRequest {
  return decodePlainSend(bytes) ?? fromBinary(SessionRequestSchema, bytes);
}

const r = new PlainReader();

/**
 * The fast path of decodeSessionRequest: the request if it is a plain send,
 * else undefined (another action, an attachment, an unknown or repeated
 * field, invalid UTF-8, or malformed bytes).
 */
export function decodePlainSend(bytes: Uint8Array): SessionRequest | undefined {
  return r.attempt(bytes, plainSend);
}

function plainSend(): SessionRequest {
  const end = r.buf.length;
  let frameId = "";
  let sendEnd = -1;
  let seen = 0;
  while (r.pos < end) {
    const no = r.field(r.uint32(end), WireType.LengthDelimited, seen);
    seen |= 1 << no;
    if (no === requestFrameId) frameId = r.string(end);
    else if (no === requestSend) {
      sendEnd = r.delimited(end);
      break;
    } else throw notPlain;
  }
  if (sendEnd < 0) throw notPlain;
  const send = readPlainSend(sendEnd);
  // The send is the last field: anything after it (a repeat, an unknown field) is fromBinary's.
  if (r.pos !== end) throw notPlain;
  return { $typeName: "chat.v1.SessionRequest", frameId, action: { case: "send", value: send } };
}

/**
 * Decodes a unary Send call's request exactly as fromBinary does: a plain
 * send read field by field as in decodeSessionRequest, anything else (and bad
 * input, with its error) by fromBinary.
 */
export function decodeSendRequest(bytes: Uint8Array): SendRequest {
  return decodePlainSendRequest(bytes) ?? fromBinary(SendRequestSchema, bytes);
}

/** The fast path of decodeSendRequest: the request if it is a plain send, else undefined. */
export function decodePlainSendRequest(bytes: Uint8Array): SendRequest | undefined {
  return r.attempt(bytes, plainSendRequest);
}

function plainSendRequest(): SendRequest {
  return readPlainSend(r.buf.length);
}

/** A SendRequest's fields from the reader's position up to `sendEnd`, where it leaves the reader. */
function readPlainSend(sendEnd: number): SendRequest {
  let conversationId = "";
  let clientMsgId = "";
  let contentEnd = -1;
  let contentStart = -1;
  let seen = 0;
  while (r.pos < sendEnd) {
    const no = r.field(r.uint32(sendEnd), WireType.LengthDelimited, seen);
    seen |= 1 << no;
    if (no === sendConversationId) conversationId = r.string(sendEnd);
    else if (no === sendClientMsgId) clientMsgId = r.string(sendEnd);
    else if (no === sendContent) {
      contentEnd = r.delimited(sendEnd);
      contentStart = r.pos;
      r.pos = contentEnd;
    } else throw notPlain;
  }

  let content: MessageContent | undefined;
  if (contentEnd >= 0) {
    r.pos = contentStart;
    content = readPlainContent(r, contentEnd);
    r.pos = sendEnd;
  }
  return content
    ? { $typeName: "chat.v1.SendRequest", conversationId, clientMsgId, content }
    : { $typeName: "chat.v1.SendRequest", conversationId, clientMsgId };
}
