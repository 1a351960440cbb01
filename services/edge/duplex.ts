import { timestampNow } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import type { ServerFrame, SessionRequest } from "../../gen/chat/v1/chat_service_pb.js";
import { fail, toConnectError } from "../../lib/errors.js";
import { type Caller, requestBudget, spendRequestBudget } from "./auth.js";
import type { EdgeContext } from "./context.js";
import { frame, type Session } from "./session.js";
import { checkCursors } from "./validate.js";

/** The error a stream ends with when its call is aborted (shutdown) rather than closed by the client. */
export const abortReason = (signal: AbortSignal) =>
  signal.reason instanceof ConnectError ? signal.reason : undefined;

/** Client frames being processed at once on one stream; reading pauses beyond it. */
const maxInflight = 64;

/**
 * Runs a full-duplex session over any transport (gRPC bidi stream,
 * WebSocket). Frames for one conversation are processed in arrival order;
 * different conversations proceed in parallel. A frame that fails gets an
 * error frame and the stream goes on; a frame that cannot be decoded ends
 * the stream (the transport throws from `input`). `binary`: the call writes
 * frames in binary protobuf (see Session).
 */
export async function* runDuplex(
  ctx: EdgeContext,
  who: Caller,
  input: AsyncIterable<SessionRequest>,
  signal: AbortSignal,
  binary: boolean,
): AsyncGenerator<ServerFrame> {
  const s = await ctx.sessions.open(who, "session", binary);
  const stop = () => s.close(abortReason(signal));
  signal.addEventListener("abort", stop);
  void readFrames(ctx, s, input).then(
    () => s.close(),
    (err: unknown) => s.close(toConnectError(err)),
  );
  try {
    yield* s.frames();
  } finally {
    signal.removeEventListener("abort", stop);
    await ctx.sessions.release(s);
  }
}

async function readFrames(ctx: EdgeContext, s: Session, input: AsyncIterable<SessionRequest>) {
  const runner = new FrameRunner(ctx, s);
  for await (const req of input) {
    if (s.isClosed) break;
    s.heard();
    if (runner.start(req)) {
      await new Promise<void>((r) => {
        runner.onFreed = r;
      });
    }
  }
  await runner.settled();
}

/**
 * Runs one stream's client frames: those of one conversation in arrival
 * order, different conversations in parallel, at most `maxInflight` at once
 * (later ones wait their turn; the transport stops reading meanwhile).
 */
export class FrameRunner {
  /** Called once when a full runner has room again. */
  onFreed: (() => void) | undefined;
  private inflight = 0;
  // Created on first use: an idle stream keeps neither.
  private chains: Map<string, Promise<void>> | undefined;
  private waiting: SessionRequest[] | undefined;

  constructor(
    private readonly ctx: EdgeContext,
    private readonly s: Session,
  ) {}

  /** Starts (or queues) a frame; true when the transport should stop reading until onFreed. */
  start(req: SessionRequest): boolean {
    if (this.inflight >= maxInflight) {
      this.waiting ??= [];
      this.waiting.push(req);
      return true;
    }
    const key = conversationOf(req);
    this.inflight++;
    this.chains ??= new Map();
    const chains = this.chains;
    const prev = chains.get(key);
    const run = prev
      ? prev.then(() => handle(this.ctx, this.s, req))
      : handle(this.ctx, this.s, req);
    const tail: Promise<void> = run.then(
      () => this.finished(key, tail),
      () => this.finished(key, tail),
    );
    chains.set(key, tail);
    return this.inflight >= maxInflight;
  }

  /** Resolves when every started frame is done. */
  async settled() {
    while (this.chains?.size) await Promise.all(this.chains.values());
  }

  private finished(key: string, tail: Promise<void>) {
    this.inflight--;
    if (this.chains?.get(key) === tail) this.chains.delete(key);
    if (this.chains?.size === 0) this.chains = undefined;
    const next = this.waiting?.shift();
    if (next) {
      if (!this.s.isClosed) this.start(next);
      return;
    }
    if (this.inflight < maxInflight && this.onFreed) {
      const freed = this.onFreed;
      this.onFreed = undefined;
      freed();
    }
  }
}

/** Answers a frame that has no other reply, when the client numbered it. */
function accepted(s: Session, frameId: string) {
  if (frameId) s.push(frame({ case: "accepted", value: {} }, frameId));
}

function conversationOf(req: SessionRequest): string {
  const a = req.action;
  switch (a.case) {
    case "send":
    case "markDelivered":
    case "markRead":
    case "setTyping":
      return a.value.conversationId;
    default:
      return "";
  }
}

async function handle(ctx: EdgeContext, s: Session, req: SessionRequest): Promise<void> {
  const who = s.caller;
  const a = req.action;
  const frameId = req.frameId;
  try {
    // A frame costs what its unary call costs: sends and typing have their own buckets.
    if (a.case !== "send" && a.case !== "setTyping" && a.case !== undefined) {
      await spendRequestBudget(requestBudget(ctx.soft.limiter, ctx.config.limits), who.userId);
    }
    switch (a.case) {
      case "subscribe":
        checkCursors(a.value.cursors);
        accepted(s, frameId);
        await s.subscribe(a.value.cursors);
        return;
      case "send": {
        const { conversationId, clientMsgId } = a.value;
        s.sendStarted(conversationId, clientMsgId, frameId);
        try {
          const res = await ctx.actions.send(who, a.value);
          s.sendFinished(conversationId, clientMsgId, frameId, res);
        } catch (err) {
          s.sendFailed(conversationId, clientMsgId, frameId);
          throw err;
        }
        return;
      }
      case "markDelivered":
        await ctx.actions.markDelivered(who, a.value);
        accepted(s, frameId);
        return;
      case "markRead":
        await ctx.actions.markRead(who, a.value);
        accepted(s, frameId);
        return;
      case "setTyping":
        await ctx.actions.setTyping(who, a.value);
        accepted(s, frameId);
        return;
      case "watchPresence":
        for (const p of await ctx.actions.watchPresence(who, a.value.userIds)) {
          s.push(frame({ case: "presence", value: p }, frameId));
        }
        accepted(s, frameId);
        return;
      case "unwatchPresence":
        await ctx.actions.unwatchPresence(who, a.value.userIds);
        accepted(s, frameId);
        return;
      case "heartbeat":
        await ctx.actions.heartbeat(who);
        s.push(frame({ case: "heartbeat", value: { serverTime: timestampNow() } }, frameId));
        return;
      case undefined:
        throw fail.invalid("frame has no action");
    }
  } catch (err) {
    const ce = toConnectError(err);
    s.push(
      frame(
        {
          case: "error",
          value: {
            code: ce.code,
            message: ce.rawMessage,
            clientMsgId: a.case === "send" ? a.value.clientMsgId : "",
          },
        },
        frameId,
      ),
    );
  }
}
