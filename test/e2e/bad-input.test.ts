import type http2 from "node:http2";
import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import {
  type Client,
  Code,
  ConnectError,
  createClient,
  type Interceptor,
} from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ChatService,
  HistoryDirection,
  SendRequestSchema,
} from "../../gen/chat/v1/chat_service_pb.js";
import { DevService } from "../../gen/chat/v1/dev_service_pb.js";
import {
  ConversationKind,
  type Event,
  type MessageContentSchema,
} from "../../gen/chat/v1/event_pb.js";
import {
  cursor,
  login,
  openSession,
  openSubscribe,
  partnerClient,
  seqs,
  transport,
  type User,
} from "../helpers/clients.js";
import { connectH2, envelope, rawCall } from "../helpers/raw-grpc.js";
import { startServer, type TestServer } from "../helpers/server.js";

/*
 * One server for the whole file: every bad request below runs against the
 * same conversation as the good ones, and the last test checks that every
 * acknowledged event survived all of them.
 */
const limits = {
  messageMaxBytes: 4096,
  frameMaxBytes: 8192,
  groupMaxMembers: 4,
  sendPerSecond: 1000,
  sendBurst: 1000,
  // Hundreds of calls in a few hundred milliseconds, all ann's: the default budget
  // (a burst of 200) runs out when this file runs alone on a fast machine.
  requestsPerSecond: 1000,
  requestBurst: 1000,
};

let server: TestServer;
let ann: User;
let ben: User;
let cat: User;
/** The direct conversation of ann and ben. */
let id: string;
/** Every send the server acknowledged, with the text it carried. */
const acked: { event: Event; text: string }[] = [];
let keyCounter = 0;

beforeAll(async () => {
  server = await startServer({ limits });
  [ann, ben, cat] = await Promise.all(["ann", "ben", "cat"].map((n) => login(server, n)));
  id = (await ann.chat.createDirectConversation({ peerUserId: ben.userId })).conversation!
    .conversationId;
});
afterAll(async () => {
  await server?.destroy();
});

/** The code a call failed with, or "ok". */
async function codeOf(p: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await p;
    return "ok";
  } catch (err) {
    if (err instanceof ConnectError) return err.code;
    throw err;
  }
}

/** A good send, remembered for the final check. */
async function goodSend(
  u: User,
  text: string,
  more: { clientMsgId?: string; content?: MessageInitShape<typeof MessageContentSchema> } = {},
) {
  const res = await u.chat.send({
    conversationId: id,
    clientMsgId: more.clientMsgId ?? `good-${keyCounter++}`,
    content: more.content ?? { text },
  });
  acked.push({ event: res.event!, text });
  return res.event!;
}

const send = (u: User, req: MessageInitShape<typeof SendRequestSchema>) => u.chat.send(req);
const key = () => `k-${keyCounter++}`;
const conversationIdLike = "c_0123456789abcdefghjkmnpqrs";

describe("ids", () => {
  it("rejects malformed conversation ids with INVALID_ARGUMENT on every call that takes one", async () => {
    await goodSend(ann, "before bad ids");
    const malformed = [
      "",
      "nope",
      "c_short",
      `${conversationIdLike}x`,
      conversationIdLike.toUpperCase(),
      `u_${conversationIdLike.slice(2)}`,
      `c_${"0".repeat(25)}!`,
      `${id} `,
    ];
    for (const bad of malformed) {
      const calls: [string, () => Promise<unknown>][] = [
        [
          "send",
          () => send(ann, { conversationId: bad, clientMsgId: key(), content: { text: "x" } }),
        ],
        ["getHistory", () => ann.chat.getHistory({ conversationId: bad })],
        ["getConversation", () => ann.chat.getConversation({ conversationId: bad })],
        ["markRead", () => ann.chat.markRead({ conversationId: bad, seq: 1n })],
        ["markDelivered", () => ann.chat.markDelivered({ conversationId: bad, seq: 1n })],
        ["getReadReceipts", () => ann.chat.getReadReceipts({ conversationId: bad, seq: 1n })],
        ["setTyping", () => ann.chat.setTyping({ conversationId: bad, typing: true })],
        [
          "editMessage",
          () => ann.chat.editMessage({ conversationId: bad, targetSeq: 2n, text: "e" }),
        ],
        ["deleteMessage", () => ann.chat.deleteMessage({ conversationId: bad, targetSeq: 2n })],
        [
          "addReaction",
          () => ann.chat.addReaction({ conversationId: bad, targetSeq: 2n, emoji: "👍" }),
        ],
        ["addMembers", () => ann.chat.addMembers({ conversationId: bad, userIds: [cat.userId] })],
        ["removeMember", () => ann.chat.removeMember({ conversationId: bad, userId: cat.userId })],
        [
          "renameConversation",
          () => ann.chat.renameConversation({ conversationId: bad, title: "t" }),
        ],
        ["leaveConversation", () => ann.chat.leaveConversation({ conversationId: bad })],
        ["sync", () => ann.chat.sync({ cursors: [cursor(bad, 0n)] })],
      ];
      for (const [name, call] of calls) {
        expect(await codeOf(call()), `${name}(${JSON.stringify(bad)})`).toBe(Code.InvalidArgument);
      }
    }
    // A stream with a malformed cursor is refused before it starts.
    const sub = openSubscribe(ann.chat, [cursor("nope", 0n)]);
    await sub.frames.untilEnded();
    expect(sub.frames.error?.code).toBe(Code.InvalidArgument);
    expect(sub.frames.all).toEqual([]);
  });

  it("rejects user ids with bad characters or over 128 characters with INVALID_ARGUMENT", async () => {
    const partner = partnerClient(server);
    const dev = createClient(DevService, transport(server.url, "grpc"));
    const bad = ["", "has space", "slash/", "semi;colon", "é", "tab\t", "a".repeat(129)];
    for (const u of bad) {
      const calls: [string, () => Promise<unknown>][] = [
        ["createDirect", () => ann.chat.createDirectConversation({ peerUserId: u })],
        [
          "createGroup",
          () => ann.chat.createGroupConversation({ title: "g", memberUserIds: [ben.userId, u] }),
        ],
        ["removeMember", () => ann.chat.removeMember({ conversationId: id, userId: u })],
        ["getPresence", () => ann.chat.getPresence({ userIds: [u] })],
        ["watchPresence", () => ann.chat.watchPresence({ userIds: [u] })],
        ["upsertUser", () => partner.upsertUser({ userId: u, displayName: "x" })],
        ["getUser", () => partner.getUser({ userId: u })],
        ["mintToken(user)", () => partner.mintToken({ userId: u, deviceId: "d1" })],
        ["mintToken(device)", () => partner.mintToken({ userId: ann.userId, deviceId: u })],
        ["issueDevToken(user)", () => dev.issueDevToken({ userName: u })],
      ];
      if (u !== "") {
        calls.push([
          "issueDevToken(device)",
          () => dev.issueDevToken({ userName: "dave", deviceId: u }),
        ]);
      }
      for (const [name, call] of calls) {
        expect(await codeOf(call()), `${name}(${JSON.stringify(u)})`).toBe(Code.InvalidArgument);
      }
    }
    // Exactly 128 characters of the allowed set is a valid id (here unknown).
    const longest = `${"a".repeat(120)}_.@:-AZ9`;
    expect(longest).toHaveLength(128);
    expect(await codeOf(ann.chat.createDirectConversation({ peerUserId: longest }))).toBe(
      Code.NotFound,
    );
    expect(await codeOf(partner.upsertUser({ userId: longest, displayName: "Long" }))).toBe("ok");
  });

  it("rejects client_msg_id that is missing, over 64 characters or has bad characters", async () => {
    const bad = ["", "a".repeat(65), "has space", "at@sign", "slash/", "ü", "new\nline"];
    for (const k of bad) {
      expect(
        await codeOf(send(ann, { conversationId: id, clientMsgId: k, content: { text: "x" } })),
        `send(${JSON.stringify(k)})`,
      ).toBe(Code.InvalidArgument);
      if (k === "") continue;
      // Optional keys elsewhere must still be well-formed when given.
      expect(
        await codeOf(
          ann.chat.editMessage({ conversationId: id, targetSeq: 2n, text: "e", clientMsgId: k }),
        ),
        `edit(${JSON.stringify(k)})`,
      ).toBe(Code.InvalidArgument);
      expect(
        await codeOf(
          ann.chat.createGroupConversation({
            title: "g",
            memberUserIds: [ben.userId],
            clientRequestId: k,
          }),
        ),
        `createGroup(${JSON.stringify(k)})`,
      ).toBe(Code.InvalidArgument);
    }
    // 64 characters of the full allowed alphabet work.
    const longest = `${"A".repeat(55)}z09_.:-xy`;
    expect(longest).toHaveLength(64);
    await goodSend(ann, "longest key", { clientMsgId: longest });

    // On a Session stream the same frames get error frames and the stream goes on.
    const s = openSession(ann.chat, { subscribe: false });
    s.send({
      frameId: "e1",
      action: {
        case: "send",
        value: { conversationId: id, clientMsgId: "", content: { text: "x" } },
      },
    });
    s.send({
      frameId: "e2",
      action: {
        case: "send",
        value: { conversationId: id, clientMsgId: "bad key", content: { text: "x" } },
      },
    });
    s.send({
      frameId: "e3",
      action: {
        case: "send",
        value: { conversationId: "nope", clientMsgId: "k", content: { text: "x" } },
      },
    });
    s.send({ frameId: "e4" });
    s.send({
      frameId: "ok",
      action: {
        case: "send",
        value: { conversationId: id, clientMsgId: "session-ok", content: { text: "fine" } },
      },
    });
    await s.frames.until((f) => f.of("error").length >= 4 && f.of("sendAck").length >= 1);
    const errors = s.frames.all.filter((f) => f.frame.case === "error");
    expect(errors.map((f) => f.replyToFrameId).sort()).toEqual(["e1", "e2", "e3", "e4"]);
    for (const f of errors) {
      expect(f.frame.case === "error" && f.frame.value.code, f.replyToFrameId).toBe(
        Code.InvalidArgument,
      );
    }
    const badKey = errors.find((f) => f.replyToFrameId === "e2")!;
    expect(badKey.frame.case === "error" && badKey.frame.value.clientMsgId).toBe("bad key");
    const ok = s.frames.of("sendAck")[0]!;
    acked.push({ event: ok.event!, text: "fine" });
    expect(s.frames.ended).toBe(false);
    s.abort();
  });
});

const bearer =
  (token: string): Interceptor =>
  (next) =>
  (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };

/** ChatService over the Connect protocol with JSON bodies, which can carry lone surrogates. */
const jsonClient = (u: User): Client<typeof ChatService> =>
  createClient(
    ChatService,
    createConnectTransport({
      baseUrl: server.url,
      httpVersion: "1.1",
      useBinaryFormat: false,
      interceptors: [bearer(u.token)],
    }),
  );

/** A SendRequest encoded by hand, so the text field can hold any bytes. */
function sendRequestBytes(conversationId: string, clientMsgId: string, textBytes: Buffer) {
  const field = (no: number, bytes: Buffer) => {
    const len: number[] = [];
    let n = bytes.length;
    while (n >= 0x80) {
      len.push((n & 0x7f) | 0x80);
      n >>>= 7;
    }
    len.push(n);
    return Buffer.concat([Buffer.from([(no << 3) | 2, ...len]), bytes]);
  };
  return Buffer.concat([
    field(1, Buffer.from(conversationId)),
    field(2, Buffer.from(clientMsgId)),
    field(3, field(1, textBytes)),
  ]);
}

describe("text", () => {
  it("rejects a lone surrogate (JSON can carry it) and NUL with INVALID_ARGUMENT", async () => {
    await goodSend(ann, "before bad text");
    const json = jsonClient(ann);
    for (const t of ["\uD800", "a\uDC00b", "\uDBFF", "x\uDE00\uD800y"]) {
      expect(
        await codeOf(json.send({ conversationId: id, clientMsgId: key(), content: { text: t } })),
        JSON.stringify(t),
      ).toBe(Code.InvalidArgument);
    }
    expect(
      await codeOf(
        json.editMessage({ conversationId: id, targetSeq: acked[0]!.event.seq, text: "\uD800" }),
      ),
    ).toBe(Code.InvalidArgument);
    for (const t of ["\u0000", "a\u0000b", "end\u0000"]) {
      expect(
        await codeOf(send(ann, { conversationId: id, clientMsgId: key(), content: { text: t } })),
        JSON.stringify(t),
      ).toBe(Code.InvalidArgument);
    }
    // A well-formed surrogate pair is fine, and JSON is a working transport.
    const pair = "pair \uD83D\uDE00";
    const res = await json.send({
      conversationId: id,
      clientMsgId: key(),
      content: { text: pair },
    });
    acked.push({ event: res.event!, text: pair });
  });

  it("answers invalid UTF-8 bytes in a unary binary request with INVALID_ARGUMENT on the direct path and through Connect's handler, storing nothing", async () => {
    // protobuf-es decodes proto3 strings strictly, so the request never
    // reaches validation. Connect's handler reports the parse failure as
    // INTERNAL, as gRPC servers do, before any interceptor; the edge's
    // adapter turns that into INVALID_ARGUMENT, as the direct path (gRPC over
    // HTTP/2 here) answers. fetch speaks HTTP/1.1, which Connect serves.
    const invalid = [
      Buffer.from([0x61, 0xed, 0xa0, 0x80, 0x62]), // CESU-8 lone surrogate U+D800
      Buffer.from([0xff]),
      Buffer.from([0xc3]), // truncated two-byte sequence
      Buffer.from([0xc0, 0xaf]), // overlong "/"
    ];
    const h2 = await connectH2(server.url);
    try {
      for (const [i, bytes] of invalid.entries()) {
        const body = sendRequestBytes(id, `utf8-${i}`, bytes);
        const res = await fetch(`${server.url}/chat.v1.ChatService/Send`, {
          method: "POST",
          headers: {
            "content-type": "application/proto",
            "connect-protocol-version": "1",
            authorization: `Bearer ${ann.token}`,
          },
          body,
        });
        const err = (await res.json()) as { code: string; message: string };
        expect(res.status).toBe(400);
        expect(err).toEqual({ code: "invalid_argument", message: "malformed request message" });
        const grpc = await rawCall(h2, "/chat.v1.ChatService/Send", ann.token, body).outcome;
        expect(grpc.code).toBe(Code.InvalidArgument);
        expect(grpc.message).toContain("malformed request message");
      }
      // The same hand encoder with valid UTF-8 is accepted, so only the bytes were at fault.
      const good = sendRequestBytes(id, "utf8-ok", Buffer.from("valid ✓"));
      const ok = rawCall(h2, "/chat.v1.ChatService/Send", ann.token, good);
      expect((await ok.outcome).code).toBe(0);
      expect(ok.messages).toHaveLength(1);
    } finally {
      h2.destroy();
    }
    const history = await ann.chat.getHistory({ conversationId: id, limit: 500 });
    expect(
      history.events.filter((e) => e.clientMsgId.startsWith("utf8-")).map((e) => e.clientMsgId),
    ).toEqual(["utf8-ok"]);
    const stored = history.events.find((e) => e.clientMsgId === "utf8-ok")!;
    acked.push({ event: stored, text: "valid ✓" });
  });

  it("answers an unparseable request message with INVALID_ARGUMENT in every protocol Connect's handler serves", async () => {
    // A length-delimited field 1 that claims 5 bytes and has 1: no reader can parse it.
    const broken = Buffer.from([0x0a, 0x05, 0x61]);
    const auth = { authorization: `Bearer ${ann.token}` };
    const before = (await ann.chat.listConversations({})).conversations.length;

    // Connect unary (HTTP/1.1), on a method the direct path never serves.
    const unary = await fetch(`${server.url}/chat.v1.ChatService/CreateGroupConversation`, {
      method: "POST",
      headers: { "content-type": "application/proto", "connect-protocol-version": "1", ...auth },
      body: broken,
    });
    expect(unary.status).toBe(400);
    expect(await unary.json()).toEqual({
      code: "invalid_argument",
      message: "malformed request message",
    });

    // gRPC-Web (HTTP/1.1): the status is in the trailer frame at the end of the body.
    const web = await fetch(`${server.url}/chat.v1.ChatService/CreateGroupConversation`, {
      method: "POST",
      headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1", ...auth },
      body: envelope(broken),
    });
    const webBody = Buffer.from(await web.arrayBuffer());
    expect(webBody[0]).toBe(0x80);
    const trailer = webBody.subarray(5).toString("utf8");
    expect(trailer).toMatch(/grpc-status: ?3\r\n/);
    expect(decodeURIComponent(trailer)).toContain("malformed request message");

    // Connect server-streaming (HTTP/1.1): the end-stream message carries the error.
    const stream = await fetch(`${server.url}/chat.v1.ChatService/Subscribe`, {
      method: "POST",
      headers: {
        "content-type": "application/connect+proto",
        "connect-protocol-version": "1",
        ...auth,
      },
      body: envelope(broken),
    });
    const streamBody = Buffer.from(await stream.arrayBuffer());
    expect(streamBody[0]).toBe(0x02);
    expect(JSON.parse(streamBody.subarray(5).toString("utf8"))).toMatchObject({
      error: { code: "invalid_argument", message: "malformed request message" },
    });

    // gRPC over HTTP/2 on a method Connect serves, and with a deadline on one the direct path serves.
    const h2 = await connectH2(server.url);
    try {
      const grpc = await rawCall(
        h2,
        "/chat.v1.ChatService/CreateGroupConversation",
        ann.token,
        broken,
      ).outcome;
      expect(grpc).toMatchObject({
        code: Code.InvalidArgument,
        message: "malformed request message",
      });
      const timed = h2.request({
        ":method": "POST",
        ":path": "/chat.v1.ChatService/GetHistory",
        "content-type": "application/grpc",
        te: "trailers",
        "grpc-timeout": "5S",
        ...auth,
      });
      timed.end(envelope(broken));
      const trailers = await new Promise<http2.IncomingHttpHeaders>((resolve) => {
        timed.on("response", (h) => {
          if (h["grpc-status"] !== undefined) resolve(h);
        });
        timed.on("trailers", resolve);
        timed.resume();
      });
      expect(trailers["grpc-status"]).toBe(String(Code.InvalidArgument));
      timed.close();
    } finally {
      h2.destroy();
    }

    // An error our own code raises keeps its code through the same adapter.
    const refused = await fetch(`${server.url}/chat.v1.ChatService/GetConversation`, {
      method: "POST",
      headers: { "content-type": "application/json", "connect-protocol-version": "1", ...auth },
      body: JSON.stringify({ conversationId: conversationIdLike }),
    });
    expect(refused.status).toBe(404);
    expect(((await refused.json()) as { code: string }).code).toBe("not_found");
    expect((await ann.chat.listConversations({})).conversations.length).toBe(before);
  });

  it("shows the JS binary client cannot send a lone surrogate: protobuf-es encodes it as U+FFFD", async () => {
    // Documents why the test above builds its bytes by hand.
    const bytes = toBinary(
      SendRequestSchema,
      create(SendRequestSchema, {
        conversationId: id,
        clientMsgId: "x",
        content: { text: "\uD800" },
      }),
    );
    expect(Buffer.from(bytes).includes(Buffer.from([0xef, 0xbf, 0xbd]))).toBe(true);
    const res = await send(ann, {
      conversationId: id,
      clientMsgId: key(),
      content: { text: "a\uD800b" },
    });
    const got = res.event!.kind.case === "messagePosted" ? res.event!.kind.value.content?.text : "";
    expect(got).toBe("a\uFFFDb");
    acked.push({ event: res.event!, text: "a\uFFFDb" });
  });
});

describe("sizes", () => {
  it("accepts text of exactly messageMaxBytes UTF-8 bytes and rejects one byte more with INVALID_ARGUMENT", async () => {
    const max = limits.messageMaxBytes;
    await goodSend(ann, "x".repeat(max));
    // Bytes count, not characters: 3-byte and 4-byte characters.
    const euro = `${"€".repeat((max - 1) / 3)}x`;
    expect(Buffer.byteLength(euro)).toBe(max);
    await goodSend(ann, euro);
    const emoji = "😀".repeat(max / 4);
    expect(Buffer.byteLength(emoji)).toBe(max);
    await goodSend(ann, emoji);

    for (const t of ["x".repeat(max + 1), `${euro}y`, "€".repeat((max + 2) / 3), `${emoji}!`]) {
      expect(Buffer.byteLength(t)).toBeGreaterThan(max);
      expect(t.length).toBeLessThanOrEqual(max + 1);
      expect(
        await codeOf(send(ann, { conversationId: id, clientMsgId: key(), content: { text: t } })),
      ).toBe(Code.InvalidArgument);
    }
    expect(
      await codeOf(
        ann.chat.editMessage({
          conversationId: id,
          targetSeq: acked[0]!.event.seq,
          text: "e".repeat(max + 1),
        }),
      ),
    ).toBe(Code.InvalidArgument);
  });

  it("refuses a request larger than frameMaxBytes with RESOURCE_EXHAUSTED on every protocol, and keeps serving", async () => {
    const huge = "h".repeat(limits.frameMaxBytes + 100);
    for (const protocol of ["grpc", "connect", "grpc-web"] as const) {
      const err = await ann
        .via(protocol)
        .send({ conversationId: id, clientMsgId: `huge-${protocol}`, content: { text: huge } })
        .catch((e: unknown) => e);
      expect(err, protocol).toBeInstanceOf(ConnectError);
      expect((err as ConnectError).code, protocol).toBe(Code.ResourceExhausted);
    }
    expect(
      await codeOf(
        jsonClient(ann).send({
          conversationId: id,
          clientMsgId: "huge-json",
          content: { text: huge },
        }),
      ),
    ).toBe(Code.ResourceExhausted);
    // The same clients and others go on working.
    await goodSend(ann, "after huge");
    const viaConnect = await ben
      .via("connect")
      .send({ conversationId: id, clientMsgId: key(), content: { text: "ben after huge" } });
    acked.push({ event: viaConnect.event!, text: "ben after huge" });
    const history = await ann.chat.getHistory({ conversationId: id, limit: 500 });
    expect(history.events.some((e) => e.clientMsgId.startsWith("huge-"))).toBe(false);
  });
});

describe("limits and ranges", () => {
  it("answers a member count above the cap with RESOURCE_EXHAUSTED", async () => {
    const [d, e, f] = await Promise.all(["dan", "eve", "fay"].map((n) => login(server, n)));
    const others = [ben.userId, cat.userId, d!.userId, e!.userId];
    // The creator plus four others is one more than groupMaxMembers (4).
    expect(
      await codeOf(ann.chat.createGroupConversation({ title: "big", memberUserIds: others })),
    ).toBe(Code.ResourceExhausted);
    const partner = partnerClient(server);
    expect(
      await codeOf(
        partner.createConversation({
          actingUserId: ann.userId,
          kind: ConversationKind.GROUP,
          title: "big",
          memberUserIds: others,
        }),
      ),
    ).toBe(Code.ResourceExhausted);
    // Far more ids than the cap is refused before any lookup.
    const many = Array.from({ length: 50 }, (_, i) => `ghost${i}`);
    expect(
      await codeOf(ann.chat.createGroupConversation({ title: "big", memberUserIds: many })),
    ).toBe(Code.ResourceExhausted);
    expect(await codeOf(ann.chat.addMembers({ conversationId: id, userIds: many }))).toBe(
      Code.ResourceExhausted,
    );

    // Exactly the cap works; adding one more member does not.
    const full = await ann.chat.createGroupConversation({
      title: "full",
      memberUserIds: others.slice(0, 3),
    });
    expect(full.conversation!.memberCount).toBe(4);
    const groupId = full.conversation!.conversationId;
    expect(
      await codeOf(ann.chat.addMembers({ conversationId: groupId, userIds: [f!.userId] })),
    ).toBe(Code.ResourceExhausted);
    const group = await ann.chat.getConversation({ conversationId: groupId });
    expect(group.conversation!.memberCount).toBe(4);
  });

  it("rejects cursors and anchors beyond the head with INVALID_ARGUMENT", async () => {
    const head = (await ann.chat.getHistory({ conversationId: id, limit: 1 })).headSeq;
    const forward = HistoryDirection.FORWARD;
    const backward = HistoryDirection.BACKWARD;
    expect(
      await codeOf(
        ann.chat.getHistory({ conversationId: id, anchorSeq: head + 1n, direction: forward }),
      ),
    ).toBe(Code.InvalidArgument);
    expect(
      await codeOf(
        ann.chat.getHistory({ conversationId: id, anchorSeq: head + 2n, direction: backward }),
      ),
    ).toBe(Code.InvalidArgument);
    expect(
      await codeOf(
        ann.chat.getHistory({ conversationId: id, anchorSeq: 1n << 62n, direction: backward }),
      ),
    ).toBe(Code.InvalidArgument);
    // The boundaries themselves are valid.
    const atHead = await ann.chat.getHistory({
      conversationId: id,
      anchorSeq: head,
      direction: forward,
    });
    expect(atHead.events).toEqual([]);
    const fromTop = await ann.chat.getHistory({
      conversationId: id,
      anchorSeq: head + 1n,
      direction: backward,
      limit: 1,
    });
    expect(seqs(fromTop.events)).toEqual([Number(head)]);

    expect(await codeOf(ann.chat.sync({ cursors: [cursor(id, head + 1n)] }))).toBe(
      Code.InvalidArgument,
    );
    const synced = await ann.chat.sync({ cursors: [cursor(id, head)] });
    expect(synced.batches.filter((b) => b.conversationId === id)).toEqual([]);
    expect(await codeOf(ann.chat.markRead({ conversationId: id, seq: head + 1n }))).toBe(
      Code.InvalidArgument,
    );
    expect(
      await codeOf(
        send(ann, {
          conversationId: id,
          clientMsgId: key(),
          content: { text: "r", replyToSeq: head + 5n },
        }),
      ),
    ).toBe(Code.InvalidArgument);

    // A stream that subscribes from beyond the head ends with INVALID_ARGUMENT.
    const sub = openSubscribe(ann.chat, [cursor(id, head + 1n)]);
    await sub.frames.untilEnded();
    expect(sub.frames.error?.code).toBe(Code.InvalidArgument);
    const session = openSession(ann.chat, { cursors: [cursor(id, head + 10n)] });
    await session.frames.untilEnded();
    expect(session.frames.error?.code).toBe(Code.InvalidArgument);
  });

  it("rejects page sizes and limits over their maximum, and bad page tokens, with INVALID_ARGUMENT", async () => {
    expect(await codeOf(ann.chat.getHistory({ conversationId: id, limit: 501 }))).toBe(
      Code.InvalidArgument,
    );
    expect(
      (await ann.chat.getHistory({ conversationId: id, limit: 500 })).events.length,
    ).toBeGreaterThan(0);
    expect(await codeOf(ann.chat.sync({ limitPerConversation: 1001 }))).toBe(Code.InvalidArgument);
    expect(await codeOf(ann.chat.listConversations({ pageSize: 201 }))).toBe(Code.InvalidArgument);
    expect(await codeOf(ann.chat.listConversations({ pageSize: 200 }))).toBe("ok");
    const tokens = [
      "%%%",
      "not base64!",
      Buffer.from("no-separator").toString("base64url"),
      Buffer.from("NaN:c_x").toString("base64url"),
      Buffer.from("12:").toString("base64url"),
      "t".repeat(513),
    ];
    for (const pageToken of tokens) {
      expect(await codeOf(ann.chat.listConversations({ pageToken })), pageToken).toBe(
        Code.InvalidArgument,
      );
    }
    // A real token from a previous page works.
    const first = await ann.chat.listConversations({ pageSize: 1 });
    expect(first.nextPageToken).not.toBe("");
    expect(
      await codeOf(ann.chat.listConversations({ pageSize: 1, pageToken: first.nextPageToken })),
    ).toBe("ok");
  });

  it("answers an unknown conversation with NOT_FOUND", async () => {
    const unknown = conversationIdLike;
    const calls: [string, () => Promise<unknown>][] = [
      [
        "send",
        () => send(ann, { conversationId: unknown, clientMsgId: key(), content: { text: "x" } }),
      ],
      ["getHistory", () => ann.chat.getHistory({ conversationId: unknown })],
      ["getConversation", () => ann.chat.getConversation({ conversationId: unknown })],
      ["markRead", () => ann.chat.markRead({ conversationId: unknown, seq: 1n })],
      ["setTyping", () => ann.chat.setTyping({ conversationId: unknown, typing: true })],
      [
        "editMessage",
        () => ann.chat.editMessage({ conversationId: unknown, targetSeq: 1n, text: "e" }),
      ],
      ["addMembers", () => ann.chat.addMembers({ conversationId: unknown, userIds: [cat.userId] })],
    ];
    for (const [name, call] of calls) expect(await codeOf(call()), name).toBe(Code.NotFound);
  });

  it("rejects empty content and too many or malformed attachments with INVALID_ARGUMENT", async () => {
    const attachment = (i: number) => ({
      mediaRef: `s3://bucket/${i}`,
      mimeType: "image/png",
      sizeBytes: 10n,
      fileName: `${i}.png`,
    });
    const contents: [string, MessageInitShape<typeof SendRequestSchema>["content"]][] = [
      ["no content", undefined],
      ["empty content", {}],
      ["empty text", { text: "" }],
      [
        "11 attachments",
        { text: "x", attachments: Array.from({ length: 11 }, (_, i) => attachment(i)) },
      ],
      ["empty media_ref", { attachments: [{ mediaRef: "" }] }],
      ["long media_ref", { attachments: [{ mediaRef: "m".repeat(2049) }] }],
      ["long mime_type", { attachments: [{ mediaRef: "m", mimeType: "t".repeat(256) }] }],
    ];
    for (const [name, content] of contents) {
      const req: MessageInitShape<typeof SendRequestSchema> = {
        conversationId: id,
        clientMsgId: key(),
      };
      if (content) req.content = content;
      expect(await codeOf(send(ann, req)), name).toBe(Code.InvalidArgument);
    }
    // Ten attachments, or attachments without text, are fine.
    await goodSend(ann, "", { content: { attachments: [attachment(0)] } });
    await goodSend(ann, "ten", {
      content: { text: "ten", attachments: Array.from({ length: 10 }, (_, i) => attachment(i)) },
    });
  });
});

describe("after all of it", () => {
  it("still has every acknowledged event in history, unchanged, with seqs that have no holes", async () => {
    expect(acked.length).toBeGreaterThan(10);
    const history = await ben.chat.getHistory({ conversationId: id, limit: 500 });
    expect(history.hasMore).toBe(false);
    expect(seqs(history.events)).toEqual(history.events.map((_, i) => i + 1));
    const byId = new Map(history.events.map((e) => [e.eventId, e]));
    for (const { event, text } of acked) {
      const stored = byId.get(event.eventId);
      expect(stored?.seq, event.clientMsgId).toBe(event.seq);
      const content = stored?.kind.case === "messagePosted" ? stored.kind.value.content : undefined;
      expect(content?.text, event.clientMsgId).toBe(text);
    }
    // Nothing but the creation event and the acknowledged sends was stored.
    expect(history.events.length).toBe(1 + acked.length);
  });
});
