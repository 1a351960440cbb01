import { Code } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import {
  ConversationKind,
  type Event,
  MemberRemovalReason,
  Role,
} from "../../gen/chat/v1/event_pb.js";
import {
  group as createGroup,
  login,
  openSession,
  openSubscribe,
  seqs,
  settle,
  type User,
} from "../helpers/clients.js";
import { startServer, type TestServer } from "../helpers/server.js";

let server: TestServer | undefined;
afterEach(async () => {
  await server?.destroy();
  server = undefined;
});

const users = (s: TestServer, ...names: string[]) => Promise.all(names.map((n) => login(s, n)));

const group = (owner: User, members: User[], title = "team") => createGroup(owner, members, title);

const text = (t: string) => ({ text: t });

/** Distinct last-activity timestamps: the store keeps them in milliseconds. */
const tick = () => new Promise((r) => setTimeout(r, 5));

describe("direct conversations", () => {
  it("are one get-or-create conversation per user pair, whichever side asks", async () => {
    server = await startServer();
    const [a, b] = await users(server, "ann", "ben");
    const first = await a!.chat.createDirectConversation({ peerUserId: b!.userId });
    expect(first.created).toBe(true);
    const conv = first.conversation!;
    expect(conv.kind).toBe(ConversationKind.DIRECT);
    expect(conv.headSeq).toBe(1n);
    expect(conv.memberCount).toBe(2);
    expect(conv.title).toBe("");

    const back = await b!.chat.createDirectConversation({ peerUserId: a!.userId });
    expect(back.created).toBe(false);
    expect(back.conversation!.conversationId).toBe(conv.conversationId);
    const again = await a!.chat.createDirectConversation({ peerUserId: b!.userId });
    expect(again.created).toBe(false);
    expect(again.conversation!.conversationId).toBe(conv.conversationId);

    const history = await b!.chat.getHistory({ conversationId: conv.conversationId });
    expect(seqs(history.events)).toEqual([1]);
  });

  it("creates exactly one conversation under concurrent creates from both sides", async () => {
    server = await startServer();
    const [a, b] = await users(server, "ann", "ben");
    const results = await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        i % 2 === 0
          ? a!.chat.createDirectConversation({ peerUserId: b!.userId })
          : b!.chat.createDirectConversation({ peerUserId: a!.userId }),
      ),
    );
    const ids = new Set(results.map((r) => r.conversation!.conversationId));
    expect(ids.size).toBe(1);
    expect(results.filter((r) => r.created)).toHaveLength(1);
    const list = await a!.chat.listConversations({});
    expect(list.conversations.map((c) => c.conversationId)).toEqual([...ids]);
  });

  it("rejects a direct chat with oneself and with unknown or malformed peers", async () => {
    server = await startServer();
    const [a] = await users(server, "ann");
    await expect(a!.chat.createDirectConversation({ peerUserId: a!.userId })).rejects.toMatchObject(
      { code: Code.InvalidArgument },
    );
    await expect(a!.chat.createDirectConversation({ peerUserId: "nobody" })).rejects.toMatchObject({
      code: Code.NotFound,
    });
    await expect(a!.chat.createDirectConversation({ peerUserId: "" })).rejects.toMatchObject({
      code: Code.InvalidArgument,
    });
    await expect(
      a!.chat.createDirectConversation({ peerUserId: "no spaces" }),
    ).rejects.toMatchObject({ code: Code.InvalidArgument });
    expect((await a!.chat.listConversations({})).conversations).toHaveLength(0);
  });
});

describe("group conversations", () => {
  it("makes the creator OWNER and the others MEMBER, with a creation event at seq 1", async () => {
    server = await startServer();
    const [a, b, c] = await users(server, "ann", "ben", "cat");
    const res = await a!.chat.createGroupConversation({
      title: "  Project X  ",
      memberUserIds: [b!.userId, c!.userId, b!.userId],
    });
    expect(res.created).toBe(true);
    const conv = res.conversation!;
    expect(conv.kind).toBe(ConversationKind.GROUP);
    expect(conv.title).toBe("Project X");
    expect(conv.myRole).toBe(Role.OWNER);
    expect(conv.memberCount).toBe(3);
    const roles = Object.fromEntries(conv.members.map((m) => [m.userId, m.role]));
    expect(roles).toEqual({ ann: Role.OWNER, ben: Role.MEMBER, cat: Role.MEMBER });
    for (const m of conv.members) expect(m.joinedSeq).toBe(1n);

    const asBen = await b!.chat.getConversation({ conversationId: conv.conversationId });
    expect(asBen.conversation!.myRole).toBe(Role.MEMBER);
    const history = await c!.chat.getHistory({ conversationId: conv.conversationId });
    const created = history.events[0]!;
    expect(created.seq).toBe(1n);
    expect(created.actorUserId).toBe("ann");
    expect(created.kind.case).toBe("conversationCreated");
    if (created.kind.case !== "conversationCreated") return;
    expect(created.kind.value.kind).toBe(ConversationKind.GROUP);
    expect(created.kind.value.title).toBe("Project X");
    expect([...created.kind.value.memberUserIds].sort()).toEqual(["ann", "ben", "cat"]);
  });

  it("validates the title and the members", async () => {
    server = await startServer();
    const [a, b] = await users(server, "ann", "ben");
    for (const title of ["", "   ", "x".repeat(257), "bad\u0007title"]) {
      await expect(
        a!.chat.createGroupConversation({ title, memberUserIds: [b!.userId] }),
      ).rejects.toMatchObject({ code: Code.InvalidArgument });
    }
    const longest = await a!.chat.createGroupConversation({
      title: "x".repeat(256),
      memberUserIds: [b!.userId],
    });
    expect(longest.conversation!.title).toHaveLength(256);
    await expect(
      a!.chat.createGroupConversation({ title: "g", memberUserIds: [b!.userId, "ghost"] }),
    ).rejects.toMatchObject({ code: Code.NotFound });
    await expect(
      a!.chat.createGroupConversation({ title: "g", memberUserIds: ["bad id"] }),
    ).rejects.toMatchObject({ code: Code.InvalidArgument });
    await expect(
      a!.chat.createGroupConversation({
        title: "g",
        memberUserIds: [],
        clientRequestId: "bad key!",
      }),
    ).rejects.toMatchObject({ code: Code.InvalidArgument });
    // Nothing half-created by the failures: only the valid group exists.
    const list = await b!.chat.listConversations({});
    expect(list.conversations.map((c) => c.conversationId)).toEqual([
      longest.conversation!.conversationId,
    ]);
  });

  it("returns the same group for retries with the same client_request_id", async () => {
    server = await startServer();
    const [a, b, c] = await users(server, "ann", "ben", "cat");
    const req = { title: "g", memberUserIds: [b!.userId], clientRequestId: "req-1" };
    const first = await a!.chat.createGroupConversation(req);
    expect(first.created).toBe(true);
    const retry = await a!.chat.createGroupConversation(req);
    expect(retry.created).toBe(false);
    expect(retry.conversation!.conversationId).toBe(first.conversation!.conversationId);

    const concurrent = await Promise.all(
      Array.from({ length: 8 }, () =>
        a!.chat.createGroupConversation({ ...req, clientRequestId: "req-2" }),
      ),
    );
    expect(new Set(concurrent.map((r) => r.conversation!.conversationId)).size).toBe(1);
    expect(concurrent.filter((r) => r.created)).toHaveLength(1);

    // The key is scoped per creator, and no key means a new group every time.
    const other = await c!.chat.createGroupConversation({ ...req, memberUserIds: [a!.userId] });
    expect(other.created).toBe(true);
    const noKey1 = await a!.chat.createGroupConversation({ title: "g", memberUserIds: [] });
    const noKey2 = await a!.chat.createGroupConversation({ title: "g", memberUserIds: [] });
    expect(noKey1.conversation!.conversationId).not.toBe(noKey2.conversation!.conversationId);
    const list = await a!.chat.listConversations({});
    expect(list.conversations).toHaveLength(5);

    // The request id keys the group, not a message: the creator's own keys are free.
    const id = first.conversation!.conversationId;
    const sent = await a!.chat.send({
      conversationId: id,
      clientMsgId: "req-1",
      content: { text: "hi" },
    });
    expect([sent.duplicate, sent.event?.kind.case]).toEqual([false, "messagePosted"]);
    const edit = await a!.chat.editMessage({
      conversationId: id,
      targetSeq: sent.event!.seq,
      text: "hello",
      clientMsgId: "req-2",
    });
    expect(edit.event?.kind.case).toBe("messageEdited");
  });
});

describe("group member cap", () => {
  it("allows exactly the cap on create and on add, and refuses more", async () => {
    server = await startServer({ limits: { groupMaxMembers: 4 } });
    const [a, b, c, d, e, f] = await users(server, "ann", "ben", "cat", "dan", "eve", "fay");
    const full = await a!.chat.createGroupConversation({
      title: "full",
      memberUserIds: [b!, c!, d!].map((u) => u.userId),
    });
    expect(full.conversation!.memberCount).toBe(4);
    await expect(
      a!.chat.createGroupConversation({
        title: "too big",
        memberUserIds: [b!, c!, d!, e!].map((u) => u.userId),
      }),
    ).rejects.toMatchObject({ code: Code.ResourceExhausted });

    const id = await group(a!, [b!]);
    await expect(
      a!.chat.addMembers({ conversationId: id, userIds: [c!.userId, d!.userId, e!.userId] }),
    ).rejects.toMatchObject({ code: Code.ResourceExhausted });
    const added = await a!.chat.addMembers({ conversationId: id, userIds: [c!.userId, d!.userId] });
    expect(added.event!.seq).toBe(2n);
    await expect(
      a!.chat.addMembers({ conversationId: id, userIds: [e!.userId] }),
    ).rejects.toMatchObject({ code: Code.ResourceExhausted });
    // Existing members do not count twice toward the cap.
    const noop = await a!.chat.addMembers({ conversationId: id, userIds: [b!.userId] });
    expect(noop.event).toBeUndefined();
    // Nor does an id repeated in one request.
    const repeated = await a!.chat.createGroupConversation({
      title: "two",
      memberUserIds: Array.from({ length: 5 }, () => b!.userId),
    });
    expect(repeated.conversation!.memberCount).toBe(2);
    // Leaving frees a place.
    await d!.chat.leaveConversation({ conversationId: id });
    const refill = await a!.chat.addMembers({ conversationId: id, userIds: [f!.userId] });
    expect(refill.event!.kind.case).toBe("membersAdded");
    const conv = await a!.chat.getConversation({ conversationId: id });
    expect(conv.conversation!.memberCount).toBe(4);
    expect(conv.conversation!.members.map((m) => m.userId).sort()).toEqual([
      "ann",
      "ben",
      "cat",
      "fay",
    ]);
  });
});

describe("roles", () => {
  async function setup(s: TestServer) {
    const [owner, admin, m1, m2, m3, outsider] = await users(
      s,
      "owner",
      "admin",
      "m1",
      "m2",
      "m3",
      "out",
    );
    const id = await group(owner!, [admin!, m1!, m2!]);
    await owner!.chat.setMemberRole({
      conversationId: id,
      userId: admin!.userId,
      role: Role.ADMIN,
    });
    return { owner: owner!, admin: admin!, m1: m1!, m2: m2!, m3: m3!, outsider: outsider!, id };
  }

  it("keeps plain members from administering the group", async () => {
    server = await startServer();
    const { m1, m2, m3, admin, id } = await setup(server);
    const denied = { code: Code.PermissionDenied };
    await expect(
      m1.chat.addMembers({ conversationId: id, userIds: [m3.userId] }),
    ).rejects.toMatchObject(denied);
    await expect(
      m1.chat.removeMember({ conversationId: id, userId: m2.userId }),
    ).rejects.toMatchObject(denied);
    await expect(
      m1.chat.renameConversation({ conversationId: id, title: "mine" }),
    ).rejects.toMatchObject(denied);
    await expect(
      m1.chat.setMemberRole({ conversationId: id, userId: m1.userId, role: Role.ADMIN }),
    ).rejects.toMatchObject(denied);
    await expect(
      m1.chat.removeMember({ conversationId: id, userId: admin.userId }),
    ).rejects.toMatchObject(denied);
    const conv = await m1.chat.getConversation({ conversationId: id });
    expect(conv.conversation!.title).toBe("team");
    expect(conv.conversation!.memberCount).toBe(4);
    expect(conv.conversation!.headSeq).toBe(2n);
  });

  it("lets admins add, remove members and rename, but not touch admins or roles", async () => {
    server = await startServer();
    const { owner, admin, m1, m2, m3, id } = await setup(server);
    const added = await admin.chat.addMembers({ conversationId: id, userIds: [m3.userId] });
    expect(added.event!.actorUserId).toBe(admin.userId);
    const removed = await admin.chat.removeMember({ conversationId: id, userId: m2.userId });
    expect(removed.event!.kind.case).toBe("memberRemoved");
    const renamed = await admin.chat.renameConversation({ conversationId: id, title: "renamed" });
    expect(renamed.event!.kind.case).toBe("conversationRenamed");

    await owner.chat.setMemberRole({ conversationId: id, userId: m1.userId, role: Role.ADMIN });
    await expect(
      admin.chat.removeMember({ conversationId: id, userId: m1.userId }),
    ).rejects.toMatchObject({ code: Code.PermissionDenied });
    await expect(
      admin.chat.removeMember({ conversationId: id, userId: owner.userId }),
    ).rejects.toMatchObject({ code: Code.PermissionDenied });
    await expect(
      admin.chat.setMemberRole({ conversationId: id, userId: m3.userId, role: Role.ADMIN }),
    ).rejects.toMatchObject({ code: Code.PermissionDenied });
    await expect(
      admin.chat.setMemberRole({ conversationId: id, userId: admin.userId, role: Role.OWNER }),
    ).rejects.toMatchObject({ code: Code.PermissionDenied });
    // Removing someone who is not a member names the problem.
    await expect(
      admin.chat.removeMember({ conversationId: id, userId: m2.userId }),
    ).rejects.toMatchObject({ code: Code.NotFound });

    const conv = (await owner.chat.getConversation({ conversationId: id })).conversation!;
    expect(conv.title).toBe("renamed");
    const roles = Object.fromEntries(conv.members.map((m) => [m.userId, m.role]));
    expect(roles).toEqual({
      owner: Role.OWNER,
      admin: Role.ADMIN,
      m1: Role.ADMIN,
      m3: Role.MEMBER,
    });
  });

  it("lets owners change roles and remove admins; the last owner must hand over before leaving", async () => {
    server = await startServer();
    const { owner, admin, m1, id } = await setup(server);
    const promoted = await owner.chat.setMemberRole({
      conversationId: id,
      userId: m1.userId,
      role: Role.ADMIN,
    });
    expect(promoted.event!.kind.case).toBe("memberRoleChanged");
    const same = await owner.chat.setMemberRole({
      conversationId: id,
      userId: m1.userId,
      role: Role.ADMIN,
    });
    expect(same.event).toBeUndefined();
    await owner.chat.removeMember({ conversationId: id, userId: m1.userId });
    await expect(
      owner.chat.setMemberRole({ conversationId: id, userId: m1.userId, role: Role.ADMIN }),
    ).rejects.toMatchObject({ code: Code.NotFound });
    for (const title of ["", "  ", "t".repeat(257)]) {
      await expect(
        owner.chat.renameConversation({ conversationId: id, title }),
      ).rejects.toMatchObject({ code: Code.InvalidArgument });
    }
    await expect(
      owner.chat.setMemberRole({ conversationId: id, userId: "owner", role: Role.UNSPECIFIED }),
    ).rejects.toMatchObject({ code: Code.InvalidArgument });

    await expect(owner.chat.leaveConversation({ conversationId: id })).rejects.toMatchObject({
      code: Code.FailedPrecondition,
    });
    // Demoting oneself as the only owner would leave the group ownerless.
    await expect(
      owner.chat.setMemberRole({ conversationId: id, userId: owner.userId, role: Role.ADMIN }),
    ).rejects.toMatchObject({ code: Code.FailedPrecondition });

    await owner.chat.setMemberRole({ conversationId: id, userId: admin.userId, role: Role.OWNER });
    const left = await owner.chat.leaveConversation({ conversationId: id });
    expect(left.event!.kind.case).toBe("memberRemoved");
    await expect(owner.chat.getConversation({ conversationId: id })).rejects.toMatchObject({
      code: Code.PermissionDenied,
    });
    const conv = (await admin.chat.getConversation({ conversationId: id })).conversation!;
    expect(conv.myRole).toBe(Role.OWNER);
    expect(conv.members.map((m) => m.userId).sort()).toEqual(["admin", "m2"]);
  });

  it("lets a member leave, and a sole owner leave an otherwise empty group", async () => {
    server = await startServer();
    const { owner, m2, id } = await setup(server);
    const left = await m2.chat.leaveConversation({ conversationId: id });
    expect(left.event!.actorUserId).toBe(m2.userId);
    await expect(m2.chat.leaveConversation({ conversationId: id })).rejects.toMatchObject({
      code: Code.PermissionDenied,
    });
    expect((await m2.chat.listConversations({})).conversations).toHaveLength(0);

    const solo = await group(owner, []);
    const gone = await owner.chat.leaveConversation({ conversationId: solo });
    expect(gone.event!.seq).toBe(2n);
  });

  it("rejects membership changes and renames in direct conversations", async () => {
    server = await startServer();
    const [a, b, c] = await users(server, "ann", "ben", "cat");
    const id = (await a!.chat.createDirectConversation({ peerUserId: b!.userId })).conversation!
      .conversationId;
    const precondition = { code: Code.FailedPrecondition };
    await expect(
      a!.chat.addMembers({ conversationId: id, userIds: [c!.userId] }),
    ).rejects.toMatchObject(precondition);
    await expect(
      a!.chat.removeMember({ conversationId: id, userId: b!.userId }),
    ).rejects.toMatchObject(precondition);
    await expect(
      a!.chat.renameConversation({ conversationId: id, title: "x" }),
    ).rejects.toMatchObject(precondition);
    await expect(a!.chat.leaveConversation({ conversationId: id })).rejects.toMatchObject(
      precondition,
    );
    await expect(
      a!.chat.setMemberRole({ conversationId: id, userId: b!.userId, role: Role.ADMIN }),
    ).rejects.toMatchObject(precondition);
    const conv = (await b!.chat.getConversation({ conversationId: id })).conversation!;
    expect(conv.headSeq).toBe(1n);
    expect(conv.memberCount).toBe(2);
  });
});

describe("membership events", () => {
  it("records every change as the next seq with its payload", async () => {
    server = await startServer();
    const [a, b, c, d] = await users(server, "ann", "ben", "cat", "dan");
    const id = await group(a!, [b!]);
    const stream = openSubscribe(b!.chat);
    await stream.frames.synced();

    const responses: (Event | undefined)[] = [];
    responses.push(
      (await a!.chat.addMembers({ conversationId: id, userIds: [c!.userId, d!.userId] })).event,
    );
    responses.push(
      (await a!.chat.setMemberRole({ conversationId: id, userId: b!.userId, role: Role.ADMIN }))
        .event,
    );
    responses.push(
      (await b!.chat.renameConversation({ conversationId: id, title: "new name" })).event,
    );
    responses.push((await b!.chat.removeMember({ conversationId: id, userId: c!.userId })).event);
    responses.push((await d!.chat.leaveConversation({ conversationId: id })).event);
    expect(responses.map((e) => Number(e!.seq))).toEqual([2, 3, 4, 5, 6]);

    // Adding people who are members already changes nothing and returns no event.
    const noop = await a!.chat.addMembers({ conversationId: id, userIds: [b!.userId] });
    expect(noop.event).toBeUndefined();
    const mixed = await a!.chat.addMembers({ conversationId: id, userIds: [b!.userId, c!.userId] });
    expect(mixed.event!.seq).toBe(7n);

    const history = await a!.chat.getHistory({ conversationId: id });
    expect(seqs(history.events)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    const [, added, role, renamed, removed, left, readded] = history.events;
    expect(added!.actorUserId).toBe("ann");
    expect(added!.kind).toMatchObject({
      case: "membersAdded",
      value: { userIds: ["cat", "dan"], role: Role.MEMBER },
    });
    expect(role!.kind).toMatchObject({
      case: "memberRoleChanged",
      value: { userId: "ben", role: Role.ADMIN },
    });
    expect(renamed!.actorUserId).toBe("ben");
    expect(renamed!.kind).toMatchObject({
      case: "conversationRenamed",
      value: { title: "new name" },
    });
    expect(removed!.actorUserId).toBe("ben");
    expect(removed!.kind).toMatchObject({
      case: "memberRemoved",
      value: { userId: "cat", reason: MemberRemovalReason.REMOVED },
    });
    expect(left!.actorUserId).toBe("dan");
    expect(left!.kind).toMatchObject({
      case: "memberRemoved",
      value: { userId: "dan", reason: MemberRemovalReason.LEFT },
    });
    expect(readded!.kind).toMatchObject({ case: "membersAdded", value: { userIds: ["cat"] } });
    for (const [i, e] of responses.entries())
      expect(e!.eventId).toBe(history.events[i + 1]!.eventId);

    // A member's live stream sees the same changes, in the same order.
    await stream.frames.until((f) => f.events(id).some((e) => e.seq === 7n));
    await settle();
    expect(seqs(stream.frames.events(id))).toEqual([1, 2, 3, 4, 5, 6, 7]);
    stream.abort();

    const conv = (await a!.chat.getConversation({ conversationId: id })).conversation!;
    expect(conv.title).toBe("new name");
    expect(conv.headSeq).toBe(7n);
    const cat = conv.members.find((m) => m.userId === "cat")!;
    expect(cat.joinedSeq).toBe(7n);
  });
});

describe("re-joining", () => {
  it("gives a member added back what follows the re-join, live on a stream kept open", async () => {
    server = await startServer();
    const [a, b, c] = await users(server, "ann", "ben", "cat");
    const id = await group(a!, [b!, c!]);
    const stream = openSession(c!.chat);
    await stream.frames.synced();
    await a!.chat.removeMember({ conversationId: id, userId: c!.userId });
    await a!.chat.send({ conversationId: id, clientMsgId: "away", content: text("while away") });
    const back = await a!.chat.addMembers({ conversationId: id, userIds: [c!.userId] });
    expect(back.event!.seq).toBe(4n);
    await a!.chat.send({ conversationId: id, clientMsgId: "back", content: text("welcome back") });

    await stream.frames.until((f) => f.events(id).some((e) => e.seq === 5n), 5000, "seq 5");
    await settle();
    expect(seqs(stream.frames.events(id))).toEqual([1, 2, 4, 5]);
    stream.abort();
    const conv = (await c!.chat.getConversation({ conversationId: id })).conversation!;
    expect(conv.visibleFromSeq).toBe(4n);
    expect(seqs((await c!.chat.getHistory({ conversationId: id })).events)).toEqual([4, 5]);
  });
});

describe("listing and reading conversations", () => {
  it("lists by last activity with the last event and unread count", async () => {
    server = await startServer();
    const [a, b, c] = await users(server, "ann", "ben", "cat");
    const ab = (await a!.chat.createDirectConversation({ peerUserId: b!.userId })).conversation!
      .conversationId;
    await tick();
    const ac = (await a!.chat.createDirectConversation({ peerUserId: c!.userId })).conversation!
      .conversationId;
    await tick();
    const g = await group(a!, [b!, c!]);
    await tick();

    const before = await a!.chat.listConversations({});
    expect(before.conversations.map((x) => x.conversationId)).toEqual([g, ac, ab]);

    await b!.chat.send({ conversationId: ab, clientMsgId: "1", content: text("hi ann") });
    await b!.chat.send({ conversationId: ab, clientMsgId: "2", content: text("again") });
    await tick();
    await a!.chat.send({ conversationId: g, clientMsgId: "1", content: text("mine") });
    await tick();
    await c!.chat.send({ conversationId: ac, clientMsgId: "1", content: text("from cat") });

    const list = await a!.chat.listConversations({});
    expect(list.nextPageToken).toBe("");
    expect(list.conversations.map((x) => x.conversationId)).toEqual([ac, g, ab]);
    const byId = new Map(list.conversations.map((x) => [x.conversationId, x]));
    const lastText = (id: string) => {
      const k = byId.get(id)!.lastEvent!.kind;
      return k.case === "messagePosted" ? k.value.content?.text : k.case;
    };
    expect(lastText(ac)).toBe("from cat");
    expect(lastText(g)).toBe("mine");
    expect(lastText(ab)).toBe("again");
    expect(byId.get(ab)!.unreadCount).toBe(2);
    expect(byId.get(ac)!.unreadCount).toBe(1);
    // Own messages are never unread.
    expect(byId.get(g)!.unreadCount).toBe(0);
    expect(byId.get(g)!.members).toHaveLength(0);
    expect(byId.get(g)!.myRole).toBe(Role.OWNER);

    await a!.chat.markRead({ conversationId: ab, seq: 2n });
    const after = await a!.chat.listConversations({});
    const ab2 = after.conversations.find((x) => x.conversationId === ab)!;
    expect(ab2.unreadCount).toBe(1);
    expect(ab2.myReadSeq).toBe(2n);
  });

  it("pages through every conversation exactly once", async () => {
    server = await startServer();
    const [a, ...peers] = await users(server, "ann", "p1", "p2", "p3", "p4", "p5", "p6", "p7");
    const created: string[] = [];
    for (const p of peers) {
      created.push(
        (await a!.chat.createDirectConversation({ peerUserId: p.userId })).conversation!
          .conversationId,
      );
    }
    // Many share a millisecond; the order must still be total.
    for (let i = 0; i < 3; i++) created.push(await group(a!, [peers[i]!], `g${i}`));

    const seen: string[] = [];
    const pageSizes: number[] = [];
    let token = "";
    for (let guard = 0; guard < 20; guard++) {
      const page = await a!.chat.listConversations({ pageSize: 3, pageToken: token });
      pageSizes.push(page.conversations.length);
      seen.push(...page.conversations.map((x) => x.conversationId));
      token = page.nextPageToken;
      if (!token) break;
    }
    expect(pageSizes).toEqual([3, 3, 3, 1]);
    expect(new Set(seen).size).toBe(seen.length);
    expect([...seen].sort()).toEqual([...created].sort());
    const all = await a!.chat.listConversations({ pageSize: 200 });
    expect(all.conversations.map((x) => x.conversationId)).toEqual(seen);

    await expect(a!.chat.listConversations({ pageSize: 201 })).rejects.toMatchObject({
      code: Code.InvalidArgument,
    });
    await expect(a!.chat.listConversations({ pageToken: "garbage" })).rejects.toMatchObject({
      code: Code.InvalidArgument,
    });
    // A revision past what the store can hold is the client's error too.
    const forged = Buffer.from("1:c_x:9999999999999999999").toString("base64url");
    await expect(a!.chat.listConversations({ pageToken: forged })).rejects.toMatchObject({
      code: Code.InvalidArgument,
    });
  });

  it("lists a conversation that moves ahead while the client pages, at the top of the next page", async () => {
    server = await startServer();
    const [a, ...peers] = await users(server, "ann", "p1", "p2", "p3", "p4", "p5");
    const ids: string[] = [];
    for (const p of peers.slice(0, 4)) {
      ids.push(
        (await a!.chat.createDirectConversation({ peerUserId: p.userId })).conversation!
          .conversationId,
      );
      await tick();
    }
    const first = await a!.chat.listConversations({ pageSize: 2 });
    expect(first.conversations.map((x) => x.conversationId)).toEqual([ids[3], ids[2]]);
    // Not listed yet, both now sort ahead of the page's position.
    await peers[0]!.chat.send({ conversationId: ids[0]!, clientMsgId: "m", content: text("hi") });
    const joined = await group(peers[4]!, [a!], "new");
    const second = await a!.chat.listConversations({ pageSize: 2, pageToken: first.nextPageToken });
    expect(second.conversations.map((x) => x.conversationId)).toEqual([joined, ids[0], ids[1]]);
    expect(second.conversations[1]!.lastEvent?.kind.case).toBe("messagePosted");
    expect(second.nextPageToken).toBe("");
  });

  it("shows members with roles and joined seqs to members only", async () => {
    server = await startServer();
    const [a, b, c, d] = await users(server, "ann", "ben", "cat", "dan");
    const id = await group(a!, [b!]);
    await a!.chat.send({ conversationId: id, clientMsgId: "1", content: text("x") });
    await a!.chat.addMembers({ conversationId: id, userIds: [c!.userId] });
    const conv = (await c!.chat.getConversation({ conversationId: id })).conversation!;
    expect(conv.members.map((m) => [m.userId, m.role, Number(m.joinedSeq)])).toEqual([
      ["ann", Role.OWNER, 1],
      ["ben", Role.MEMBER, 1],
      ["cat", Role.MEMBER, 3],
    ]);
    for (const m of conv.members) expect(m.joinedAt).toBeDefined();
    expect(conv.myRole).toBe(Role.MEMBER);
    expect(conv.visibleFromSeq).toBe(3n);
    expect(conv.headSeq).toBe(3n);

    await expect(d!.chat.getConversation({ conversationId: id })).rejects.toMatchObject({
      code: Code.PermissionDenied,
    });
    await expect(
      d!.chat.getConversation({ conversationId: "c_00000000000000000000000000" }),
    ).rejects.toMatchObject({ code: Code.NotFound });
    await expect(d!.chat.getConversation({ conversationId: "nope" })).rejects.toMatchObject({
      code: Code.InvalidArgument,
    });
  });

  it("shows a newly added member history only from the seq they joined at", async () => {
    server = await startServer();
    const [a, b, c] = await users(server, "ann", "ben", "cat");
    const id = await group(a!, [b!]);
    for (let i = 0; i < 3; i++) {
      await a!.chat.send({ conversationId: id, clientMsgId: `old${i}`, content: text(`old${i}`) });
    }
    const add = await a!.chat.addMembers({ conversationId: id, userIds: [c!.userId] });
    expect(add.event!.seq).toBe(5n);
    await a!.chat.send({ conversationId: id, clientMsgId: "new", content: text("new") });

    const conv = (await c!.chat.getConversation({ conversationId: id })).conversation!;
    expect(conv.visibleFromSeq).toBe(5n);
    // Only messages after joining count as unread.
    expect(conv.unreadCount).toBe(1);
    const latest = await c!.chat.getHistory({ conversationId: id });
    expect(seqs(latest.events)).toEqual([5, 6]);
    expect(latest.hasMore).toBe(false);
    const older = await c!.chat.getHistory({ conversationId: id, anchorSeq: 5n, direction: 2 });
    expect(older.events).toHaveLength(0);
    expect(older.hasMore).toBe(false);
    const forward = await c!.chat.getHistory({ conversationId: id, anchorSeq: 0n, direction: 1 });
    expect(seqs(forward.events)).toEqual([5, 6]);
    const sync = await c!.chat.sync({});
    expect(seqs(sync.batches.find((x) => x.conversationId === id)!.events)).toEqual([5, 6]);
    const stream = openSubscribe(c!.chat);
    await stream.frames.synced();
    expect(seqs(stream.frames.events(id))).toEqual([5, 6]);
    stream.abort();
    // Earlier messages cannot be reached by reference either.
    await expect(
      c!.chat.addReaction({ conversationId: id, targetSeq: 2n, emoji: "👍" }),
    ).rejects.toMatchObject({ code: Code.NotFound });
    // Members from the start still see everything.
    expect(seqs((await b!.chat.getHistory({ conversationId: id })).events)).toEqual([
      1, 2, 3, 4, 5, 6,
    ]);
  });
});
