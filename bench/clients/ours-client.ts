import { create, toBinary } from "@bufbuild/protobuf";
import WebSocket from "ws";
import { SessionRequestSchema } from "../../gen/chat/v1/chat_service_pb.js";
import { decodeFrame, encodeSend, type LeanEvent } from "./ours-wire.js";

/** A bench client's session on our WebSocket endpoint (binary protobuf frames). */
export interface OursConn {
  /** Posts `body` as a text message; the durable ack arrives through onAck. */
  send(conversationId: string, clientMsgId: string, body: string): void;
  heartbeat(): void;
  /** Abrupt: the socket is destroyed without a close handshake. */
  drop(): void;
  close(): void;
  readonly alive: boolean;
}

export interface OursConnOptions {
  host: string;
  port: number;
  token: string;
  localAddress?: string;
  /** "I hold every event up to this seq" per conversation, for resume. */
  cursors?: Record<string, number>;
  /** Every event: from sync batches (fromSync) and live. */
  onEvent?: (event: LeanEvent, fromSync: boolean) => void;
  /** The durable ack of one of this stream's sends, with the message text. */
  onAck?: (body: string) => void;
  onClose?: () => void;
  timeoutMs?: number;
}

const heartbeatFrame = toBinary(
  SessionRequestSchema,
  create(SessionRequestSchema, { action: { case: "heartbeat", value: {} } }),
);

/**
 * Opens a session, subscribes with the cursors and resolves once
 * sync_complete arrived (everything missed was delivered before it).
 */
export function connectOurs(opts: OursConnOptions): Promise<OursConn> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${opts.host}:${opts.port}/v1/ws`, {
      headers: { authorization: `Bearer ${opts.token}` },
      perMessageDeflate: false,
      ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
    });
    let ready = false;
    const timer = setTimeout(() => {
      if (!ready) {
        ws.terminate();
        reject(new Error("session setup timed out"));
      }
    }, opts.timeoutMs ?? 30_000);
    const conn: OursConn = {
      send(conversationId, clientMsgId, body) {
        if (ws.readyState !== WebSocket.OPEN) return;
        ws.send(encodeSend(conversationId, clientMsgId, body));
      },
      heartbeat() {
        if (ws.readyState === WebSocket.OPEN) ws.send(heartbeatFrame);
      },
      drop() {
        ws.terminate();
      },
      close() {
        ws.close(1000);
      },
      get alive() {
        return ws.readyState === WebSocket.OPEN;
      },
    };
    ws.on("open", () => {
      const cursors = Object.entries(opts.cursors ?? {}).map(([conversationId, seq]) => ({
        conversationId,
        seq: BigInt(seq),
      }));
      ws.send(
        toBinary(
          SessionRequestSchema,
          create(SessionRequestSchema, { action: { case: "subscribe", value: { cursors } } }),
        ),
      );
    });
    ws.on("message", (data: Buffer) => {
      const f = decodeFrame(data);
      switch (f.case) {
        case "event":
          opts.onEvent?.(f.event, false);
          break;
        case "sendAck":
          if (f.event) opts.onAck?.(f.event.text);
          break;
        case "sync":
          for (const e of f.events) opts.onEvent?.(e, true);
          break;
        case "syncComplete":
          ready = true;
          clearTimeout(timer);
          resolve(conn);
          break;
        case "error":
          if (!ready) {
            clearTimeout(timer);
            reject(new Error(`session error ${f.code}: ${f.message}`));
          }
          break;
        default:
      }
    });
    ws.on("error", (err) => {
      if (!ready) {
        clearTimeout(timer);
        reject(err);
      }
    });
    ws.on("close", () => {
      if (!ready) {
        clearTimeout(timer);
        reject(new Error("session closed during setup"));
      }
      opts.onClose?.();
    });
  });
}
