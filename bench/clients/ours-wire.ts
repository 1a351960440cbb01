/**
 * The bench client's protobuf codec for the few frames it sends and reads.
 * A load generator that decodes every frame with the full reflection-based
 * runtime spends more CPU per message than the server it measures (on two
 * shared cores that caps the server), so this reads only what the bench
 * needs and skips the rest by wire type. test/unit/bench-wire.test.ts checks
 * it against toBinary/fromBinary.
 */

/** What the bench needs of an event. */
export interface LeanEvent {
  conversationId: string;
  seq: number;
  /** Who caused it; a client that sends with unary calls gets its own events on its stream. */
  actor: string;
  /** The text of a posted message; "" for other events. */
  text: string;
}

export type LeanFrame =
  | { case: "event"; event: LeanEvent }
  | { case: "sendAck"; event: LeanEvent | undefined; duplicate: boolean }
  | { case: "sync"; events: LeanEvent[] }
  | { case: "syncComplete" }
  | { case: "error"; code: number; message: string }
  | { case: "other" };

// Field numbers from proto/chat/v1 (chat_service.proto, event.proto, model.proto).
const F = {
  responseFrame: 1,
  frameSendAck: 11,
  frameEvent: 12,
  frameSync: 16,
  frameSyncComplete: 17,
  frameError: 18,
  ackEvent: 1,
  ackDuplicate: 2,
  syncEvents: 2,
  eventConversationId: 1,
  eventSeq: 2,
  eventActor: 4,
  eventMessagePosted: 11,
  postedContent: 1,
  contentText: 1,
  errorCode: 1,
  errorMessage: 2,
  requestSend: 11,
  sendConversationId: 1,
  sendClientMsgId: 2,
  sendContent: 3,
} as const;

const VARINT = 0;
const I64 = 1;
const LEN = 2;
const I32 = 5;

const utf8 = new TextDecoder();
const utf8Out = new TextEncoder();

class Reader {
  pos: number;
  constructor(
    readonly buf: Uint8Array,
    start = 0,
    readonly end = buf.length,
  ) {
    this.pos = start;
  }
  get done() {
    return this.pos >= this.end;
  }
  varint(): number {
    let result = 0;
    let mul = 1;
    for (;;) {
      if (this.pos >= this.end) throw new Error("truncated varint");
      const b = this.buf[this.pos++]!;
      result += (b & 0x7f) * mul;
      if (b < 0x80) return result;
      mul *= 128;
    }
  }
  /** A length-delimited field's [start, end). */
  span(): [number, number] {
    const len = this.varint();
    const start = this.pos;
    this.pos += len;
    if (this.pos > this.end) throw new Error("truncated field");
    return [start, this.pos];
  }
  string(): string {
    const [s, e] = this.span();
    return utf8.decode(this.buf.subarray(s, e));
  }
  skip(wireType: number) {
    if (wireType === VARINT) this.varint();
    else if (wireType === I64) this.pos += 8;
    else if (wireType === LEN) this.span();
    else if (wireType === I32) this.pos += 4;
    else throw new Error(`unsupported wire type ${wireType}`);
  }
}

function readText(buf: Uint8Array, start: number, end: number, path: number[]): string {
  const r = new Reader(buf, start, end);
  const [field, ...rest] = path;
  let text = "";
  while (!r.done) {
    const tag = r.varint();
    if (tag >>> 3 === field && (tag & 7) === LEN) {
      if (rest.length === 0) text = r.string();
      else {
        const [s, e] = r.span();
        text = readText(buf, s, e, rest);
      }
    } else r.skip(tag & 7);
  }
  return text;
}

function readEvent(buf: Uint8Array, start: number, end: number): LeanEvent {
  const r = new Reader(buf, start, end);
  const ev: LeanEvent = { conversationId: "", seq: 0, actor: "", text: "" };
  while (!r.done) {
    const tag = r.varint();
    const field = tag >>> 3;
    if (field === F.eventConversationId && (tag & 7) === LEN) ev.conversationId = r.string();
    else if (field === F.eventSeq && (tag & 7) === VARINT) ev.seq = r.varint();
    else if (field === F.eventActor && (tag & 7) === LEN) ev.actor = r.string();
    else if (field === F.eventMessagePosted && (tag & 7) === LEN) {
      const [s, e] = r.span();
      ev.text = readText(buf, s, e, [F.postedContent, F.contentText]);
    } else r.skip(tag & 7);
  }
  return ev;
}

/** Reads a SessionResponse down to what the bench uses. */
export function decodeFrame(buf: Uint8Array): LeanFrame {
  const outer = new Reader(buf);
  let frame: LeanFrame = { case: "other" };
  while (!outer.done) {
    const tag = outer.varint();
    if (tag >>> 3 !== F.responseFrame || (tag & 7) !== LEN) {
      outer.skip(tag & 7);
      continue;
    }
    const [fs, fe] = outer.span();
    const r = new Reader(buf, fs, fe);
    while (!r.done) {
      const t = r.varint();
      const field = t >>> 3;
      if ((t & 7) !== LEN) {
        r.skip(t & 7);
        continue;
      }
      const [s, e] = r.span();
      if (field === F.frameEvent) frame = { case: "event", event: readEvent(buf, s, e) };
      else if (field === F.frameSendAck) frame = readAck(buf, s, e);
      else if (field === F.frameSync) frame = { case: "sync", events: readSync(buf, s, e) };
      else if (field === F.frameSyncComplete) frame = { case: "syncComplete" };
      else if (field === F.frameError) frame = readError(buf, s, e);
    }
  }
  return frame;
}

function readAck(buf: Uint8Array, start: number, end: number): LeanFrame {
  const r = new Reader(buf, start, end);
  let event: LeanEvent | undefined;
  let duplicate = false;
  while (!r.done) {
    const tag = r.varint();
    if (tag >>> 3 === F.ackEvent && (tag & 7) === LEN) {
      const [s, e] = r.span();
      event = readEvent(buf, s, e);
    } else if (tag >>> 3 === F.ackDuplicate && (tag & 7) === VARINT) duplicate = r.varint() !== 0;
    else r.skip(tag & 7);
  }
  return { case: "sendAck", event, duplicate };
}

function readSync(buf: Uint8Array, start: number, end: number): LeanEvent[] {
  const r = new Reader(buf, start, end);
  const events: LeanEvent[] = [];
  while (!r.done) {
    const tag = r.varint();
    if (tag >>> 3 === F.syncEvents && (tag & 7) === LEN) {
      const [s, e] = r.span();
      events.push(readEvent(buf, s, e));
    } else r.skip(tag & 7);
  }
  return events;
}

function readError(buf: Uint8Array, start: number, end: number): LeanFrame {
  const r = new Reader(buf, start, end);
  let code = 0;
  let message = "";
  while (!r.done) {
    const tag = r.varint();
    if (tag >>> 3 === F.errorCode && (tag & 7) === VARINT) code = r.varint();
    else if (tag >>> 3 === F.errorMessage && (tag & 7) === LEN) message = r.string();
    else r.skip(tag & 7);
  }
  return { case: "error", code, message };
}

function varintBytes(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}

/** A length-delimited field: tag, length, payload. */
function field(fieldNo: number, payload: Uint8Array): Uint8Array {
  const head = [...varintBytes((fieldNo << 3) | LEN), ...varintBytes(payload.length)];
  const out = new Uint8Array(head.length + payload.length);
  out.set(head, 0);
  out.set(payload, head.length);
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A SendRequest { conversation_id, client_msg_id, content { text } }: a unary Send call's body. */
export function encodeSendRequest(
  conversationId: string,
  clientMsgId: string,
  text: string,
): Uint8Array {
  return concat([
    field(F.sendConversationId, utf8Out.encode(conversationId)),
    field(F.sendClientMsgId, utf8Out.encode(clientMsgId)),
    field(F.sendContent, field(F.contentText, utf8Out.encode(text))),
  ]);
}

/** A SessionRequest carrying that SendRequest as its send. */
export function encodeSend(conversationId: string, clientMsgId: string, text: string): Uint8Array {
  return field(F.requestSend, encodeSendRequest(conversationId, clientMsgId, text));
}

/** A unary Send call's answer (a SendResponse), read as the send ack a stream would carry. */
export function decodeSendResponse(buf: Uint8Array): LeanFrame {
  return readAck(buf, 0, buf.length);
}
