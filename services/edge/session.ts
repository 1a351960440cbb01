import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { ReadSyncResponse } from "../../gen/chat/internal/v1/store_service_pb.js";
import {
  type SendResponse,
  type ServerFrame,
  ServerFrameSchema,
} from "../../gen/chat/v1/chat_service_pb.js";
import type { Event } from "../../gen/chat/v1/event_pb.js";
import type { ConversationCursor, SyncBatch } from "../../gen/chat/v1/model_pb.js";
import { fail, toConnectError } from "../../lib/errors.js";
import { decodeEvent } from "../../lib/event-bytes.js";
import { newId } from "../../lib/ids.js";
import type { Logger } from "../../lib/logger.js";
import type { StoreClient } from "../router/store-client.js";
import type { Caller } from "./auth.js";
import { storedSyncBatch } from "./wire.js";

export interface SessionOptions {
  store: StoreClient;
  outboxMaxFrames: number;
  gapWaitMs: number;
  syncLimit: number;
  /** Conversations active this recently get a baseline at subscribe. */
  baselineWindowMs: number;
  log: Logger;
  /** Called for each frame the stream drops, or (events) defers to catch-up. */
  onShed?: (frame: string) => void;
}

/** "session" is the bidi stream (and WebSocket); "subscribe" the receive-only stream. */
export type SessionKind = "session" | "subscribe";

/** Per-conversation delivery state of one stream. */
interface Gate {
  /** Every event up to here is delivered (or held by the client). */
  sent: bigint;
  /** Events that arrived ahead of a gap, waiting for it to be filled. */
  ahead?: Map<bigint, Event> | undefined;
  gapTimer?: NodeJS.Timeout | undefined;
  /** Reads of the store for the current gap that did not close it (backs the next one off). */
  gapReads?: number | undefined;
  /** Set when a live event was skipped because the stream is behind here. */
  skipped?: boolean;
  /** Seqs above `sent` this stream already sent as a fallback send-ack: passed in order, not sent again. */
  acked?: Set<bigint> | undefined;
}

/** The longest wait between two reads of a gap that the store did not close. */
const gapRetryMaxMs = 5000;
/** Events read per store call when a stream catches up. */
const catchUpPage = 200;
/** Events held in memory while a subscribe is still syncing; past it, the store has them. */
const liveBufferMax = 4096;
/** Events per ReadSync response while subscribing. */
const syncMaxEvents = 2000;
/** A durable send whose event has not come back through fan-out by then is acked directly. */
const ackFallbackMs = 3000;

/** A send from this stream, waiting for its event to come back as the ack. */
interface PendingSend {
  frameId: string;
  /** Set once the send is durable: the fallback ack and when it is due. */
  event?: Event;
  dueMs?: number;
}

// Session ids are this process's random id plus a counter: unique without
// drawing random bytes for every stream.
const idPrefix = newId("s_");
let idCount = 0;

/** Builds a server frame from the init shape of one of its cases. */
export const frame = (
  f: NonNullable<MessageInitShape<typeof ServerFrameSchema>["frame"]>,
  replyToFrameId = "",
) => create(ServerFrameSchema, { frame: f, replyToFrameId });

/**
 * The frame of one event, built for each stream it reaches: a literal with
 * every field instead of create() (see "The send path" in docs/ARCHITECTURE.md).
 */
const eventFrame = (event: Event): ServerFrame => ({
  $typeName: "chat.v1.ServerFrame",
  replyToFrameId: "",
  frame: { case: "event", value: event },
});

/** A sync response's batches; each one's events are decoded only if asked for. */
const syncBatches = (res: ReadSyncResponse): { batch: SyncBatch; events: () => Event[] }[] =>
  // Binary streams ask for the stored bytes; JSON ones get decoded batches.
  res.encodedBatches.length > 0
    ? res.encodedBatches.map((b) => ({
        batch: storedSyncBatch(b),
        events: () => b.events.map(decodeEvent),
      }))
    : res.batches.map((b) => ({ batch: b, events: () => b.events }));

/**
 * One client stream. It owns the stream's outbox and guarantees that the
 * client sees each conversation's events once and in seq order:
 *
 * - after `subscribe`, first what was missed (sync batches), then live events;
 * - a per-conversation gate drops what the client already has, holds events
 *   that arrive ahead of a gap, and fills gaps from the store;
 * - when the client reads too slowly, typing then presence frames are shed;
 *   events are never queued past the cap: the stream falls behind and later
 *   catches up from the store, where everything delivered is durable;
 * - the stream's own sends come back through the same ordered fan-out and
 *   leave as send-acks instead of events.
 */
export class Session {
  readonly id = `${idPrefix}.${(++idCount).toString(36)}`;
  lastHeardMs = Date.now();
  lastHeartbeatSentMs = Date.now();
  /** When the stream fell behind (0 = it is keeping up). */
  laggingSinceMs = 0;

  private readonly outbox: ServerFrame[] = [];
  private wake: (() => void) | undefined;
  private closed = false;
  private closeError: ConnectError | undefined;
  private subscribed = false;
  private syncing = false;
  // Created on first use: most sessions sit idle, and empty collections are not free.
  private liveBuffer: Event[] | undefined;
  /** Conversations with live events past a full live buffer: their first such seq. */
  private overflowed: Map<string, bigint> | undefined;
  private gates: Map<string, Gate> | undefined;
  private behind: Set<string> | undefined;
  private recovering = false;
  /** Own sends waiting for their event, by `${conversationId} ${clientMsgId}`. */
  private pendingSends: Map<string, PendingSend> | undefined;

  /**
   * @param binary whether the transport writes frames in binary protobuf:
   *   its sync frames then carry events as the store holds them (see
   *   storedSyncBatch), which a JSON writer would drop.
   */
  constructor(
    readonly caller: Caller,
    readonly kind: SessionKind,
    private readonly opts: SessionOptions,
    private readonly binary: boolean,
  ) {}

  get isClosed() {
    return this.closed;
  }

  get isSubscribed() {
    return this.subscribed;
  }

  /** Why the session ended, once closed with an error. */
  get error() {
    return this.closeError;
  }

  /** Notes client activity (any frame or heartbeat). */
  heard() {
    this.lastHeardMs = Date.now();
  }

  /**
   * Queues a frame that carries no seq. Under pressure typing goes first,
   * then presence, then receipts (all recoverable or ephemeral); acks,
   * errors and sync frames always go.
   */
  push(f: ServerFrame) {
    if (this.closed) return;
    const n = this.outbox.length;
    const max = this.opts.outboxMaxFrames;
    const limit =
      f.frame.case === "typing"
        ? max / 4
        : f.frame.case === "presence"
          ? max / 2
          : f.frame.case === "receipt"
            ? max
            : Number.POSITIVE_INFINITY;
    if (n >= limit) {
      this.opts.onShed?.(f.frame.case ?? "none");
      return;
    }
    this.outbox.push(f);
    this.notify();
  }

  /** An event fanned out to this device. */
  offer(event: Event) {
    if (this.closed) return;
    if (!this.subscribed) {
      // Not receiving events yet: only its own sends' acks matter.
      const frameId = this.takePendingSend(event);
      if (frameId !== undefined) this.outbox.push(this.ackFrame(event, frameId, false));
      this.notify();
      return;
    }
    if (this.syncing) {
      this.liveBuffer ??= [];
      if (this.liveBuffer.length < liveBufferMax) this.liveBuffer.push(event);
      else this.overflow(event);
      return;
    }
    this.admit(event);
  }

  /** Records a send from this stream, so its event leaves as the ack. */
  sendStarted(conversationId: string, clientMsgId: string, frameId: string) {
    const key = `${conversationId} ${clientMsgId}`;
    this.pendingSends ??= new Map();
    if (!this.pendingSends.has(key)) this.pendingSends.set(key, { frameId });
  }

  /** Completes a send: duplicates are acked at once; new events are acked by fan-out. */
  sendFinished(conversationId: string, clientMsgId: string, frameId: string, res: SendResponse) {
    const key = `${conversationId} ${clientMsgId}`;
    const pending = this.pendingSends?.get(key);
    if (res.duplicate || !res.event) {
      if (pending?.frameId === frameId) this.pendingSends?.delete(key);
      this.push(frame({ case: "sendAck", value: res }, frameId));
      return;
    }
    // Fan-out failures must not leave a durable send unacknowledged: the
    // sweeper acks it directly once due (see ackOverdue).
    if (pending?.frameId === frameId) {
      pending.event = res.event;
      pending.dueMs = Date.now() + ackFallbackMs;
    }
  }

  /**
   * Acks durable sends whose event never came back; called by the sweeper.
   * Not while syncing or behind: the event may be buffered or still to be
   * read, and would then reach the client a second time.
   */
  ackOverdue(nowMs: number) {
    if (this.closed || this.syncing || this.laggingSinceMs || !this.pendingSends?.size) return;
    for (const [key, p] of this.pendingSends) {
      if (!p.event || p.dueMs === undefined || p.dueMs > nowMs) continue;
      this.pendingSends.delete(key);
      this.push(this.ackFrame(p.event, p.frameId, false));
      // Its fan-out may still come (retried once the bus is back): one copy per stream.
      const g = this.gateFor(p.event.conversationId, p.event.seq);
      if (p.event.seq > g.sent) {
        g.acked ??= new Set();
        g.acked.add(p.event.seq);
      }
    }
  }

  sendFailed(conversationId: string, clientMsgId: string, frameId: string) {
    const key = `${conversationId} ${clientMsgId}`;
    if (this.pendingSends?.get(key)?.frameId === frameId) this.pendingSends.delete(key);
  }

  /**
   * Starts delivery: sync from the cursors (or the device's stored cursors),
   * then live events. Ends the stream if the cursors are invalid.
   */
  async subscribe(cursors: ConversationCursor[]): Promise<void> {
    if (this.subscribed) throw fail.precondition("already subscribed");
    this.subscribed = true;
    this.syncing = true;
    try {
      for (const c of cursors) this.raiseGate(c.conversationId, c.seq);
      const given = new Map(cursors.map((c) => [c.conversationId, c]));
      for (;;) {
        const res = await this.opts.store.readSync({
          viewerUserId: this.caller.userId,
          deviceId: this.caller.deviceId,
          cursors: [...given.values()],
          limitPerConversation: this.opts.syncLimit,
          baselineWindowMs: this.opts.baselineWindowMs,
          maxEvents: syncMaxEvents,
          encoded: this.binary,
        });
        for (const b of res.baselines) this.raiseGate(b.conversationId, b.seq);
        for (const { batch, events } of syncBatches(res)) {
          if (this.outbox.length > this.opts.outboxMaxFrames / 2) await this.room();
          if (this.closed) return;
          this.queueBatch(batch, events);
          given.set(batch.conversationId, {
            conversationId: batch.conversationId,
            seq: batch.headSeq,
          } as ConversationCursor);
        }
        if (!res.hasMore) break;
      }
      this.push(frame({ case: "syncComplete", value: {} }));
    } catch (err) {
      this.close(toConnectError(err));
      return;
    }
    this.syncing = false;
    const buffered = this.liveBuffer;
    this.liveBuffer = undefined;
    if (buffered) for (const ev of buffered) this.admit(ev);
    const overflowed = this.overflowed;
    this.overflowed = undefined;
    // Fan-out is in seq order, so what overflowed follows what was buffered
    // and synced; without either, its first event is where the stream starts.
    if (overflowed) {
      for (const [conversationId, first] of overflowed) {
        this.lagBehind(this.gateFor(conversationId, first), conversationId);
      }
    }
    if (this.behind?.size) void this.catchUp();
  }

  /** The next outgoing frame, for writers that pull (see onReadable). */
  take(): ServerFrame | undefined {
    const next = this.outbox.shift();
    if (next && this.laggingSinceMs && this.outbox.length <= this.opts.outboxMaxFrames / 2) {
      void this.catchUp();
    }
    return next;
  }

  /** Calls `wake` once, as soon as a frame is queued or the session closes. */
  onReadable(wake: () => void) {
    if (this.outbox.length > 0 || this.closed) wake();
    else this.wake = wake;
  }

  /** The outgoing frames; ends when the session closes. */
  async *frames(): AsyncGenerator<ServerFrame> {
    for (;;) {
      const next = this.take();
      if (next) {
        yield next;
        continue;
      }
      if (this.closed) {
        if (this.closeError) throw this.closeError;
        return;
      }
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
  }

  /** Ends the stream: gracefully (after queued frames) or with an error. */
  close(err?: ConnectError) {
    if (this.closed) return;
    this.closed = true;
    if (err) {
      this.closeError = err;
      this.outbox.length = 0;
    }
    if (this.gates) for (const g of this.gates.values()) if (g.gapTimer) clearTimeout(g.gapTimer);
    this.notify();
  }

  private notify() {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  /** Waits until the outbox is at most half full. */
  private async room() {
    while (!this.closed && this.outbox.length > this.opts.outboxMaxFrames / 2) {
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  private ackFrame(event: Event, frameId: string, duplicate: boolean): ServerFrame {
    return {
      $typeName: "chat.v1.ServerFrame",
      replyToFrameId: frameId,
      frame: { case: "sendAck", value: { $typeName: "chat.v1.SendResponse", event, duplicate } },
    };
  }

  /** Queues a sync batch, as the ack of any send of this stream among its events. */
  private queueBatch(batch: SyncBatch, events: () => Event[]) {
    this.outbox.push(frame({ case: "sync", value: batch }));
    // Only a send from this stream still waiting needs the events read.
    if (this.pendingSends?.size) {
      for (const ev of events()) {
        const frameId = this.takePendingSend(ev);
        if (frameId !== undefined) this.outbox.push(this.ackFrame(ev, frameId, false));
      }
    }
    this.notify();
    this.raiseGate(batch.conversationId, batch.headSeq);
  }

  private takePendingSend(event: Event): string | undefined {
    if (event.actorDeviceId !== this.caller.deviceId || !event.clientMsgId) return undefined;
    const key = `${event.conversationId} ${event.clientMsgId}`;
    const pending = this.pendingSends?.get(key);
    if (pending) this.pendingSends?.delete(key);
    return pending?.frameId;
  }

  /**
   * The gate of a conversation whose event `seq` arrived. Without one,
   * nothing before that event is owed on this stream: subscribe set gates for
   * every conversation the client holds or that could still have fan-out in
   * flight, and fan-out is in seq order per conversation.
   */
  private gateFor(conversationId: string, seq: bigint): Gate {
    this.gates ??= new Map();
    let g = this.gates.get(conversationId);
    if (!g) {
      g = { sent: seq - 1n };
      this.gates.set(conversationId, g);
    }
    return g;
  }

  /** Everything up to `seq` of the conversation is delivered (or held by the client). */
  private raiseGate(conversationId: string, seq: bigint) {
    this.gates ??= new Map();
    const g = this.gates.get(conversationId);
    if (!g) this.gates.set(conversationId, { sent: seq });
    else if (g.sent < seq) g.sent = seq;
  }

  private admit(event: Event) {
    const g = this.gateFor(event.conversationId, event.seq);
    if (event.seq <= g.sent) return;
    // Joining (again) starts what this user may see: nothing before it is owed.
    if (
      event.kind.case === "membersAdded" &&
      event.kind.value.userIds.includes(this.caller.userId) &&
      event.seq > g.sent + 1n
    ) {
      g.sent = event.seq - 1n;
      if (g.ahead) for (const seq of g.ahead.keys()) if (seq < event.seq) g.ahead.delete(seq);
    }
    if (this.laggingSinceMs && this.behind?.has(event.conversationId)) {
      g.skipped = true;
      return;
    }
    if (event.seq === g.sent + 1n) {
      if (this.emit(g, event)) this.flushAhead(g, event.conversationId);
      return;
    }
    if (!g.ahead) g.ahead = new Map();
    g.ahead.set(event.seq, event);
    if (g.ahead.size > this.opts.outboxMaxFrames) {
      this.fallBehind(g, event.conversationId);
      return;
    }
    this.scheduleGapFill(g, event.conversationId);
  }

  /** Whether the stream sent `seq` already as a fallback ack; if so, the gate passes it. */
  private sentAsAck(g: Gate, seq: bigint): boolean {
    if (!g.acked?.delete(seq)) return false;
    if (g.acked.size === 0) g.acked = undefined;
    g.sent = seq;
    return true;
  }

  /** Queues one in-order event; false when the stream had to fall behind instead. */
  private emit(g: Gate, event: Event): boolean {
    if (this.sentAsAck(g, event.seq)) return true;
    if (this.outbox.length >= this.opts.outboxMaxFrames) {
      this.fallBehind(g, event.conversationId);
      return false;
    }
    const frameId = this.takePendingSend(event);
    this.outbox.push(
      frameId !== undefined ? this.ackFrame(event, frameId, false) : eventFrame(event),
    );
    g.sent = event.seq;
    this.notify();
    return true;
  }

  private flushAhead(g: Gate, conversationId: string) {
    while (g.ahead && g.ahead.size > 0) {
      const next = g.ahead.get(g.sent + 1n);
      if (!next) break;
      g.ahead.delete(next.seq);
      if (!this.emit(g, next)) return;
    }
    if (g.ahead) for (const seq of g.ahead.keys()) if (seq <= g.sent) g.ahead.delete(seq);
    if (!g.ahead?.size) {
      g.gapReads = undefined;
      if (g.gapTimer) {
        clearTimeout(g.gapTimer);
        g.gapTimer = undefined;
      }
    }
    if (this.laggingSinceMs) this.markBehind(conversationId);
  }

  private fallBehind(g: Gate, conversationId: string) {
    this.opts.onShed?.("event");
    if (!this.laggingSinceMs) this.laggingSinceMs = Date.now();
    this.lagBehind(g, conversationId);
  }

  /**
   * A live event found the buffer of a syncing stream full. Its gate may not
   * exist yet, so the conversation falls behind only once the sync is done.
   */
  private overflow(event: Event) {
    this.opts.onShed?.("event");
    if (!this.laggingSinceMs) this.laggingSinceMs = Date.now();
    this.overflowed ??= new Map();
    if (!this.overflowed.has(event.conversationId)) {
      this.overflowed.set(event.conversationId, event.seq);
    }
  }

  /** Leaves the conversation to catch-up from the store, from its gate on. */
  private lagBehind(g: Gate, conversationId: string) {
    this.markBehind(conversationId);
    g.ahead = undefined;
    if (g.gapTimer) {
      clearTimeout(g.gapTimer);
      g.gapTimer = undefined;
    }
  }

  private markBehind(conversationId: string) {
    this.behind ??= new Set();
    this.behind.add(conversationId);
  }

  /**
   * A gap usually closes by itself within milliseconds; if not, read it from
   * the store, and again, backing off, until it closes: the events behind it
   * wait for it, so a read the store could not answer (a node restarting) must
   * not be the last.
   */
  private scheduleGapFill(g: Gate, conversationId: string) {
    if (g.gapTimer) return;
    const waitMs = Math.min(this.opts.gapWaitMs * 2 ** (g.gapReads ?? 0), gapRetryMaxMs);
    g.gapTimer = setTimeout(() => {
      g.gapTimer = undefined;
      if (this.closed || !g.ahead?.size) return;
      void this.fillGap(g, conversationId);
    }, waitMs);
    g.gapTimer.unref();
  }

  private async fillGap(g: Gate, conversationId: string) {
    const first = [...(g.ahead?.keys() ?? [])].reduce((a, b) => (a < b ? a : b));
    const missing = Number(first - g.sent - 1n);
    try {
      const res = await this.opts.store.readHistory({
        viewerUserId: this.caller.userId,
        conversationId,
        anchorSeq: g.sent,
        backward: false,
        limit: Math.min(missing, catchUpPage),
      });
      // History starts at the caller's (re)join: what lies before is not owed.
      const visible = res.events[0]?.seq;
      if (visible !== undefined && visible > g.sent + 1n) g.sent = visible - 1n;
      for (const ev of res.events) if (!this.closed) this.admit(ev);
    } catch (err) {
      this.opts.log.debug({ err, conversationId }, "gap fill failed");
      // History serves a former member up to its removal; refused is a stranger's.
      if (err instanceof ConnectError && err.code === Code.PermissionDenied) {
        g.sent = first - 1n;
        this.flushAhead(g, conversationId);
        return;
      }
    }
    if (this.closed || !g.ahead?.size || this.gates?.get(conversationId) !== g) return;
    g.gapReads = (g.gapReads ?? 0) + 1;
    this.scheduleGapFill(g, conversationId);
  }

  /** Reads what a slow stream skipped from the store, once it has room again. */
  private async catchUp() {
    const behind = this.behind;
    if (this.recovering || this.syncing || this.closed || !behind) return;
    this.recovering = true;
    try {
      while (behind.size > 0 && !this.closed) {
        if (this.outbox.length > this.opts.outboxMaxFrames / 2) return;
        const conversationId = behind.values().next().value!;
        // Only conversations with a gate fall behind.
        const g = this.gates!.get(conversationId)!;
        g.skipped = false;
        let res: Awaited<ReturnType<StoreClient["readHistory"]>>;
        try {
          res = await this.opts.store.readHistory({
            viewerUserId: this.caller.userId,
            conversationId,
            anchorSeq: g.sent,
            backward: false,
            limit: catchUpPage,
          });
        } catch (err) {
          if (!(err instanceof ConnectError && err.code === Code.PermissionDenied)) throw err;
          behind.delete(conversationId);
          continue;
        }
        for (const ev of res.events) {
          if (ev.seq <= g.sent || this.sentAsAck(g, ev.seq)) continue;
          const frameId = this.takePendingSend(ev);
          this.outbox.push(
            frameId !== undefined ? this.ackFrame(ev, frameId, false) : eventFrame(ev),
          );
          g.sent = ev.seq;
        }
        this.notify();
        // Events skipped during the read may be newer than it saw: read again.
        if (!res.hasMore && !g.skipped) behind.delete(conversationId);
      }
      if (behind.size === 0) this.laggingSinceMs = 0;
    } catch (err) {
      this.close(toConnectError(err));
    } finally {
      this.recovering = false;
    }
  }
}

/** The error a stream ends with when its device is revoked. */
export const revokedError = () => new ConnectError("device is revoked", Code.Unauthenticated);
