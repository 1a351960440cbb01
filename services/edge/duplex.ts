import { timestampNow } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import type { ServerFrame, SessionRequest } from "../../gen/chat/v1/chat_service_pb.js";
import { fail, toConnectError } from "../../lib/errors.js";
import type { Caller } from "./auth.js";
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
 * the stream (the transport throws from `input`).
 */
export async function* runDuplex(
  ctx: EdgeContext,
  who: Caller,
  input: AsyncIterable<SessionRequest>,
  signal: AbortSignal,
): AsyncGenerator<ServerFrame> {
  const s = await ctx.sessions.open(who, "session");
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
  const chains = new Map<string, Promise<void>>();
  let inflight = 0;
  let freed: (() => void) | undefined;
  for await (const req of input) {
    if (s.isClosed) break;
    s.heard();
    while (inflight >= maxInflight) await new Promise<void>((r) => (freed = r));
    const key = conversationOf(req);
    inflight++;
    const run = (chains.get(key) ?? Promise.resolve()).then(() => handle(ctx, s, req));
    const tail = run.finally(() => {
      inflight--;
      const f = freed;
      freed = undefined;
      f?.();
      if (chains.get(key) === tail) chains.delete(key);
    });
    chains.set(key, tail);
  }
  await Promise.all(chains.values());
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
  const accepted = () => {
    if (frameId) s.push(frame({ case: "accepted", value: {} }, frameId));
  };
  try {
    switch (a.case) {
      case "subscribe":
        checkCursors(a.value.cursors);
        accepted();
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
        accepted();
        return;
      case "markRead":
        await ctx.actions.markRead(who, a.value);
        accepted();
        return;
      case "setTyping":
        await ctx.actions.setTyping(who, a.value);
        accepted();
        return;
      case "watchPresence":
        for (const p of await ctx.actions.watchPresence(who, a.value.userIds)) {
          s.push(frame({ case: "presence", value: p }, frameId));
        }
        accepted();
        return;
      case "unwatchPresence":
        await ctx.actions.unwatchPresence(who, a.value.userIds);
        accepted();
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
