import { create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  type CallOptions,
  type Client,
  type ConnectError,
  createClient,
  type Interceptor,
  type Transport,
} from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import {
  ChatService,
  HistoryDirection,
  type ServerFrame,
  type SessionRequest,
  SessionRequestSchema,
} from "../../gen/chat/v1/chat_service_pb.js";
import { DevService } from "../../gen/chat/v1/dev_service_pb.js";
import type { Event } from "../../gen/chat/v1/event_pb.js";
import type { ConversationCursor } from "../../gen/chat/v1/model_pb.js";
import { PartnerService } from "../../gen/chat/v1/partner_service_pb.js";
import { Pushable } from "../../lib/pushable.js";
import { partner, type TestServer } from "./server.js";

export type Protocol = "grpc" | "connect" | "connect-json" | "grpc-web";

/** A transport for each wire protocol the edge serves. */
export function transport(
  url: string,
  protocol: Protocol,
  interceptors: Interceptor[] = [],
): Transport {
  switch (protocol) {
    case "grpc":
      return createGrpcTransport({ baseUrl: url, interceptors });
    case "connect":
      return createConnectTransport({ baseUrl: url, httpVersion: "1.1", interceptors });
    case "connect-json":
      return createConnectTransport({
        baseUrl: url,
        httpVersion: "1.1",
        useBinaryFormat: false,
        interceptors,
      });
    case "grpc-web":
      return createGrpcWebTransport({ baseUrl: url, httpVersion: "1.1", interceptors });
  }
}

const bearer =
  (token: string): Interceptor =>
  (next) =>
  (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };

export interface User {
  userId: string;
  deviceId: string;
  token: string;
  /** ChatService over gRPC (HTTP/2). */
  chat: Client<typeof ChatService>;
  /** ChatService over the given protocol. */
  via(protocol: Protocol): Client<typeof ChatService>;
}

/** Logs in through DevService and returns authenticated clients. */
export async function login(server: TestServer, userName: string, deviceId = ""): Promise<User> {
  const dev = createClient(DevService, transport(server.url, "grpc"));
  const t = await dev.issueDevToken({ userName, deviceId });
  return userFromToken(server, t.userId, t.deviceId, t.token);
}

export function userFromToken(
  server: TestServer,
  userId: string,
  deviceId: string,
  token: string,
): User {
  const via = (p: Protocol) => createClient(ChatService, transport(server.url, p, [bearer(token)]));
  return { userId, deviceId, token, chat: via("grpc"), via };
}

/** Gets or creates the direct conversation of two users; returns its id. */
export async function direct(a: User, b: User): Promise<string> {
  const res = await a.chat.createDirectConversation({ peerUserId: b.userId });
  return res.conversation!.conversationId;
}

/** Creates a group owned by `owner` with the other users as members; returns its id. */
export async function group(owner: User, members: User[], title = "g"): Promise<string> {
  const res = await owner.chat.createGroupConversation({
    title,
    memberUserIds: members.map((m) => m.userId),
  });
  return res.conversation!.conversationId;
}

/** PartnerService with the test partner's credentials. */
export function partnerClient(server: TestServer, secret = partner.secret) {
  const basic = Buffer.from(`${partner.key}:${secret}`).toString("base64");
  const auth: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Basic ${basic}`);
    return next(req);
  };
  return createClient(PartnerService, transport(server.url, "grpc", [auth]));
}

type FrameCase = NonNullable<ServerFrame["frame"]["case"]>;
type FrameValue<K extends FrameCase> =
  Extract<ServerFrame["frame"], { case: K }> extends { value: infer V } ? V : never;

/** Collects server frames of a stream and waits for conditions on them. */
export class Frames {
  readonly all: ServerFrame[] = [];
  error: ConnectError | undefined;
  ended = false;
  private waiters = new Set<() => void>();

  add(f: ServerFrame) {
    this.all.push(f);
    this.poke();
  }
  end(err?: ConnectError) {
    this.ended = true;
    this.error = err;
    this.poke();
  }
  private poke() {
    for (const w of [...this.waiters]) w();
  }

  /** Events delivered live or in sync batches, and send-acks, in arrival order. */
  events(conversationId?: string): Event[] {
    const out: Event[] = [];
    for (const f of this.all) {
      const c = f.frame;
      if (c.case === "event") out.push(c.value);
      else if (c.case === "sync") out.push(...c.value.events);
      else if (c.case === "sendAck" && c.value.event && !c.value.duplicate) out.push(c.value.event);
    }
    return conversationId ? out.filter((e) => e.conversationId === conversationId) : out;
  }

  of<K extends FrameCase>(kind: K): FrameValue<K>[] {
    return this.all.flatMap((f) => (f.frame.case === kind ? [f.frame.value as FrameValue<K>] : []));
  }

  /** Resolves once `pred` holds; rejects after timeoutMs with what was seen. */
  async until(pred: (f: Frames) => boolean, timeoutMs = 5000, what = "condition"): Promise<void> {
    if (pred(this)) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(
          new Error(
            `timed out waiting for ${what}; frames: ${this.all.map((f) => f.frame.case).join(",")}${this.error ? `; error: ${this.error.message}` : ""}`,
          ),
        );
      }, timeoutMs);
      const check = () => {
        if (pred(this)) {
          clearTimeout(timer);
          this.waiters.delete(check);
          resolve();
        }
      };
      this.waiters.add(check);
    });
  }

  /** Resolves once catch-up is over (the sync_complete frame arrived). */
  synced(timeoutMs = 5000) {
    return this.until((f) => f.of("syncComplete").length > 0, timeoutMs, "sync_complete");
  }

  untilEnded(timeoutMs = 5000) {
    return this.until((f) => f.ended, timeoutMs, "stream end");
  }
}

export interface OpenStream {
  frames: Frames;
  /** Aborts the call (like a dropped connection). */
  abort(): void;
}

export interface OpenSession extends OpenStream {
  send(frame: MessageInitShape<typeof SessionRequestSchema>): void;
  /** Half-closes the request side. */
  end(): void;
}

/** Opens a bidi Session stream; `subscribe` sends the subscribe frame first. */
export function openSession(
  client: Client<typeof ChatService>,
  opts: {
    subscribe?: MessageInitShape<typeof SessionRequestSchema>["action"] | false;
    cursors?: ConversationCursor[];
    /** Call options, e.g. a deadline (timeoutMs). */
    call?: CallOptions;
  } = {},
): OpenSession {
  const input = new Pushable<SessionRequest>();
  const frames = new Frames();
  const ac = new AbortController();
  if (opts.subscribe !== false) {
    input.push(
      create(SessionRequestSchema, {
        action: { case: "subscribe", value: { cursors: opts.cursors ?? [] } },
      }),
    );
  }
  void (async () => {
    try {
      for await (const res of client.session(input, { ...opts.call, signal: ac.signal })) {
        if (res.frame) frames.add(res.frame);
      }
      frames.end();
    } catch (err) {
      frames.end(err as ConnectError);
    }
  })();
  return {
    frames,
    send: (f) => input.push(create(SessionRequestSchema, f)),
    end: () => input.end(),
    abort: () => ac.abort(),
  };
}

/** Opens a Subscribe stream (the browser path). */
export function openSubscribe(
  client: Client<typeof ChatService>,
  cursors: ConversationCursor[] = [],
): OpenStream {
  const frames = new Frames();
  const ac = new AbortController();
  void (async () => {
    try {
      for await (const res of client.subscribe({ cursors }, { signal: ac.signal })) {
        if (res.frame) frames.add(res.frame);
      }
      frames.end();
    } catch (err) {
      frames.end(err as ConnectError);
    }
  })();
  return { frames, abort: () => ac.abort() };
}

/** Waits until every given stream has finished catching up. */
export async function synced(...streams: OpenStream[]) {
  for (const s of streams) await s.frames.synced();
}

/** Asserts nothing more arrives for a while (for "exactly once" checks). */
export const settle = (ms = 150) => new Promise((r) => setTimeout(r, ms));

/** A conversation cursor. */
export const cursor = (conversationId: string, seq: bigint) =>
  ({ conversationId, seq }) as ConversationCursor;

export const seqs = (events: Event[]) => events.map((e) => Number(e.seq));

/** A conversation's whole history as `user` may read it, paged forward from the start. */
export async function readAll(
  user: User,
  conversationId: string,
  pageSize = 500,
): Promise<Event[]> {
  const events: Event[] = [];
  for (let more = true; more; ) {
    const page = await user.chat.getHistory({
      conversationId,
      anchorSeq: BigInt(events.length),
      direction: HistoryDirection.FORWARD,
      limit: pageSize,
    });
    events.push(...page.events);
    more = page.hasMore && page.events.length > 0;
  }
  return events;
}
