import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, createClient, type Interceptor } from "@connectrpc/connect";
import { decodeJwt, decodeProtectedHeader } from "jose";
import { afterEach, describe, expect, it } from "vitest";
import { ChatService } from "../../gen/chat/v1/chat_service_pb.js";
import { DevService } from "../../gen/chat/v1/dev_service_pb.js";
import { ConversationKind, MessageKind, Role } from "../../gen/chat/v1/event_pb.js";
import type { DevicePlatform } from "../../gen/chat/v1/model_pb.js";
import { PartnerService } from "../../gen/chat/v1/partner_service_pb.js";
import {
  login,
  openSession,
  openSubscribe,
  type Protocol,
  partnerClient,
  seqs,
  settle,
  transport,
  userFromToken,
} from "../helpers/clients.js";
import { partner, startServer, type TestServer } from "../helpers/server.js";

let server: TestServer | undefined;
afterEach(async () => {
  await server?.destroy();
  server = undefined;
});

const unauthenticated = { code: Code.Unauthenticated };
const invalid = { code: Code.InvalidArgument };
const notFound = { code: Code.NotFound };

const key = (kid: string) => ({ kid, secret: randomBytes(32) });

const header =
  (value: string): Interceptor =>
  (next) =>
  (req) => {
    req.header.set("authorization", value);
    return next(req);
  };

const basic = (k: string, secret: string) =>
  `Basic ${Buffer.from(`${k}:${secret}`).toString("base64")}`;

/** Creates a user through the partner API and returns ChatService clients for one device. */
async function provision(s: TestServer, userId: string, deviceId = `${userId}-phone`) {
  const p = partnerClient(s);
  await p.upsertUser({ userId, displayName: userId.toUpperCase() });
  const minted = await p.mintToken({ userId, deviceId });
  return userFromToken(s, userId, deviceId, minted.token);
}

describe("partner authentication", () => {
  it.each<Protocol>(["grpc", "connect"])(
    "requires the configured key and secret (%s)",
    async (protocol) => {
      server = await startServer();
      const url = server.url;
      const p = (interceptors: Interceptor[]) =>
        createClient(PartnerService, transport(url, protocol, interceptors));
      const ok = p([header(basic(partner.key, partner.secret))]);
      expect((await ok.upsertUser({ userId: "u1", displayName: "U" })).created).toBe(true);

      const user = await login(server, "ann");
      const attempts: Record<string, Interceptor[]> = {
        missing: [],
        wrongSecret: [header(basic(partner.key, `${partner.secret}x`))],
        unknownKey: [header(basic("other", partner.secret))],
        noColon: [header(`Basic ${Buffer.from(partner.key).toString("base64")}`)],
        emptySecret: [header(basic(partner.key, ""))],
        bearerUserToken: [header(`Bearer ${user.token}`)],
        bearerSecret: [header(`Bearer ${partner.secret}`)],
      };
      for (const [name, interceptors] of Object.entries(attempts)) {
        const client = p(interceptors);
        await expect(client.getUser({ userId: "u1" }), name).rejects.toMatchObject(unauthenticated);
        await expect(
          client.upsertUser({ userId: "u2", displayName: "U2" }),
          name,
        ).rejects.toMatchObject(unauthenticated);
      }
      // None of the rejected calls had an effect.
      await expect(ok.getUser({ userId: "u2" })).rejects.toMatchObject(notFound);

      // And partner credentials do not open the user API.
      const chat = createClient(
        ChatService,
        transport(url, protocol, [header(basic(partner.key, partner.secret))]),
      );
      await expect(chat.listConversations({})).rejects.toMatchObject(unauthenticated);
      await expect(chat.getMe({})).rejects.toMatchObject(unauthenticated);
    },
  );
});

describe("users", () => {
  it("creates, then updates, and reads users", async () => {
    server = await startServer();
    const p = partnerClient(server);
    const first = await p.upsertUser({ userId: "alice@example.com", displayName: " Alice " });
    expect(first.created).toBe(true);
    expect(first.user!.userId).toBe("alice@example.com");
    expect(first.user!.displayName).toBe("Alice");
    await settle(5);
    const second = await p.upsertUser({ userId: "alice@example.com", displayName: "Alice B." });
    expect(second.created).toBe(false);
    expect(second.user!.displayName).toBe("Alice B.");
    expect(timestampMs(second.user!.createdAt!)).toBe(timestampMs(first.user!.createdAt!));
    expect(timestampMs(second.user!.updatedAt!)).toBeGreaterThan(
      timestampMs(first.user!.updatedAt!),
    );
    const got = await p.getUser({ userId: "alice@example.com" });
    expect(got.user!.displayName).toBe("Alice B.");
    const me = await userFromToken(
      server,
      "alice@example.com",
      "d1",
      (await p.mintToken({ userId: "alice@example.com", deviceId: "d1" })).token,
    ).chat.getMe({});
    expect(me.user!.displayName).toBe("Alice B.");

    for (const userId of ["", "has space", "x".repeat(129), "slash/id", "ümlaut"]) {
      await expect(p.upsertUser({ userId, displayName: "X" }), userId).rejects.toMatchObject(
        invalid,
      );
      await expect(p.getUser({ userId }), userId).rejects.toMatchObject(invalid);
    }
    await expect(
      p.upsertUser({ userId: "x".repeat(128), displayName: "X" }),
    ).resolves.toMatchObject({
      created: true,
    });
    for (const displayName of ["", "   ", "n".repeat(129), "bell\u0007"]) {
      await expect(p.upsertUser({ userId: "bob", displayName })).rejects.toMatchObject(invalid);
    }
    await expect(p.getUser({ userId: "bob" })).rejects.toMatchObject(notFound);
    await expect(p.getUser({ userId: "nobody" })).rejects.toMatchObject(notFound);
  });
});

describe("tokens", () => {
  it("mints device-bound tokens that carry the key id and work for ChatService", async () => {
    server = await startServer({
      devMode: false,
      auth: { signingKeys: [key("k-main")], activeKeyId: "k-main" },
    });
    const p = partnerClient(server);
    await p.upsertUser({ userId: "ann", displayName: "Ann" });
    const before = Date.now();
    const minted = await p.mintToken({ userId: "ann", deviceId: "ann-tablet", ttlSeconds: 120 });
    expect(minted.keyId).toBe("k-main");
    expect(decodeProtectedHeader(minted.token).kid).toBe("k-main");
    const claims = decodeJwt(minted.token);
    expect(claims.sub).toBe("ann");
    expect(claims.did).toBe("ann-tablet");
    const expires = timestampMs(minted.expiresAt!);
    expect(expires).toBeGreaterThanOrEqual(before + 119_000);
    expect(expires).toBeLessThanOrEqual(Date.now() + 121_000);
    expect(claims.exp! * 1000).toBe(expires);

    const ann = userFromToken(server, "ann", "ann-tablet", minted.token);
    const me = await ann.chat.getMe({});
    expect(me.user!.userId).toBe("ann");
    expect(me.device!.deviceId).toBe("ann-tablet");
    const defaultTtl = await p.mintToken({ userId: "ann", deviceId: "ann-tablet" });
    expect(timestampMs(defaultTtl.expiresAt!)).toBeGreaterThan(Date.now() + 3_500_000);

    await expect(p.mintToken({ userId: "ghost", deviceId: "d" })).rejects.toMatchObject(notFound);
    await expect(
      p.mintToken({ userId: "ann", deviceId: "d", ttlSeconds: 86_401 }),
    ).rejects.toMatchObject(invalid);
    await expect(
      p.mintToken({ userId: "ann", deviceId: "d", platform: 99 as DevicePlatform }),
    ).rejects.toMatchObject(invalid);
    await expect(p.mintToken({ userId: "ann", deviceId: "" })).rejects.toMatchObject(invalid);
    await expect(p.mintToken({ userId: "ann", deviceId: "bad device" })).rejects.toMatchObject(
      invalid,
    );
    // A device id belongs to one user; a revoked device gets no new tokens.
    await p.upsertUser({ userId: "ben", displayName: "Ben" });
    await expect(p.mintToken({ userId: "ben", deviceId: "ann-tablet" })).rejects.toMatchObject({
      code: Code.FailedPrecondition,
    });
    const other = await p.mintToken({ userId: "ann", deviceId: "ann-old" });
    await ann.chat.revokeDevice({ deviceId: "ann-old" });
    await expect(
      userFromToken(server, "ann", "ann-old", other.token).chat.getMe({}),
    ).rejects.toMatchObject(unauthenticated);
    await expect(p.mintToken({ userId: "ann", deviceId: "ann-old" })).rejects.toMatchObject({
      code: Code.FailedPrecondition,
    });
  });

  it("stops accepting a token once it expires", async () => {
    server = await startServer({ devMode: false, auth: { signingKeys: [key("k1")] } });
    const p = partnerClient(server);
    await p.upsertUser({ userId: "ann", displayName: "Ann" });
    const minted = await p.mintToken({ userId: "ann", deviceId: "d", ttlSeconds: 1 });
    const ann = userFromToken(server, "ann", "d", minted.token);
    await expect(ann.chat.getMe({})).resolves.toBeDefined();
    await new Promise((r) =>
      setTimeout(r, Math.max(0, timestampMs(minted.expiresAt!) - Date.now()) + 50),
    );
    await expect(ann.chat.getMe({})).rejects.toMatchObject(unauthenticated);
  });

  it("rotates signing keys: old tokens verify until their key is removed", async () => {
    const k1 = key("k1");
    const k2 = key("k2");
    server = await startServer({
      devMode: false,
      auth: { signingKeys: [k1, k2], activeKeyId: "k1" },
    });
    await partnerClient(server).upsertUser({ userId: "ann", displayName: "Ann" });
    const old = await partnerClient(server).mintToken({ userId: "ann", deviceId: "d1" });
    expect(old.keyId).toBe("k1");
    expect(decodeProtectedHeader(old.token).kid).toBe("k1");

    server = await server.restart({ auth: { activeKeyId: "k2" } });
    const fresh = await partnerClient(server).mintToken({ userId: "ann", deviceId: "d1" });
    expect(fresh.keyId).toBe("k2");
    expect(decodeProtectedHeader(fresh.token).kid).toBe("k2");
    for (const t of [old.token, fresh.token]) {
      const me = await userFromToken(server, "ann", "d1", t).chat.getMe({});
      expect(me.user!.userId).toBe("ann");
    }

    server = await server.restart({ auth: { signingKeys: [k2], activeKeyId: "k2" } });
    await expect(
      userFromToken(server, "ann", "d1", old.token).chat.getMe({}),
    ).rejects.toMatchObject(unauthenticated);
    const s = openSession(userFromToken(server, "ann", "d1", old.token).chat);
    await s.frames.untilEnded();
    expect(s.frames.error?.code).toBe(Code.Unauthenticated);
    await expect(
      userFromToken(server, "ann", "d1", fresh.token).chat.getMe({}),
    ).resolves.toMatchObject({ user: { userId: "ann" } });
  });
});

describe("dev mode", () => {
  it("rejects dev tokens and hides DevService once dev mode is off", async () => {
    server = await startServer();
    const devUser = await login(server, "ann");
    expect((await devUser.chat.getMe({})).user!.userId).toBe("ann");
    const devKid = decodeProtectedHeader(devUser.token).kid!;
    expect(devKid).toMatch(/^dev-/);
    expect(existsSync(join(server.dataDir, "dev-signing-key.json"))).toBe(true);

    // The dev key stays on disk but is not loaded when keys are configured.
    server = await server.restart({ devMode: false, auth: { signingKeys: [key("prod")] } });
    await expect(
      userFromToken(server, "ann", devUser.deviceId, devUser.token).chat.getMe({}),
    ).rejects.toMatchObject(unauthenticated);
    const minted = await partnerClient(server).mintToken({
      userId: "ann",
      deviceId: devUser.deviceId,
    });
    expect(minted.keyId).toBe("prod");
    await expect(
      userFromToken(server, "ann", devUser.deviceId, minted.token).chat.getMe({}),
    ).resolves.toBeDefined();

    for (const protocol of ["grpc", "connect", "grpc-web"] as const) {
      const dev = createClient(DevService, transport(server.url, protocol));
      await expect(dev.issueDevToken({ userName: "mallory" }), protocol).rejects.toMatchObject({
        code: Code.Unimplemented,
      });
    }
    await expect(partnerClient(server).getUser({ userId: "mallory" })).rejects.toMatchObject(
      notFound,
    );
  });

  it("rejects dev tokens by their claim even when signed with a configured key", async () => {
    const k = key("shared");
    server = await startServer({ devMode: true, auth: { signingKeys: [k] } });
    const devUser = await login(server, "ann");
    expect(decodeProtectedHeader(devUser.token).kid).toBe("shared");
    expect(decodeJwt(devUser.token).dev).toBe(true);
    const partnerToken = await partnerClient(server).mintToken({
      userId: "ann",
      deviceId: devUser.deviceId,
    });
    expect(decodeJwt(partnerToken.token).dev).toBeUndefined();

    server = await server.restart({ devMode: false });
    await expect(
      userFromToken(server, "ann", devUser.deviceId, devUser.token).chat.getMe({}),
    ).rejects.toMatchObject(unauthenticated);
    const sub = openSubscribe(userFromToken(server, "ann", devUser.deviceId, devUser.token).chat);
    await sub.frames.untilEnded();
    expect(sub.frames.error?.code).toBe(Code.Unauthenticated);
    await expect(
      userFromToken(server, "ann", devUser.deviceId, partnerToken.token).chat.getMe({}),
    ).resolves.toMatchObject({ user: { userId: "ann" } });
  });
});

describe("conversations on a user's behalf", () => {
  it("creates direct chats and groups that the acting user sees as their own", async () => {
    server = await startServer({ devMode: false, auth: { signingKeys: [key("k1")] } });
    const p = partnerClient(server);
    const u1 = await provision(server, "u1");
    const u2 = await provision(server, "u2");
    const u3 = await provision(server, "u3");

    const dm = await p.createConversation({
      actingUserId: "u1",
      kind: ConversationKind.DIRECT,
      memberUserIds: ["u2"],
    });
    expect(dm.created).toBe(true);
    expect(dm.conversation!.kind).toBe(ConversationKind.DIRECT);
    const dmId = dm.conversation!.conversationId;
    const again = await u2.chat.createDirectConversation({ peerUserId: "u1" });
    expect(again.created).toBe(false);
    expect(again.conversation!.conversationId).toBe(dmId);
    const dmAgain = await p.createConversation({
      actingUserId: "u2",
      kind: ConversationKind.DIRECT,
      memberUserIds: ["u1"],
    });
    expect(dmAgain).toMatchObject({ created: false, conversation: { conversationId: dmId } });

    const req = {
      actingUserId: "u1",
      kind: ConversationKind.GROUP,
      title: "Support",
      memberUserIds: ["u2", "u3"],
      clientRequestId: "ticket-42",
    };
    const g = await p.createConversation(req);
    expect(g.created).toBe(true);
    expect(g.conversation!.myRole).toBe(Role.OWNER);
    const gId = g.conversation!.conversationId;
    const retry = await p.createConversation(req);
    expect(retry).toMatchObject({ created: false, conversation: { conversationId: gId } });

    const list = await u1.chat.listConversations({});
    const mine = new Map(list.conversations.map((c) => [c.conversationId, c]));
    expect([...mine.keys()].sort()).toEqual([dmId, gId].sort());
    expect(mine.get(gId)!.myRole).toBe(Role.OWNER);
    expect(mine.get(gId)!.title).toBe("Support");
    const asU3 = (await u3.chat.getConversation({ conversationId: gId })).conversation!;
    expect(asU3.myRole).toBe(Role.MEMBER);
    expect(asU3.members.find((m) => m.userId === "u1")!.role).toBe(Role.OWNER);
    const created = (await u3.chat.getHistory({ conversationId: gId })).events[0]!;
    expect(created.actorUserId).toBe("u1");
    expect(created.kind.case).toBe("conversationCreated");
    // The owner can run the group as if they had created it themselves.
    await expect(
      u1.chat.renameConversation({ conversationId: gId, title: "Support (closed)" }),
    ).resolves.toBeDefined();

    const bad = [
      { ...req, kind: ConversationKind.UNSPECIFIED },
      { ...req, kind: ConversationKind.DIRECT, memberUserIds: ["u2", "u3"] },
      { ...req, kind: ConversationKind.DIRECT, memberUserIds: ["u1"] },
      { ...req, title: "" },
      { ...req, actingUserId: "" },
      { ...req, clientRequestId: "has space" },
    ];
    for (const r of bad) await expect(p.createConversation(r)).rejects.toMatchObject(invalid);
    await expect(p.createConversation({ ...req, actingUserId: "ghost" })).rejects.toMatchObject(
      notFound,
    );
    await expect(
      p.createConversation({ ...req, memberUserIds: ["u2", "ghost"], clientRequestId: "" }),
    ).rejects.toMatchObject(notFound);
    expect((await u1.chat.listConversations({})).conversations).toHaveLength(2);
  });
});

describe("system messages", () => {
  it("posts system and bot messages to members' streams, idempotently", async () => {
    server = await startServer({ devMode: false, auth: { signingKeys: [key("k1")] } });
    const p = partnerClient(server);
    const u1 = await provision(server, "u1");
    const u2 = await provision(server, "u2");
    await provision(server, "u3");
    const g = await p.createConversation({
      actingUserId: "u1",
      kind: ConversationKind.GROUP,
      title: "g",
      memberUserIds: ["u2"],
    });
    const id = g.conversation!.conversationId;
    const streams = [openSession(u1.chat), openSubscribe(u2.via("connect"))];
    for (const s of streams) await s.frames.synced();

    const sys = await p.sendSystemMessage({
      conversationId: id,
      clientMsgId: "welcome",
      content: { text: "Welcome!" },
    });
    expect(sys.result!.duplicate).toBe(false);
    const sysEvent = sys.result!.event!;
    expect(sysEvent.seq).toBe(2n);
    expect(sysEvent.actorUserId).toBe("");
    expect(sysEvent.actorDeviceId).toBe("");
    expect(sysEvent.kind).toMatchObject({
      case: "messagePosted",
      value: { messageKind: MessageKind.SYSTEM, content: { text: "Welcome!" } },
    });

    const bot = await p.sendSystemMessage({
      conversationId: id,
      senderUserId: "u1",
      clientMsgId: "bot-1",
      content: { text: "beep" },
    });
    const botEvent = bot.result!.event!;
    expect(botEvent.actorUserId).toBe("u1");
    expect(botEvent.kind).toMatchObject({
      case: "messagePosted",
      value: { messageKind: MessageKind.BOT, content: { text: "beep" } },
    });

    for (const s of streams) {
      await s.frames.until((f) => f.events(id).some((e) => e.seq === 3n));
      const got = s.frames.events(id);
      expect(seqs(got)).toEqual([1, 2, 3]);
      expect(got[1]!.eventId).toBe(sysEvent.eventId);
      expect(got[1]!.kind).toMatchObject({ value: { messageKind: MessageKind.SYSTEM } });
      expect(got[2]!.kind).toMatchObject({ value: { messageKind: MessageKind.BOT } });
    }

    const retry = await p.sendSystemMessage({
      conversationId: id,
      clientMsgId: "welcome",
      content: { text: "Welcome!" },
    });
    expect(retry.result!.duplicate).toBe(true);
    expect(retry.result!.event!.eventId).toBe(sysEvent.eventId);
    const botRetry = await p.sendSystemMessage({
      conversationId: id,
      senderUserId: "u1",
      clientMsgId: "bot-1",
      content: { text: "beep" },
    });
    expect(botRetry.result!.duplicate).toBe(true);
    expect(botRetry.result!.event!.eventId).toBe(botEvent.eventId);

    await expect(
      p.sendSystemMessage({
        conversationId: id,
        senderUserId: "u3",
        clientMsgId: "intruder",
        content: { text: "hi" },
      }),
    ).rejects.toMatchObject({ code: Code.PermissionDenied });
    await expect(
      p.sendSystemMessage({ conversationId: id, clientMsgId: "", content: { text: "x" } }),
    ).rejects.toMatchObject(invalid);
    await expect(
      p.sendSystemMessage({ conversationId: id, clientMsgId: "empty", content: {} }),
    ).rejects.toMatchObject(invalid);
    await expect(
      p.sendSystemMessage({
        conversationId: "c_00000000000000000000000000",
        clientMsgId: "x",
        content: { text: "x" },
      }),
    ).rejects.toMatchObject(notFound);

    await settle();
    for (const s of streams) expect(seqs(s.frames.events(id))).toEqual([1, 2, 3]);
    const history = await u2.chat.getHistory({ conversationId: id });
    expect(seqs(history.events)).toEqual([1, 2, 3]);
    // System and bot messages count as unread for members who did not post them.
    const asU2 = (await u2.chat.getConversation({ conversationId: id })).conversation!;
    expect(asU2.unreadCount).toBe(2);
    for (const s of streams) s.abort();
  });
});
