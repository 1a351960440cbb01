import {
  type Client,
  Code,
  ConnectError,
  createClient,
  type Interceptor,
} from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { ChatService, type ServerFrame } from "../../gen/chat/v1/chat_service_pb.js";
import { DevService } from "../../gen/chat/v1/dev_service_pb.js";
import type { Event } from "../../gen/chat/v1/event_pb.js";

/*
 * A tiny browser client, bundled by the browser test and driven from it
 * through `globalThis.chatTest`. It takes the path every web app takes:
 * unary calls plus the Subscribe server stream, over fetch. Everything it
 * returns is plain JSON (seqs as strings) so it crosses page.evaluate.
 */

export type WebProtocol = "connect" | "grpc-web";

export interface SeenEvent {
  frame: "event" | "sync";
  conversationId: string;
  seq: string;
  actor: string;
  text: string;
}

export interface StreamState {
  frames: string[];
  events: SeenEvent[];
  error: string | undefined;
  ended: boolean;
}

export interface CallOutcome {
  ok: boolean;
  code: string;
  message: string;
}

function transport(baseUrl: string, protocol: WebProtocol, token = "") {
  const auth: Interceptor = (next) => (req) => {
    if (token) req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  // Connect in its default JSON form, gRPC-Web in binary, to cover both encodings.
  return protocol === "connect"
    ? createConnectTransport({ baseUrl, interceptors: [auth] })
    : createGrpcWebTransport({ baseUrl, interceptors: [auth] });
}

const seen = (frame: SeenEvent["frame"], e: Event): SeenEvent => ({
  frame,
  conversationId: e.conversationId,
  seq: e.seq.toString(),
  actor: e.actorUserId,
  text: e.kind.case === "messagePosted" ? (e.kind.value.content?.text ?? "") : "",
});

let chat: Client<typeof ChatService> | undefined;
let abort: AbortController | undefined;
const state: StreamState = { frames: [], events: [], error: undefined, ended: false };

function record(f: ServerFrame) {
  const c = f.frame;
  state.frames.push(c.case ?? "unknown");
  if (c.case === "event") state.events.push(seen("event", c.value));
  if (c.case === "sync") state.events.push(...c.value.events.map((e) => seen("sync", e)));
}

const client = () => {
  if (!chat) throw new Error("call login first");
  return chat;
};

export const chatTest = {
  async login(baseUrl: string, protocol: WebProtocol, userName: string) {
    const dev = createClient(DevService, transport(baseUrl, protocol));
    const t = await dev.issueDevToken({ userName });
    chat = createClient(ChatService, transport(baseUrl, protocol, t.token));
    return { userId: t.userId, deviceId: t.deviceId };
  },

  async direct(peerUserId: string) {
    const res = await client().createDirectConversation({ peerUserId });
    return res.conversation!.conversationId;
  },

  /** Opens Subscribe; frames accumulate in state(). */
  subscribe() {
    abort = new AbortController();
    const signal = abort.signal;
    void (async () => {
      try {
        for await (const res of client().subscribe({ cursors: [] }, { signal })) {
          if (res.frame) record(res.frame);
        }
      } catch (err) {
        state.error = ConnectError.from(err).message;
      }
      state.ended = true;
    })();
  },

  async send(conversationId: string, clientMsgId: string, text: string) {
    const res = await client().send({ conversationId, clientMsgId, content: { text } });
    return { seq: res.event!.seq.toString(), duplicate: res.duplicate };
  },

  state(): StreamState {
    return state;
  },

  stop() {
    abort?.abort();
  },

  /** One unary call that needs no token; reports how it ended instead of throwing. */
  async probe(baseUrl: string, protocol: WebProtocol): Promise<CallOutcome> {
    try {
      await createClient(DevService, transport(baseUrl, protocol)).issueDevToken({
        userName: "probe",
      });
      return { ok: true, code: "", message: "" };
    } catch (err) {
      const ce = ConnectError.from(err);
      return { ok: false, code: Code[ce.code], message: ce.message };
    }
  },
};

export type ChatTest = typeof chatTest;

(globalThis as unknown as { chatTest: ChatTest }).chatTest = chatTest;
