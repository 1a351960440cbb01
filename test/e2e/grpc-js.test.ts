import { resolve } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterEach, describe, expect, it } from "vitest";
import { settle } from "../helpers/clients.js";
import { startServer, type TestServer } from "../helpers/server.js";

/*
 * The native-app path: a stock @grpc/grpc-js client built at run time from
 * the same .proto files the server is generated from, with nothing of ours
 * on the client side. 64-bit integers arrive as strings (longs: String).
 */

const protoDir = resolve(import.meta.dirname, "../../proto");
const definition = protoLoader.loadSync(
  ["chat/v1/chat_service.proto", "chat/v1/dev_service.proto", "grpc/health/v1/health.proto"],
  { includeDirs: [protoDir], longs: String, enums: String, defaults: true, oneofs: true },
);
const pkg = grpc.loadPackageDefinition(definition) as unknown as {
  chat: { v1: Record<"ChatService" | "DevService", grpc.ServiceClientConstructor> };
  grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } };
};

// The message shapes proto-loader produces (camelCase, oneof case in a string field).
interface Timestamp {
  seconds: string;
  nanos: number;
}
interface EventMsg {
  conversationId: string;
  seq: string;
  eventId: string;
  actorUserId: string;
  actorDeviceId: string;
  clientMsgId: string;
  createdAt: Timestamp | null;
  kind: string;
  messagePosted?: { content: { text: string } | null } | null;
}
interface SyncBatchMsg {
  conversationId: string;
  events: EventMsg[];
  gap: boolean;
  headSeq: string;
}
interface ServerFrameMsg {
  replyToFrameId: string;
  frame: string;
  ready?: { sessionId: string; userId: string; deviceId: string; heartbeatIntervalMs: number };
  sendAck?: { event: EventMsg | null; duplicate: boolean };
  event?: EventMsg;
  sync?: SyncBatchMsg;
  error?: { code: number; message: string; clientMsgId: string };
  heartbeat?: { serverTime: Timestamp | null };
}
interface ConversationMsg {
  conversationId: string;
  kind: string;
  headSeq: string;
}

type Callback = (err: grpc.ServiceError | null, res: unknown) => void;
type UnaryFn = (req: object, md: grpc.Metadata, opts: grpc.CallOptions, cb: Callback) => void;

/** Calls a unary method and resolves with its response (or rejects with the ServiceError). */
function unary<T>(client: grpc.Client, method: string, req: object, md = new grpc.Metadata()) {
  const fn = (client as unknown as Record<string, UnaryFn>)[method]!;
  return new Promise<T>((res, rej) => {
    fn.call(client, req, md, { deadline: Date.now() + 10_000 }, (err, out) =>
      err ? rej(err) : res(out as T),
    );
  });
}

/** Resolves with the status code a call failed with. */
async function failure(call: Promise<unknown>): Promise<{ code: grpc.status; details: string }> {
  const err = (await call.then(
    () => undefined,
    (e: unknown) => e,
  )) as grpc.ServiceError | undefined;
  if (!err) throw new Error("the call succeeded");
  return { code: err.code, details: err.details };
}

const bearer = (token: string) => {
  const md = new grpc.Metadata();
  md.set("authorization", `Bearer ${token}`);
  return md;
};

/** Collects the frames of a grpc-js stream and waits for conditions on them. */
class Collected<T> {
  readonly items: T[] = [];
  error: grpc.ServiceError | undefined;
  ended = false;
  private waiters = new Set<() => void>();

  constructor(stream: grpc.ClientReadableStream<T> | grpc.ClientDuplexStream<object, T>) {
    stream.on("data", (d: T) => {
      this.items.push(d);
      this.poke();
    });
    stream.on("error", (e: grpc.ServiceError) => {
      this.error = e;
      this.ended = true;
      this.poke();
    });
    stream.on("end", () => {
      this.ended = true;
      this.poke();
    });
  }

  private poke() {
    for (const w of [...this.waiters]) w();
  }

  async until(pred: () => boolean, what: string, timeoutMs = 8000) {
    if (pred()) return;
    await new Promise<void>((res, rej) => {
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        rej(
          new Error(
            `timed out waiting for ${what}; got ${JSON.stringify(this.items).slice(0, 2000)}`,
          ),
        );
      }, timeoutMs);
      const check = () => {
        if (!pred()) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        res();
      };
      this.waiters.add(check);
    });
  }
}

/** Frames of a Session or Subscribe stream. */
class FrameLog extends Collected<{ frame: ServerFrameMsg }> {
  get frames() {
    return this.items.map((i) => i.frame);
  }
  of(kind: string) {
    return this.frames.filter((f) => f.frame === kind);
  }
  /** Events from sync batches and live event frames, in arrival order. */
  events(conversationId: string): EventMsg[] {
    return this.frames
      .flatMap((f) => (f.frame === "sync" ? f.sync!.events : f.frame === "event" ? [f.event!] : []))
      .filter((e) => e.conversationId === conversationId);
  }
}

let server: TestServer | undefined;
const clients: grpc.Client[] = [];
const calls: grpc.Call[] = [];

afterEach(async () => {
  for (const c of calls.splice(0)) c.cancel();
  for (const c of clients.splice(0)) c.close();
  await server?.destroy();
  server = undefined;
});

function client(ctor: grpc.ServiceClientConstructor): grpc.Client {
  const c = new ctor(`127.0.0.1:${server!.port}`, grpc.credentials.createInsecure());
  clients.push(c);
  return c;
}

interface GrpcUser {
  userId: string;
  deviceId: string;
  md: grpc.Metadata;
}

async function devLogin(userName: string, deviceId = ""): Promise<GrpcUser> {
  const res = await unary<{
    token: string;
    userId: string;
    deviceId: string;
    expiresAt: Timestamp;
  }>(client(pkg.chat.v1.DevService), "IssueDevToken", { userName, deviceId });
  return { userId: res.userId, deviceId: res.deviceId, md: bearer(res.token) };
}

function openSession(chat: grpc.Client, md: grpc.Metadata) {
  const stream = (
    chat as unknown as {
      Session(md: grpc.Metadata): grpc.ClientDuplexStream<object, { frame: ServerFrameMsg }>;
    }
  ).Session(md);
  calls.push(stream);
  return { stream, log: new FrameLog(stream) };
}

function openSubscribe(chat: grpc.Client, md: grpc.Metadata, cursors: object[] = []) {
  const stream = (
    chat as unknown as {
      Subscribe(
        req: object,
        md: grpc.Metadata,
      ): grpc.ClientReadableStream<{ frame: ServerFrameMsg }>;
    }
  ).Subscribe({ cursors }, md);
  calls.push(stream);
  return { stream, log: new FrameLog(stream) };
}

async function directChat(chat: grpc.Client, a: GrpcUser, b: GrpcUser) {
  const res = await unary<{ conversation: ConversationMsg; created: boolean }>(
    chat,
    "CreateDirectConversation",
    { peerUserId: b.userId },
    a.md,
  );
  return res.conversation.conversationId;
}

describe("grpc-js client", () => {
  it("gets a dev token and makes unary calls with authorization metadata", async () => {
    server = await startServer();
    const dev = client(pkg.chat.v1.DevService);
    const token = await unary<{
      token: string;
      userId: string;
      deviceId: string;
      expiresAt: Timestamp;
    }>(dev, "IssueDevToken", { userName: "alice" });
    expect(token.userId).toBe("alice");
    expect(token.deviceId).toBe("alice-dev");
    expect(token.expiresAt.seconds).toMatch(/^\d+$/);
    expect(Number(token.expiresAt.seconds) * 1000).toBeGreaterThan(Date.now());
    const alice = { userId: "alice", deviceId: "alice-dev", md: bearer(token.token) };
    const bob = await devLogin("bob");

    const chat = client(pkg.chat.v1.ChatService);
    const me = await unary<{ user: { userId: string }; device: { deviceId: string } }>(
      chat,
      "GetMe",
      {},
      alice.md,
    );
    expect(me.user.userId).toBe("alice");
    expect(me.device.deviceId).toBe("alice-dev");

    const created = await unary<{ conversation: ConversationMsg; created: boolean }>(
      chat,
      "CreateDirectConversation",
      { peerUserId: "bob" },
      alice.md,
    );
    expect(created.created).toBe(true);
    expect(created.conversation.kind).toBe("CONVERSATION_KIND_DIRECT");
    expect(created.conversation.headSeq).toBe("1");
    const id = created.conversation.conversationId;

    const sent = await unary<{ event: EventMsg; duplicate: boolean }>(
      chat,
      "Send",
      { conversationId: id, clientMsgId: "g1", content: { text: "from grpc-js" } },
      alice.md,
    );
    expect(sent.duplicate).toBe(false);
    expect(sent.event.seq).toBe("2");
    expect(sent.event.kind).toBe("messagePosted");
    expect(sent.event.actorDeviceId).toBe("alice-dev");
    const retry = await unary<{ event: EventMsg; duplicate: boolean }>(
      chat,
      "Send",
      { conversationId: id, clientMsgId: "g1", content: { text: "from grpc-js" } },
      alice.md,
    );
    expect(retry.duplicate).toBe(true);
    expect(retry.event.eventId).toBe(sent.event.eventId);

    const history = await unary<{ events: EventMsg[]; hasMore: boolean; headSeq: string }>(
      chat,
      "GetHistory",
      { conversationId: id, limit: 10 },
      bob.md,
    );
    expect(history.events.map((e) => e.seq)).toEqual(["1", "2"]);
    expect(history.events.map((e) => e.kind)).toEqual(["conversationCreated", "messagePosted"]);
    expect(history.events[1]!.messagePosted!.content!.text).toBe("from grpc-js");
    expect(history.headSeq).toBe("2");
    expect(history.hasMore).toBe(false);
  });

  it("runs a bidi Session: subscribe, sync, send acked by frame id, exactly-once delivery to other devices", async () => {
    server = await startServer();
    const alice = await devLogin("alice", "alice-phone");
    const aliceLaptop = await devLogin("alice", "alice-laptop");
    const bob = await devLogin("bob");
    const chat = client(pkg.chat.v1.ChatService);
    const id = await directChat(chat, alice, bob);

    const sender = openSession(chat, alice.md);
    // A second connection, as another app would have.
    const others = [
      openSession(client(pkg.chat.v1.ChatService), aliceLaptop.md),
      openSession(chat, bob.md),
    ];
    for (const s of [sender, ...others]) {
      s.stream.write({ frameId: "sub", subscribe: { cursors: [] } });
    }
    for (const s of [sender, ...others]) {
      await s.log.until(() => s.log.of("syncComplete").length > 0, "sync_complete");
    }
    const ready = sender.log.frames[0]!;
    expect(ready.frame).toBe("ready");
    expect(ready.ready).toMatchObject({ userId: "alice", deviceId: "alice-phone" });
    expect(ready.ready!.heartbeatIntervalMs).toBeGreaterThan(0);
    expect(sender.log.of("accepted")[0]).toBeDefined();
    // The creation event (seq 1) came by sync, since no cursor was given.
    expect(sender.log.events(id).map((e) => e.seq)).toEqual(["1"]);

    sender.stream.write({
      frameId: "f-42",
      send: { conversationId: id, clientMsgId: "s1", content: { text: "over the stream" } },
    });
    await sender.log.until(() => sender.log.of("sendAck").length > 0, "send_ack");
    const ackFrame = sender.log.of("sendAck")[0]!;
    expect(ackFrame.replyToFrameId).toBe("f-42");
    expect(ackFrame.sendAck!.event!.seq).toBe("2");
    expect(ackFrame.sendAck!.duplicate).toBe(false);

    for (const s of others) {
      await s.log.until(() => s.log.events(id).some((e) => e.seq === "2"), "the event");
    }
    sender.stream.write({ frameId: "hb", heartbeat: {} });
    await sender.log.until(() => sender.log.of("heartbeat").length > 0, "heartbeat");
    expect(sender.log.of("heartbeat")[0]!.replyToFrameId).toBe("hb");
    expect(sender.log.of("heartbeat")[0]!.heartbeat!.serverTime!.seconds).toMatch(/^\d+$/);
    await settle(300);
    for (const s of others) {
      const got = s.log.events(id).filter((e) => e.clientMsgId === "s1");
      expect(got).toHaveLength(1);
      expect(got[0]!.messagePosted!.content!.text).toBe("over the stream");
    }
    // The sending stream gets the ack in place of the event.
    expect(sender.log.of("event")).toHaveLength(0);

    // A bad frame gets an error frame; the stream goes on.
    sender.stream.write({
      frameId: "bad",
      send: { conversationId: id, clientMsgId: "", content: { text: "x" } },
    });
    await sender.log.until(() => sender.log.of("error").length > 0, "error frame");
    const bad = sender.log.of("error")[0]!;
    expect(bad.replyToFrameId).toBe("bad");
    expect(bad.error!.code).toBe(grpc.status.INVALID_ARGUMENT);

    // Half-closing ends the stream cleanly.
    sender.stream.end();
    await sender.log.until(() => sender.log.ended, "stream end");
    expect(sender.log.error).toBeUndefined();
  });

  it("delivers through the Subscribe server stream: sync from a cursor, then live events", async () => {
    server = await startServer();
    const [alice, bob] = [await devLogin("alice"), await devLogin("bob")];
    const chat = client(pkg.chat.v1.ChatService);
    const id = await directChat(chat, alice, bob);
    for (const n of [1, 2, 3]) {
      await unary(
        chat,
        "Send",
        { conversationId: id, clientMsgId: `m${n}`, content: { text: `m${n}` } },
        alice.md,
      );
    }
    const sub = openSubscribe(chat, bob.md, [{ conversationId: id, seq: "2" }]);
    await sub.log.until(() => sub.log.of("syncComplete").length > 0, "sync_complete");
    expect(sub.log.frames[0]!.frame).toBe("ready");
    const batch = sub.log.of("sync")[0]!.sync!;
    expect(batch.events.map((e) => e.seq)).toEqual(["3", "4"]);
    expect(batch.headSeq).toBe("4");
    expect(batch.gap).toBe(false);

    await unary(
      chat,
      "Send",
      { conversationId: id, clientMsgId: "live", content: { text: "live" } },
      alice.md,
    );
    await sub.log.until(
      () => sub.log.events(id).some((e) => e.clientMsgId === "live"),
      "live event",
    );
    await settle();
    expect(sub.log.events(id).map((e) => e.seq)).toEqual(["3", "4", "5"]);
  });

  it("reports errors as gRPC status codes", async () => {
    server = await startServer();
    const [alice, bob, carol] = [
      await devLogin("alice"),
      await devLogin("bob"),
      await devLogin("carol"),
    ];
    const chat = client(pkg.chat.v1.ChatService);
    const id = await directChat(chat, alice, bob);

    const noToken = await failure(unary(chat, "GetMe", {}));
    expect(noToken.code).toBe(grpc.status.UNAUTHENTICATED);
    const badToken = await failure(unary(chat, "GetMe", {}, bearer("not-a-jwt")));
    expect(badToken.code).toBe(grpc.status.UNAUTHENTICATED);
    // Streams are refused the same way, before any frame.
    const anon = openSession(chat, new grpc.Metadata());
    anon.stream.write({ subscribe: { cursors: [] } });
    await anon.log.until(() => anon.log.ended, "refusal");
    expect(anon.log.error?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(anon.log.items).toHaveLength(0);

    const badId = await failure(
      unary(
        chat,
        "Send",
        { conversationId: "nope", clientMsgId: "x", content: { text: "x" } },
        alice.md,
      ),
    );
    expect(badId.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(badId.details).toMatch(/conversation_id/);
    const empty = await failure(
      unary(
        chat,
        "Send",
        { conversationId: id, clientMsgId: "x", content: { text: "" } },
        alice.md,
      ),
    );
    expect(empty.code).toBe(grpc.status.INVALID_ARGUMENT);

    const outsider = await failure(unary(chat, "GetHistory", { conversationId: id }, carol.md));
    expect(outsider.code).toBe(grpc.status.PERMISSION_DENIED);
    const intruder = await failure(
      unary(
        chat,
        "Send",
        { conversationId: id, clientMsgId: "y", content: { text: "hi" } },
        carol.md,
      ),
    );
    expect(intruder.code).toBe(grpc.status.PERMISSION_DENIED);
    const missing = await failure(
      unary(chat, "GetHistory", { conversationId: "c_00000000000000000000000000" }, alice.md),
    );
    expect(missing.code).toBe(grpc.status.NOT_FOUND);
    const unknownUser = await failure(
      unary(chat, "CreateDirectConversation", { peerUserId: "nobody" }, alice.md),
    );
    expect(unknownUser.code).toBe(grpc.status.NOT_FOUND);
  });

  it("answers grpc.health.v1 Check and Watch with SERVING", async () => {
    server = await startServer();
    const health = client(pkg.grpc.health.v1.Health);
    expect(await unary<{ status: string }>(health, "Check", { service: "" })).toEqual({
      status: "SERVING",
    });
    expect(
      await unary<{ status: string }>(health, "Check", { service: "chat.v1.ChatService" }),
    ).toEqual({
      status: "SERVING",
    });
    const unknown = await failure(unary(health, "Check", { service: "no.such.Service" }));
    expect(unknown.code).toBe(grpc.status.NOT_FOUND);

    const watch = (
      health as unknown as { Watch(req: object): grpc.ClientReadableStream<{ status: string }> }
    ).Watch({ service: "" });
    calls.push(watch);
    const seen = new Collected(watch);
    await seen.until(() => seen.items.length > 0, "first status");
    expect(seen.items[0]).toEqual({ status: "SERVING" });
  });

  it("ends open streams with UNAVAILABLE when the server shuts down", async () => {
    server = await startServer();
    const [alice, bob] = [await devLogin("alice"), await devLogin("bob")];
    const chat = client(pkg.chat.v1.ChatService);
    await directChat(chat, alice, bob);
    const session = openSession(chat, alice.md);
    session.stream.write({ subscribe: { cursors: [] } });
    const sub = openSubscribe(chat, bob.md);
    for (const s of [session, sub]) {
      await s.log.until(() => s.log.of("syncComplete").length > 0, "sync_complete");
    }
    const health = client(pkg.grpc.health.v1.Health);
    const watch = (
      health as unknown as { Watch(req: object): grpc.ClientReadableStream<{ status: string }> }
    ).Watch({ service: "" });
    calls.push(watch);
    const watched = new Collected(watch);
    await watched.until(() => watched.items.length > 0, "first status");

    const started = Date.now();
    await server.stop();
    // Streams end well before the drain grace period runs out.
    expect(Date.now() - started).toBeLessThan(2000);
    for (const s of [session, sub]) {
      await s.log.until(() => s.log.ended, "stream end");
      expect(s.log.error?.code).toBe(grpc.status.UNAVAILABLE);
    }
    // Health watchers learn NOT_SERVING before their stream ends.
    await watched.until(() => watched.ended, "watch end");
    expect(watched.items.map((i) => i.status)).toEqual(["SERVING", "NOT_SERVING"]);
    expect(watched.error?.code).toBe(grpc.status.UNAVAILABLE);
  });
});
