import { Buffer } from "node:buffer";
import { randomBytes } from "node:crypto";
import WebSocket from "ws";
import type { Event } from "../../../gen/chat/v1/event_pb.js";
import { setBounded } from "../../bounded-map.js";
import { BackendUnavailableError } from "../../errors.js";
import { decodeEvent, encodeEvent } from "../../event-bytes.js";
import type { Logger } from "../../logger.js";
import type { MessageLog } from "../message-log.js";

export interface PulsarLogOptions {
  /** The broker's (or proxy's) web service, http(s)://host:port, where its WebSocket API is served. */
  webUrl: string;
  /** persistent://tenant/namespace/topic: one per core, since one process writes and consumes it. */
  topic: string;
  /** The store's subscription (Exclusive: a second process on the topic is refused). */
  subscription: string;
  log: Logger;
  /** How long an append may wait for the broker before it counts as failed. */
  sendTimeoutMs?: number;
  /** Events appended and not yet consumed, beyond which appends are refused. */
  maxPending?: number;
  /** Events handed to the consumer at once. */
  maxBatch?: number;
  /** How long open() waits for the broker and the backlog. */
  openTimeoutMs?: number;
  /**
   * Refusals of an event the store keeps refusing before it is moved to the
   * dead-letter topic, so that one bad event cannot stop the core's store.
   */
  maxRefusals?: number;
  /** Where such events go: persistent://…, by default the topic's name with `-dead-letter`. */
  deadLetterTopic?: string;
  /** How long caughtUp waits for the store before it answers UNAVAILABLE. */
  catchUpTimeoutMs?: number;
  /** How long the consumer may get nothing while events wait before it starts over. */
  stallMs?: number;
}

export interface PulsarLog extends MessageLog {
  /**
   * Connects, then waits until the store has consumed the topic's backlog
   * (what an earlier process appended): until then the store lags what was
   * acknowledged. Rejects when the broker stays away.
   */
  open(): Promise<void>;
}

/** An appended event until the store has committed it. */
interface Pending {
  event: Event;
  key: string | undefined;
  /** The broker acknowledged it: it is in the log. */
  persisted: boolean;
  consumed: Promise<void>;
  markConsumed: () => void;
}

interface Received {
  messageId: string;
  event: Event | undefined;
  marker: string | undefined;
}

interface Receipt {
  result?: string;
  context?: string;
  errorMsg?: string;
}

/** A producer's answer to one send; undefined when it is not JSON. */
const readReceipt = (data: Buffer): Receipt | undefined => {
  try {
    return JSON.parse(data.toString("utf8")) as Receipt;
  } catch {
    return undefined;
  }
};
const refusal = (r: Receipt) => new Error(`${r.result ?? "no result"}: ${r.errorMsg ?? ""}`);

const topicPattern = /^persistent:\/\/([^/\s]+)\/([^/\s]+)\/([^/\s]+)$/;
const markerProperty = "relaychat-marker";

/** The WebSocket API's path of a topic: persistent/tenant/namespace/topic. */
export function topicPath(topic: string): string {
  const m = topicPattern.exec(topic);
  if (!m) throw new Error("topic must be persistent://tenant/namespace/topic");
  return `persistent/${m[1]}/${m[2]}/${m[3]}`;
}

const keyOf = (conversationId: string, actorUserId: string, clientMsgId: string) =>
  `${conversationId}\u0000${actorUserId}\u0000${clientMsgId}`;

/**
 * The message log in Apache Pulsar, over the broker's WebSocket API. An
 * append settles once the broker has persisted the event (with the broker's
 * journal synced, the message is durable), so a send is acknowledged before
 * the store holds it; the store consumes the topic in order through an
 * Exclusive subscription in this process and acknowledges each event once
 * committed. A conversation's events keep their order: one producer, one
 * topic per core.
 *
 * Nothing acknowledged may then be refused by the store, so this log keeps
 * what it appended and the store has not committed: dedup checks ask it
 * (pendingKey), reads wait for the store to catch up (caughtUp), and a
 * commit that fails or is refused stops the consumer, which the broker then
 * hands the same events again, in order. An event refused `maxRefusals`
 * times is moved to the dead-letter topic (durable there, for an operator),
 * and so are its conversation's later refused events, at once: one bad event
 * holds the topic back only for a while. A send whose outcome is unknown
 * (the producer's connection dropped, no receipt in time) fails, and appends
 * pause until a marker sent after it has come through the consumer: by then
 * the event is either committed or certainly not in the log.
 */
export function createPulsarLog(opts: PulsarLogOptions): PulsarLog {
  const path = topicPath(opts.topic);
  const base = opts.webUrl.replace(/^http/, "ws").replace(/\/$/, "");
  // One name for every connection of this log: the broker takes a new producer under it only once
  // the last one is closed, and so once each send on it was persisted or failed (see resync).
  const producerUrl = `${base}/ws/v2/producer/${path}?producerName=relaychat-${randomBytes(8).toString("hex")}`;
  const consumerUrl =
    `${base}/ws/v2/consumer/${path}/${encodeURIComponent(opts.subscription)}` +
    "?subscriptionType=Exclusive&receiverQueueSize=1000";
  const sendTimeoutMs = opts.sendTimeoutMs ?? 10_000;
  const maxPending = opts.maxPending ?? 100_000;
  const maxBatch = opts.maxBatch ?? 512;
  const openTimeoutMs = opts.openTimeoutMs ?? 60_000;
  const maxRefusals = opts.maxRefusals ?? 20;
  const deadLetterPath = topicPath(opts.deadLetterTopic ?? `${opts.topic}-dead-letter`);
  const catchUpTimeoutMs = opts.catchUpTimeoutMs ?? 10_000;
  const stallMs = opts.stallMs ?? 10_000;
  const log = opts.log;

  const pending = new Map<string, Pending>();
  const pendingByConversation = new Map<string, Set<Pending>>();
  const pendingByKey = new Map<string, Pending>();
  let handler: ((batch: Event[]) => Promise<(Error | undefined)[]>) | undefined;
  let closed = false;
  /** Set while appends pause after a send with an unknown outcome. */
  let resyncing: Promise<void> | undefined;

  const forget = (p: Pending) => {
    if (pending.get(p.event.eventId) !== p) return;
    pending.delete(p.event.eventId);
    const mine = pendingByConversation.get(p.event.conversationId);
    mine?.delete(p);
    if (mine?.size === 0) pendingByConversation.delete(p.event.conversationId);
    if (p.key && pendingByKey.get(p.key) === p) pendingByKey.delete(p.key);
    p.markConsumed();
  };

  // ---- connections ----

  /**
   * Opens a WebSocket and hands it to `opened` as it opens, in the same turn:
   * frames that came with the handshake are emitted before a promise's
   * continuation could add a handler, and a message nobody hears is lost.
   */
  const connect = (url: string, opened: (ws: WebSocket) => void) =>
    new Promise<WebSocket>((resolve, reject) => {
      const ws = new WebSocket(url, { perMessageDeflate: false });
      const fail = (err: unknown) => {
        ws.removeAllListeners();
        ws.on("error", () => undefined);
        ws.terminate();
        reject(new BackendUnavailableError("pulsar unreachable", { cause: err }));
      };
      ws.once("open", () => {
        ws.removeAllListeners();
        opened(ws);
        resolve(ws);
      });
      ws.once("error", fail);
      ws.once("unexpected-response", (_req, res) =>
        fail(new Error(`pulsar answered ${res.statusCode} ${res.statusMessage ?? ""}`)),
      );
    });

  const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

  // ---- producer ----

  let producer: WebSocket | undefined;
  let producerReady: Promise<WebSocket> | undefined;
  let nextContext = 0;
  /** Sends the broker has not answered yet, by context. */
  const inFlight = new Map<
    string,
    { resolve: () => void; reject: (e: Error) => void; timer: NodeJS.Timeout }
  >();

  /**
   * Creates the store's subscription if missing, before anything is sent: a
   * topic keeps messages only for the subscriptions it has, so what was
   * sent before the consumer first subscribed would be dropped.
   */
  const createSubscription = async (at: string) => {
    const url = `${opts.webUrl.replace(/\/$/, "")}/admin/v2/${at}/subscription/${encodeURIComponent(opts.subscription)}`;
    const res = await fetch(url, { method: "PUT", signal: AbortSignal.timeout(10_000) });
    // 409: it exists already.
    if (!res.ok && res.status !== 409) {
      throw new Error(`pulsar answered ${res.status} creating the subscription`);
    }
  };
  let subscribed: Promise<void> | undefined;
  const ensureSubscription = () => {
    subscribed ??= createSubscription(path).catch((err: unknown) => {
      subscribed = undefined;
      throw new BackendUnavailableError("pulsar unreachable", { cause: err });
    });
    return subscribed;
  };

  const producerSocket = (): Promise<WebSocket> => {
    producerReady ??= ensureSubscription()
      .then(() =>
        connect(producerUrl, (ws) => {
          producer = ws;
          ws.on("message", (data) => onReceipt(ws, data as Buffer));
          ws.on("error", (err) => log.warn({ err }, "pulsar producer error"));
          ws.on("close", () => {
            if (producer === ws) {
              producer = undefined;
              producerReady = undefined;
            }
            if (inFlight.size > 0)
              unknownOutcome(new BackendUnavailableError("pulsar producer closed"));
          });
        }),
      )
      .catch((err: unknown) => {
        producerReady = undefined;
        throw err;
      });
    return producerReady;
  };

  /** Sends one payload; resolves on the broker's receipt. */
  const publish = (body: { payload: string; key?: string; properties?: Record<string, string> }) =>
    producerSocket().then(
      (ws) =>
        new Promise<void>((resolve, reject) => {
          const context = String(nextContext++);
          const timer = setTimeout(() => {
            // Its outcome is unknown: every send on this connection starts over.
            unknownOutcome(new BackendUnavailableError("pulsar: no receipt in time"));
            ws.terminate();
          }, sendTimeoutMs);
          inFlight.set(context, { resolve, reject, timer });
          ws.send(JSON.stringify({ ...body, context }), (err) => {
            if (err)
              unknownOutcome(new BackendUnavailableError("pulsar: send failed", { cause: err }));
          });
        }),
    );

  const onReceipt = (ws: WebSocket, data: Buffer) => {
    const receipt = readReceipt(data);
    if (!receipt) {
      log.warn("pulsar producer: unreadable receipt");
      return;
    }
    const waiter = receipt.context === undefined ? undefined : inFlight.get(receipt.context);
    if (!waiter || receipt.context === undefined) return;
    inFlight.delete(receipt.context);
    clearTimeout(waiter.timer);
    if (receipt.result === "ok") {
      waiter.resolve();
      return;
    }
    waiter.reject(
      new BackendUnavailableError("pulsar refused a send", { cause: refusal(receipt) }),
    );
    // An error receipt may come after the broker wrote the entry: unknown too.
    ws.terminate();
  };

  /** Fails the sends in flight and pauses appends until their fate is known. */
  const unknownOutcome = (err: Error) => {
    for (const w of inFlight.values()) {
      clearTimeout(w.timer);
      w.reject(err);
    }
    inFlight.clear();
    startResync();
  };

  const startResync = () => {
    if (resyncing || closed) return;
    resyncing = resync().finally(() => {
      resyncing = undefined;
    });
  };

  /**
   * Events whose append this process answered with an error (bounded): the
   * store may refuse such an event, since nobody was told it is durable.
   */
  const rejected = new Set<string>();
  const maxRejected = 100_000;

  /**
   * Waits until a marker sent on a new connection has come through the
   * consumer: every event sent before it is then committed or not in the log,
   * so what is still pending without a receipt never made it. The new
   * connection's producer has the old one's name, which the broker hands
   * out again only after closing the old producer, so nothing sent on the
   * old connection lands behind the marker.
   */
  const resync = async () => {
    for (let wait = 250; !closed; wait = Math.min(wait * 2, 5000)) {
      try {
        await barrier();
        break;
      } catch (err) {
        log.warn({ err, retryMs: wait }, "pulsar log: resyncing after a send with unknown outcome");
        await pause(wait);
      }
    }
    for (const p of [...pending.values()]) if (!p.persisted) forget(p);
  };

  const markers = new Map<string, () => void>();

  /** Resolves once everything appended before it has been consumed and committed. */
  const barrier = async () => {
    const id = randomBytes(8).toString("hex");
    const seen = new Promise<void>((resolve) => markers.set(id, resolve));
    try {
      await publish({ payload: "", properties: { [markerProperty]: id } });
      await seen;
    } finally {
      markers.delete(id);
    }
  };

  // ---- consumer ----

  let consumer: WebSocket | undefined;
  let consumerRetry: NodeJS.Timeout | undefined;
  let consumerConnecting: Promise<void> | undefined;
  let retryMs = 250;
  let queue: Received[] = [];
  let scheduled = false;
  /** The consumer connection's batches, in order: false once one failed. */
  let chain: Promise<boolean> = Promise.resolve(true);

  /**
   * A consumer that gets nothing while this log waits for events to come
   * through starts over, which makes the broker rewind to what is not yet
   * acknowledged: a safety net for a delivery lost on the way (the broker
   * does not send a connection what it already sent it).
   */
  let lastHeard = Date.now();
  /** Batches in the store's hands. */
  let handing = 0;
  const watchdog = setInterval(() => {
    const ws = consumer;
    const waiting = pending.size > 0 || markers.size > 0;
    // A slow commit is not a lost delivery: starting over would hand its events over again.
    if (ws && waiting && handing === 0 && Date.now() - lastHeard > stallMs) {
      log.warn({ stallMs }, "pulsar consumer: nothing arrives while events wait; reconnecting");
      lastHeard = Date.now();
      ws.terminate();
    }
  }, stallMs / 2);
  watchdog.unref();

  const consumerSocket = (): Promise<void> => {
    consumerConnecting ??= connect(consumerUrl, (ws) => {
      consumer = ws;
      lastHeard = Date.now();
      retryMs = 250;
      chain = Promise.resolve(true);
      ws.on("message", (data) => onMessage(ws, data as Buffer));
      ws.on("error", (err) => log.warn({ err }, "pulsar consumer error"));
      ws.on("close", () => {
        // A connection this log already stopped using has nothing left to undo.
        if (consumer !== ws) return;
        consumer = undefined;
        // What was received and not handed over comes again to the next consumer.
        queue = [];
        reconnectConsumer();
      });
    })
      .then(() => undefined)
      .finally(() => {
        consumerConnecting = undefined;
      });
    return consumerConnecting;
  };

  const reconnectConsumer = () => {
    if (closed || consumerRetry || !handler) return;
    consumerRetry = setTimeout(() => {
      consumerRetry = undefined;
      consumerSocket().catch((err: unknown) => {
        log.warn({ err, retryMs }, "pulsar consumer: reconnecting");
        // Short: after this consumer stopped itself, the broker refuses the next (409) only
        // until it has let the last one go, and the store waits meanwhile.
        retryMs = Math.min(retryMs * 2, 1000);
        reconnectConsumer();
      });
    }, retryMs);
  };

  const onMessage = (ws: WebSocket, data: Buffer) => {
    if (ws !== consumer) return;
    let msg: { messageId?: string; payload?: string; properties?: Record<string, string> };
    try {
      msg = JSON.parse(data.toString("utf8"));
    } catch (err) {
      log.error({ err }, "pulsar consumer: unreadable message");
      return;
    }
    if (typeof msg.messageId !== "string") return;
    lastHeard = Date.now();
    const marker = msg.properties?.[markerProperty];
    let event: Event | undefined;
    if (marker === undefined) {
      try {
        event = decodeEvent(Buffer.from(msg.payload ?? "", "base64"));
      } catch (err) {
        // Not ours to judge: acknowledged and skipped, so it cannot stop the topic.
        log.error({ err, messageId: msg.messageId }, "pulsar consumer: not an event, skipped");
      }
    }
    queue.push({ messageId: msg.messageId, event, marker });
    if (!scheduled) {
      scheduled = true;
      setImmediate(drain);
    }
  };

  const drain = () => {
    scheduled = false;
    const ws = consumer;
    while (queue.length > 0 && handler && ws) {
      const batch = queue.splice(0, maxBatch);
      const h = handler;
      const before = chain;
      chain = handOver(h, ws, batch, before);
    }
  };

  /** Times the store refused each event not yet acknowledged (bounded). */
  const refusals = new Map<string, number>();
  /** Conversations with an event in the dead-letter topic: their later refusals follow it there. */
  const deadLettered = new Map<string, true>();
  /** Events in the dead-letter topic not yet acknowledged here. */
  const moved = new Map<string, true>();
  let deadLetterSubscribed = false;

  /**
   * Sends an acknowledged event the store keeps refusing to the dead-letter
   * topic (with the store's subscription on it, so the topic keeps it), on a
   * connection of its own. Resolves false when that failed: the event then
   * stays in the log and comes again.
   */
  const moveToDeadLetter = async (event: Event, refused: Error, times: number) => {
    const at = { conversationId: event.conversationId, seq: String(event.seq), refusals: times };
    try {
      if (!deadLetterSubscribed) {
        await createSubscription(deadLetterPath);
        deadLetterSubscribed = true;
      }
      const ws = await connect(`${base}/ws/v2/producer/${deadLetterPath}`, (w) =>
        w.on("error", () => undefined),
      );
      try {
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error("no receipt in time")), sendTimeoutMs);
          ws.once("message", (data: Buffer) => {
            clearTimeout(timer);
            const receipt = readReceipt(data) ?? {};
            if (receipt.result === "ok") resolve();
            else reject(refusal(receipt));
          });
          ws.once("close", () => reject(new Error("closed")));
          ws.send(
            JSON.stringify({
              payload: Buffer.from(encodeEvent(event)).toString("base64"),
              key: event.conversationId,
              properties: { "relaychat-refused": refused.message },
            }),
          );
        });
      } finally {
        ws.close();
      }
    } catch (err) {
      log.warn({ err, ...at }, "pulsar consumer: could not move an event to the dead-letter topic");
      return false;
    }
    setBounded(deadLettered, event.conversationId, true, 10_000);
    setBounded(moved, event.eventId, true, 10_000);
    refusals.delete(event.eventId);
    log.error(
      { err: refused, ...at, deadLetterTopic: deadLetterPath },
      "pulsar consumer: the store keeps refusing an acknowledged event; moved to the dead-letter topic",
    );
    return true;
  };

  const ack = (ws: WebSocket, messageId: string) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ messageId }));
  };

  /**
   * Hands a batch to the store (batches overlap; the store commits in call
   * order) and acknowledges what it committed. Anything else (a failed
   * commit, a refusal behind it) stops this consumer: the broker hands the
   * unacknowledged events over again, in order, to the next one.
   */
  const handOver = async (
    h: (batch: Event[]) => Promise<(Error | undefined)[]>,
    ws: WebSocket,
    batch: Received[],
    before: Promise<boolean>,
  ): Promise<boolean> => {
    handing++;
    try {
      return await handOverNow(h, ws, batch, before);
    } finally {
      handing--;
      lastHeard = Date.now();
    }
  };

  const handOverNow = async (
    h: (batch: Event[]) => Promise<(Error | undefined)[]>,
    ws: WebSocket,
    batch: Received[],
    before: Promise<boolean>,
  ): Promise<boolean> => {
    const events = batch.flatMap((r) => (r.event ? [r] : []));
    let verdicts: (Error | undefined)[];
    try {
      verdicts = events.length > 0 ? await h(events.map((r) => r.event!)) : [];
    } catch (err) {
      log.warn({ err }, "pulsar consumer: commit failed; the events come again");
      await before;
      ws.terminate();
      return false;
    }
    // A verdict of the backend's failure is a failed commit, not a refusal.
    const failed = verdicts.find((v) => v instanceof BackendUnavailableError);
    if (failed) {
      log.warn({ err: failed }, "pulsar consumer: commit failed in part; the events come again");
      await before;
      ws.terminate();
      return false;
    }
    // Markers and acks in log order: nothing counts as consumed before what precedes it.
    // Refusals behind a failed batch may be its doing (a hole it left): not counted.
    if (!(await before)) {
      ws.terminate();
      return false;
    }
    let ok = true;
    const moving: Promise<boolean>[] = [];
    events.forEach((r, i) => {
      const refused = verdicts[i];
      const event = r.event!;
      if (!refused) return;
      if (rejected.has(event.eventId)) {
        // Its sender was told it failed, and the store refuses it: it is not a change.
        log.warn({ err: refused }, "pulsar consumer: skipped an event whose append failed");
        return;
      }
      // Moved already, and this batch came again for a refusal behind it.
      if (moved.has(event.eventId)) return;
      const times = (refusals.get(event.eventId) ?? 0) + 1;
      setBounded(refusals, event.eventId, times, 10_000);
      if (times < maxRefusals && !deadLettered.has(event.conversationId)) {
        ok = false;
        return;
      }
      moving.push(moveToDeadLetter(event, refused, times));
    });
    for (const done of await Promise.all(moving)) ok &&= done;
    if (!ok) {
      ws.terminate();
      return false;
    }
    for (const r of batch) {
      if (r.event) {
        const p = pending.get(r.event.eventId);
        if (p) forget(p);
        refusals.delete(r.event.eventId);
        moved.delete(r.event.eventId);
      }
      ack(ws, r.messageId);
      if (r.marker !== undefined) markers.get(r.marker)?.();
    }
    return true;
  };

  const caughtUp = async (conversationId?: string) => {
    const waiting = conversationId
      ? [...(pendingByConversation.get(conversationId) ?? [])]
      : [...pending.values()];
    if (waiting.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new BackendUnavailableError("the store is behind the log")),
        catchUpTimeoutMs,
      );
    });
    try {
      await Promise.race([Promise.all(waiting.map((p) => p.consumed)), late]);
    } finally {
      clearTimeout(timer);
    }
  };

  return {
    judges: false,
    async open() {
      const deadline = Date.now() + openTimeoutMs;
      for (;;) {
        try {
          if (!consumer && handler) await consumerSocket();
          await barrier();
          return;
        } catch (err) {
          if (Date.now() > deadline || closed) throw err;
          await pause(500);
        }
      }
    },
    caughtUp,
    pendingKey(conversationId, actorUserId, clientMsgId) {
      const p = pendingByKey.get(keyOf(conversationId, actorUserId, clientMsgId));
      // Not (yet) in the log as far as anyone knows: answering a retry with it
      // could confirm an event that never lands, so the retry waits for its fate.
      if (p && !p.persisted)
        throw new BackendUnavailableError(
          "pulsar log: an earlier send of this key has an unknown outcome",
        );
      return p?.event;
    },
    async append(event) {
      if (closed) throw new BackendUnavailableError("log closed");
      if (resyncing) throw new BackendUnavailableError("pulsar log: resyncing");
      if (pending.size >= maxPending) {
        throw new BackendUnavailableError("pulsar log: the store is too far behind");
      }
      let markConsumed!: () => void;
      const consumed = new Promise<void>((r) => {
        markConsumed = r;
      });
      const key = event.clientMsgId
        ? keyOf(event.conversationId, event.actorUserId, event.clientMsgId)
        : undefined;
      const p: Pending = { event, key, persisted: false, consumed, markConsumed };
      pending.set(event.eventId, p);
      let mine = pendingByConversation.get(event.conversationId);
      if (!mine) {
        mine = new Set();
        pendingByConversation.set(event.conversationId, mine);
      }
      mine.add(p);
      if (key) pendingByKey.set(key, p);
      const payload = Buffer.from(encodeEvent(event)).toString("base64");
      // One producer keeps the order of sends, so a conversation's events stay in append order.
      try {
        await publish({ payload, key: event.conversationId });
      } catch (err) {
        if (rejected.size >= maxRejected) rejected.delete(rejected.values().next().value!);
        rejected.add(event.eventId);
        // However it failed (no connection, no receipt), its fate is settled by a resync.
        startResync();
        throw err;
      }
      p.persisted = true;
    },
    consume(h) {
      handler = h;
      if (!consumer) consumerSocket().catch(() => reconnectConsumer());
    },
    async close() {
      if (closed) return;
      clearInterval(watchdog);
      // The router has drained into the log: leave the store current if it keeps up.
      await Promise.race([caughtUp().catch(() => undefined), pause(5000)]);
      closed = true;
      clearTimeout(consumerRetry);
      for (const w of inFlight.values()) {
        clearTimeout(w.timer);
        w.reject(new BackendUnavailableError("log closed"));
      }
      inFlight.clear();
      for (const p of [...pending.values()]) forget(p);
      producer?.close();
      consumer?.close();
    },
  };
}
