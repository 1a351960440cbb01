import { Code, ConnectError } from "@connectrpc/connect";
import type { SessionRequest } from "../../gen/chat/v1/chat_service_pb.js";
import type { ConversationCursor } from "../../gen/chat/v1/model_pb.js";
import { fail, toConnectError } from "../../lib/errors.js";
import type { Caller } from "./auth.js";
import type { EdgeContext } from "./context.js";
import { FrameRunner } from "./duplex.js";
import type { Session } from "./session.js";
import { decodeSessionRequest, encodeSessionResponse as encode } from "./wire.js";

/** Bytes queued on a transport beyond which the pump waits for it to drain. */
const writeHighWater = 64 * 1024;
/**
 * Client frames held while a session opens: reading pauses at as many as a
 * FrameRunner takes at once (or one full-size frame's worth of bytes), as it
 * does once the session runs. What was already read past that is still held,
 * up to four full-size frames' worth; a client that sends more is not pausing.
 */
const earlyPauseFrames = 64;
const earlyMaxFrameSizes = 4;
/**
 * How often a pump waiting for its transport to drain checks whether its
 * session was ended meanwhile: a session wakes only a pump waiting for frames.
 */
const stallCheckMs = 200;

/**
 * One session's transport as the pump drives it: a WebSocket, or a gRPC
 * Session stream on HTTP/2. It carries encoded SessionResponse messages out
 * and hands the pump encoded SessionRequest messages in.
 */
export interface FrameWire {
  /** False once the transport can no longer write. */
  readonly writable: boolean;
  /** Bytes written but not yet handed to the socket. */
  readonly buffered: number;
  /** Writes one SessionResponse; `flushed` runs once it left (or the write failed). */
  write(bytes: Uint8Array, flushed?: (err?: Error | null) => void): void;
  /** Holds writes until uncork, so a turn's frames leave together. */
  cork(): void;
  uncork(): void;
  /** Stops (and resumes) reading client frames. */
  pause(): void;
  resume(): void;
  /**
   * Ends the transport after the last frame: gracefully, or with the
   * session's error (also before any session exists, when its open failed).
   */
  finish(err: ConnectError | undefined): void;
}

/**
 * Serves one session over a FrameWire without async iterators or abort
 * signals, which an idle session would otherwise hold: frames go out as the
 * session queues them, requests run as they arrive. A class, so idle
 * sessions share its methods.
 *
 * With `subscribe` cursors it serves a Subscribe call instead: a session of
 * that kind, subscribed at once, that takes no client frames and stays open
 * after the client's half-close.
 */
export class FramePump {
  private s: Session | undefined;
  private runner: FrameRunner | undefined;
  /** Requests that arrive while the session opens, before it can take them. */
  private early: Uint8Array[] | undefined = [];
  private earlyBytes = 0;
  private earlyPaused = false;
  /** The client finished sending before the session opened. */
  private inputDone = false;
  private congested = false;
  /** When the transport last pushed back, and the timer that watches the session meanwhile. */
  private congestedAtMs = 0;
  private stallTimer: NodeJS.Timeout | undefined;
  private writing = false;
  private finished = false;
  // Bound once: handed to the session at every wait for frames.
  private readonly scheduleWrite = this.onReadable.bind(this);

  constructor(
    private readonly ctx: EdgeContext,
    private readonly wire: FrameWire,
    who: Caller,
    private readonly subscribe?: ConversationCursor[],
  ) {
    // Binary: every frame is encoded here (a JSON dialect converts the bytes).
    ctx.sessions.open(who, subscribe ? "subscribe" : "session", true).then(
      (s) => this.opened(s),
      (err: unknown) => {
        this.early = undefined;
        if (wire.writable) wire.finish(toConnectError(err));
      },
    );
  }

  /** One encoded SessionRequest from the client. */
  receive(data: Uint8Array) {
    if (this.early) {
      const { frameMaxBytes } = this.ctx.config.limits;
      // A held frame costs its bytes and its place in the list.
      this.earlyBytes += data.length + 64;
      if (this.earlyBytes > earlyMaxFrameSizes * frameMaxBytes) {
        this.fail(
          new ConnectError(
            `more than ${earlyMaxFrameSizes * frameMaxBytes} bytes of frames before the session is ready`,
            Code.ResourceExhausted,
          ),
        );
        return;
      }
      this.early.push(data);
      if (
        !this.earlyPaused &&
        (this.early.length >= earlyPauseFrames || this.earlyBytes > frameMaxBytes)
      ) {
        this.earlyPaused = true;
        this.wire.pause();
      }
      return;
    }
    const { s, runner } = this;
    if (!s || !runner || s.isClosed) return;
    let req: SessionRequest;
    try {
      req = decodeSessionRequest(data);
    } catch (err) {
      s.close(toConnectError(fail.invalid("malformed request message", err)));
      return;
    }
    s.heard();
    if (runner.start(req)) {
      this.wire.pause();
      runner.onFreed = () => this.wire.resume();
    }
  }

  /** Ends the session with `err` (bad input the transport itself detected). */
  fail(err: ConnectError) {
    if (this.s) this.s.close(err);
    else {
      this.early = undefined;
      this.wire.finish(err);
    }
  }

  /** The client finished sending: the session ends once its frames are handled and sent. */
  inputEnded() {
    if (this.subscribe) return;
    const { s, runner } = this;
    if (!s || !runner) {
      // Still opening: whatever arrived early is all there is.
      this.inputDone = true;
      return;
    }
    void runner.settled().then(() => s.close());
  }

  /** The transport is gone (closed by the client or the network). */
  closed() {
    this.early = undefined;
    this.unwatch();
    if (!this.s) return;
    this.s.close();
    void this.ctx.sessions.release(this.s);
  }

  private opened(s: Session) {
    this.s = s;
    const queued = this.early;
    this.early = undefined;
    if (!queued) {
      // The transport closed while the session opened.
      void this.ctx.sessions.release(s);
      return;
    }
    if (this.subscribe) {
      void s.subscribe(this.subscribe);
    } else {
      this.runner = new FrameRunner(this.ctx, s);
      for (const data of queued) this.receive(data);
      // Reading goes on, unless the runner is full and resumes it when it has room.
      if (this.earlyPaused && !this.runner.onFreed) this.wire.resume();
      this.earlyPaused = false;
      if (this.inputDone) this.inputEnded();
    }
    this.write();
  }

  /** Frames queued in one turn leave together. */
  private onReadable() {
    if (this.writing) return;
    this.writing = true;
    queueMicrotask(() => this.write());
  }

  /**
   * Writes what is queued until the transport pushes back; frames that wait
   * stay in the session's outbox, which sheds and falls behind as its limits say.
   */
  private write() {
    const { s } = this;
    this.writing = false;
    if (!s || this.finished || this.congested) return;
    // One write for everything queued, not one per frame.
    this.wire.cork();
    try {
      this.writeQueued(s);
    } catch (cause) {
      // A frame that cannot be encoded or written ends its own stream, never the process.
      this.ctx.log.error({ err: cause, sessionId: s.id }, "writing a session frame failed");
      const err = new ConnectError("writing a frame failed", Code.Internal, undefined, [], cause);
      s.close(err);
      this.end(s, err);
    } finally {
      this.wire.uncork();
    }
  }

  private writeQueued(s: Session) {
    const { wire } = this;
    for (;;) {
      if (!wire.writable) {
        s.close();
        return;
      }
      const f = s.take();
      if (!f) break;
      const bytes = encode(f);
      if (wire.buffered + bytes.length <= writeHighWater) {
        wire.write(bytes);
        continue;
      }
      // Sent last, so once it is written everything before it is too.
      this.congested = true;
      this.congestedAtMs = Date.now();
      this.stallTimer ??= setInterval(() => this.checkStalled(), stallCheckMs).unref();
      wire.write(bytes, (err) => {
        this.congested = false;
        if (!err) this.write();
      });
      return;
    }
    if (!s.isClosed) {
      s.onReadable(this.scheduleWrite);
      return;
    }
    this.end(s, s.error);
  }

  /**
   * While the transport pushes back: a session ended with an error (sweeper,
   * revocation, shutdown) has dropped its frames, so the call ends now rather
   * than once the client reads again; one that ended cleanly gets the lag
   * timeout to have its last frames read.
   */
  private checkStalled() {
    const { s } = this;
    if (!s || this.finished || !this.congested) {
      this.unwatch();
      return;
    }
    if (!s.isClosed) return;
    if (s.error) this.end(s, s.error);
    else if (Date.now() - this.congestedAtMs > this.ctx.config.limits.lagTimeoutMs) {
      this.end(s, new ConnectError("client reads too slowly", Code.ResourceExhausted));
    }
  }

  private unwatch() {
    clearInterval(this.stallTimer);
    this.stallTimer = undefined;
  }

  /** Ends the call with `err` (none: gracefully) and lets go of its session. */
  private end(s: Session, err: ConnectError | undefined) {
    if (this.finished) return;
    this.finished = true;
    this.unwatch();
    void this.ctx.sessions.release(s);
    try {
      this.wire.finish(err);
    } catch (cause) {
      this.ctx.log.error({ err: cause, sessionId: s.id }, "ending a session's transport failed");
    }
  }
}
