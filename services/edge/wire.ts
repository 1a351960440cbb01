import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import {
  type SendRequest,
  type ServerFrame,
  type SessionRequest,
  SessionRequestSchema,
  SessionResponseSchema,
} from "../../gen/chat/v1/chat_service_pb.js";
import type { Event, MessageContent } from "../../gen/chat/v1/event_pb.js";
import type { SyncBatch } from "../../gen/chat/v1/model_pb.js";
import { eventBytes, hasUnknown } from "../../lib/event-bytes.js";

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
    (k.case !== "event" && hasUnknown(k.value))
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
  const evField = evBytes ? fieldSize(evBytes.length) : 0;
  // The case's own field: the event itself, or a SendResponse around it.
  const caseLen = k.case === "event" ? evBytes!.length : evField + (duplicate ? 2 : 0);
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
  if (evBytes) {
    at = putHeader(out, at, tagLen(ackEvent), evBytes.length);
    out.set(evBytes, at);
    at += evBytes.length;
  }
  if (duplicate) {
    out[at++] = (ackDuplicate << 3) | WireType.Varint;
    out[at] = 1;
  }
  return out;
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
}

// Field numbers of what clients send most: SessionRequest.frame_id and .send,
// SendRequest, MessageContent (chat/v1/chat_service.proto, event.proto).
const requestFrameId = 1;
const requestSend = 11;
const sendConversationId = 1;
const sendClientMsgId = 2;
const sendContent = 3;
const contentText = 1;
const contentReplyTo = 2;

/** Proto3 strings are UTF-8 checked, as fromBinary checks them: bad bytes throw. */
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });
/** Thrown inside the fast path for anything it does not lay out itself. */
const notPlain = Symbol("not a plain send");

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

/**
 * The fast path of decodeSessionRequest: the request if it is a plain send,
 * else undefined (another action, an attachment, an unknown or repeated
 * field, invalid UTF-8, or malformed bytes).
 */
export function decodePlainSend(bytes: Uint8Array): SessionRequest | undefined {
  buf = bytes;
  pos = 0;
  try {
    return plainSend();
  } catch (err) {
    if (err !== notPlain) throw err;
    return undefined;
  } finally {
    buf = empty;
  }
}

// The fast path's cursor: module state rather than an object per frame, since
// decoding is synchronous and never re-entered.
const empty = new Uint8Array(0);
let buf: Uint8Array = empty;
let pos = 0;

/** A varint of at most 32 bits (tags and lengths). */
function uint32(end: number): number {
  let v = 0;
  for (let shift = 0; shift < 35; shift += 7) {
    if (pos >= end) throw notPlain;
    const b = buf[pos++]!;
    v += (b & 0x7f) * 2 ** shift;
    if (b < 0x80) {
      if (v > 0xffffffff) throw notPlain;
      return v;
    }
  }
  throw notPlain;
}

/** A uint64 varint as a bigint. */
function uint64(end: number): bigint {
  let v = 0n;
  for (let shift = 0n; shift < 70n; shift += 7n) {
    if (pos >= end) throw notPlain;
    const b = buf[pos++]!;
    v |= BigInt(b & 0x7f) << shift;
    if (b < 0x80) {
      if (v > 0xffffffffffffffffn) throw notPlain;
      return v;
    }
  }
  throw notPlain;
}

/** Reads a length-delimited field's length; returns where its contents end. */
function delimited(end: number): number {
  const len = uint32(end);
  if (pos + len > end) throw notPlain;
  return pos + len;
}

function string(end: number): string {
  const stop = delimited(end);
  const start = pos;
  pos = stop;
  // Buffer's decoder is the fastest here but replaces bad bytes with U+FFFD,
  // so a string containing one is checked again strictly.
  const text = Buffer.isBuffer(buf)
    ? buf.toString("utf8", start, stop)
    : Buffer.from(buf.buffer, buf.byteOffset + start, stop - start).toString("utf8");
  if (text.includes("\ufffd")) {
    try {
      strictUtf8.decode(buf.subarray(start, stop));
    } catch {
      throw notPlain;
    }
  }
  return text;
}

/** The field number of a length-delimited field, once per message (`seen` has a bit per field). */
function lengthField(tag: number, seen: number): number {
  const no = tag >>> 3;
  if ((tag & 7) !== WireType.LengthDelimited || no > 30 || seen & (1 << no)) throw notPlain;
  return no;
}

function plainSend(): SessionRequest {
  const end = buf.length;
  let frameId = "";
  let sendEnd = -1;
  let seen = 0;
  while (pos < end) {
    const no = lengthField(uint32(end), seen);
    seen |= 1 << no;
    if (no === requestFrameId) frameId = string(end);
    else if (no === requestSend) {
      sendEnd = delimited(end);
      break;
    } else throw notPlain;
  }
  if (sendEnd < 0) throw notPlain;

  let conversationId = "";
  let clientMsgId = "";
  let contentEnd = -1;
  let contentStart = -1;
  seen = 0;
  while (pos < sendEnd) {
    const no = lengthField(uint32(sendEnd), seen);
    seen |= 1 << no;
    if (no === sendConversationId) conversationId = string(sendEnd);
    else if (no === sendClientMsgId) clientMsgId = string(sendEnd);
    else if (no === sendContent) {
      contentEnd = delimited(sendEnd);
      contentStart = pos;
      pos = contentEnd;
    } else throw notPlain;
  }

  let content: MessageContent | undefined;
  if (contentEnd >= 0) {
    pos = contentStart;
    let text = "";
    let replyToSeq = 0n;
    seen = 0;
    while (pos < contentEnd) {
      const tag = uint32(contentEnd);
      if (tag === ((contentReplyTo << 3) | WireType.Varint) && !(seen & (1 << contentReplyTo))) {
        seen |= 1 << contentReplyTo;
        replyToSeq = uint64(contentEnd);
      } else if (lengthField(tag, seen) === contentText) {
        seen |= 1 << contentText;
        text = string(contentEnd);
      } else throw notPlain;
    }
    pos = sendEnd;
    content = { $typeName: "chat.v1.MessageContent", text, replyToSeq, attachments: [] };
  }
  // The send is the last field: anything after it (a repeat, an unknown field) is fromBinary's.
  if (pos !== end) throw notPlain;
  const send: SendRequest = content
    ? { $typeName: "chat.v1.SendRequest", conversationId, clientMsgId, content }
    : { $typeName: "chat.v1.SendRequest", conversationId, clientMsgId };
  return { $typeName: "chat.v1.SessionRequest", frameId, action: { case: "send", value: send } };
}
