import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type ServerFrame,
  type SessionRequest,
  SessionRequestSchema,
} from "../gen/chat/v1/chat_service_pb.js";
import { Pushable } from "../lib/pushable.js";
import type { Account } from "./account.js";

type RequestInit = MessageInitShape<typeof SessionRequestSchema>;

export interface LiveOptions {
  account: Account;
  /** Cursors for the subscribe frame; asked again on every reconnect. */
  cursors(): { conversationId: string; seq: bigint }[];
  /** Runs after each `ready` frame, before later frames are handled. */
  onOpen?(): void;
  onFrame(frame: ServerFrame): void | Promise<void>;
  /** Connection notices (lost, reconnecting). */
  status(line: string): void;
}

/** Worth a reconnect: the server went away, dropped a silent or slow stream, or is busy. */
const transient = new Set([
  Code.Unavailable,
  Code.DeadlineExceeded,
  Code.ResourceExhausted,
  Code.Aborted,
]);

export const isTransient = (code: Code) => transient.has(code);

/** 0.5 s doubling to 10 s, with jitter so many clients do not return at once. */
const backoff = (failures: number) =>
  Math.min(10_000, 500 * 2 ** failures) * (0.5 + Math.random() / 2);

/**
 * A Session stream that stays up: it subscribes with the caller's cursors,
 * heartbeats at the interval the server asks for, and reconnects with
 * backoff when the connection drops.
 */
export class Live {
  private input: Pushable<SessionRequest> | undefined;
  private abort: AbortController | undefined;
  private stopping = false;
  private wakeSleep: (() => void) | undefined;
  private running: Promise<void> | undefined;
  connected = false;

  constructor(private readonly opts: LiveOptions) {}

  /** Queues a frame on the open stream; false while disconnected. */
  send(frame: RequestInit): boolean {
    if (!this.connected || !this.input) return false;
    this.input.push(create(SessionRequestSchema, frame));
    return true;
  }

  /** Starts the stream; the promise ends on stop() or rejects on a fatal error. */
  start(): Promise<void> {
    this.running ??= this.loop();
    return this.running;
  }

  /** Half-closes, so frames already queued (receipts) are processed, then aborts after graceMs. */
  async stop(graceMs = 2000) {
    this.stopping = true;
    this.wakeSleep?.();
    this.input?.end();
    const timer = setTimeout(() => this.abort?.abort(), graceMs);
    await this.running?.catch(() => undefined);
    clearTimeout(timer);
  }

  private async loop(): Promise<void> {
    let failures = 0;
    let renewed = false;
    while (!this.stopping) {
      const input = new Pushable<SessionRequest>();
      const abort = new AbortController();
      this.input = input;
      this.abort = abort;
      input.push(
        create(SessionRequestSchema, {
          action: { case: "subscribe", value: { cursors: this.opts.cursors() } },
        }),
      );
      let heartbeat: NodeJS.Timeout | undefined;
      let error: ConnectError;
      try {
        const stream = this.opts.account.chat.session(input, { signal: abort.signal });
        for await (const res of stream) {
          const f = res.frame;
          if (!f) continue;
          if (f.frame.case === "ready") {
            failures = 0;
            renewed = false;
            this.connected = true;
            const every = f.frame.value.heartbeatIntervalMs || 25_000;
            heartbeat = setInterval(
              () => this.send({ action: { case: "heartbeat", value: {} } }),
              every,
            );
            this.opts.onOpen?.();
          }
          await this.opts.onFrame(f);
        }
        error = new ConnectError("the server ended the stream", Code.Unavailable);
      } catch (err) {
        error = ConnectError.from(err);
      } finally {
        clearInterval(heartbeat);
        this.connected = false;
        input.end();
      }
      if (this.stopping) return;
      if (error.code === Code.Unauthenticated && !renewed) {
        renewed = true;
        if (await this.opts.account.renew()) continue;
      }
      if (!isTransient(error.code)) throw error;
      const delay = backoff(failures++);
      this.opts.status(
        `connection lost: ${error.message}; reconnecting in ${(delay / 1000).toFixed(1)} s`,
      );
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, delay);
        this.wakeSleep = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wakeSleep = undefined;
    }
  }
}
