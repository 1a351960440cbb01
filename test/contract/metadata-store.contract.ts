import { describe, expect, it } from "vitest";
import { ConversationKind, MessageKind, Role } from "../../gen/chat/v1/event_pb.js";
import { DevicePlatform } from "../../gen/chat/v1/model_pb.js";
import type { EventStore } from "../../lib/backends/event-store.js";
import type { MetadataStore } from "../../lib/backends/metadata-store.js";
import { DeviceStateError, NotFoundError, NotMemberError } from "../../lib/errors.js";
import {
  ev,
  freshPerTest,
  newConversationId,
  type StoreFactory,
  type StoreHandle,
  sleep,
} from "./fixtures.js";

async function commitAll(events: EventStore, batch: Parameters<EventStore["commit"]>[0]) {
  const verdicts = await events.commit(batch);
  expect(verdicts.map((v) => v?.message)).toEqual(batch.map(() => undefined));
}

const byUser = <T extends { userId: string }>(rows: T[]) =>
  [...rows].sort((a, b) => (a.userId < b.userId ? -1 : 1));

/**
 * The MetadataStore contract (SQLite, Cassandra): accounts and devices written
 * directly, conversations and memberships projected from committed events,
 * receipts and the queries sync and listing rely on.
 */
export function metadataStoreContract(name: string, factory: StoreFactory) {
  describe(`MetadataStore contract: ${name}`, () => {
    let handle: StoreHandle;
    let events: EventStore;
    let metadata: MetadataStore;
    const fresh = freshPerTest(factory);
    const open = async () => {
      handle = await fresh();
      ({ events, metadata } = handle);
    };

    describe("users", () => {
      it("creates, keeps with createOnly, and renames without it", async () => {
        await open();
        const first = await metadata.putUser("ann", "Ann", true);
        expect(first.created).toBe(true);
        expect(first.user).toMatchObject({ userId: "ann", displayName: "Ann" });
        expect(first.user.createdAtMs).toBeGreaterThan(0);

        const kept = await metadata.putUser("ann", "Annie", true);
        expect(kept.created).toBe(false);
        expect(kept.user.displayName).toBe("Ann");

        await sleep(5);
        const renamed = await metadata.putUser("ann", "Annie", false);
        expect(renamed.created).toBe(false);
        expect(renamed.user.displayName).toBe("Annie");
        expect(renamed.user.createdAtMs).toBe(first.user.createdAtMs);
        expect(renamed.user.updatedAtMs).toBeGreaterThan(first.user.updatedAtMs);

        const plain = await metadata.putUser("ben", "Ben", false);
        expect(plain.created).toBe(true);
      });

      it("gets the known users of a list and skips unknown ones", async () => {
        await open();
        await metadata.putUser("ann", "Ann", true);
        await metadata.putUser("ben", "Ben", true);
        const got = byUser(await metadata.getUsers(["ben", "nobody", "ann"]));
        expect(got.map((u) => [u.userId, u.displayName])).toEqual([
          ["ann", "Ann"],
          ["ben", "Ben"],
        ]);
        expect(await metadata.getUsers([])).toEqual([]);
      });
    });

    describe("devices", () => {
      it("registers a device on first use and touches it afterwards", async () => {
        await open();
        const d = await metadata.ensureDevice("ann", "phone", DevicePlatform.ANDROID);
        expect(d).toMatchObject({
          deviceId: "phone",
          userId: "ann",
          platform: DevicePlatform.ANDROID,
          pushToken: "",
          revokedAtMs: 0,
        });
        await sleep(5);
        const again = await metadata.ensureDevice("ann", "phone", DevicePlatform.ANDROID);
        expect(again.createdAtMs).toBe(d.createdAtMs);
        expect(again.lastActiveAtMs).toBeGreaterThan(d.lastActiveAtMs);
        expect((await metadata.getDevice("phone"))?.userId).toBe("ann");
        expect(await metadata.getDevice("tablet")).toBeUndefined();
      });

      it("refuses a device that belongs to another user", async () => {
        await open();
        await metadata.ensureDevice("ann", "phone", DevicePlatform.IOS);
        await expect(
          metadata.ensureDevice("ben", "phone", DevicePlatform.IOS),
        ).rejects.toBeInstanceOf(DeviceStateError);
        await expect(
          metadata.updateDevice("ben", "phone", {
            platform: DevicePlatform.IOS,
            displayName: "x",
            pushToken: "t",
          }),
        ).rejects.toBeInstanceOf(NotFoundError);
        await expect(metadata.revokeDevice("ben", "phone")).rejects.toBeInstanceOf(NotFoundError);
        expect((await metadata.getDevice("phone"))?.revokedAtMs).toBe(0);
      });

      it("updates platform, name and push token of an own device", async () => {
        await open();
        await metadata.ensureDevice("ann", "phone", DevicePlatform.UNSPECIFIED);
        const d = await metadata.updateDevice("ann", "phone", {
          platform: DevicePlatform.WEB,
          displayName: "Laptop",
          pushToken: "tok-1",
        });
        expect(d).toMatchObject({
          platform: DevicePlatform.WEB,
          displayName: "Laptop",
          pushToken: "tok-1",
        });
        expect(await metadata.getDevice("phone")).toMatchObject({ pushToken: "tok-1" });
        await expect(
          metadata.updateDevice("ann", "unknown", {
            platform: DevicePlatform.WEB,
            displayName: "",
            pushToken: "",
          }),
        ).rejects.toBeInstanceOf(NotFoundError);
        await expect(metadata.revokeDevice("ann", "unknown")).rejects.toBeInstanceOf(NotFoundError);
      });

      it("revokes permanently and idempotently, clearing the push token", async () => {
        await open();
        await metadata.ensureDevice("ann", "phone", DevicePlatform.IOS);
        await metadata.updateDevice("ann", "phone", {
          platform: DevicePlatform.IOS,
          displayName: "Phone",
          pushToken: "tok",
        });
        const revoked = await metadata.revokeDevice("ann", "phone");
        expect(revoked.revokedAtMs).toBeGreaterThan(0);
        expect(revoked.pushToken).toBe("");
        await sleep(5);
        const again = await metadata.revokeDevice("ann", "phone");
        expect(again.revokedAtMs).toBe(revoked.revokedAtMs);
        await expect(
          metadata.ensureDevice("ann", "phone", DevicePlatform.IOS),
        ).rejects.toBeInstanceOf(DeviceStateError);
        await expect(
          metadata.updateDevice("ann", "phone", {
            platform: DevicePlatform.IOS,
            displayName: "Phone",
            pushToken: "tok-2",
          }),
        ).rejects.toBeInstanceOf(DeviceStateError);
        expect((await metadata.getDevice("phone"))?.pushToken).toBe("");
      });

      it("lists a user's devices, revoked ones included", async () => {
        await open();
        await metadata.ensureDevice("ann", "d1", DevicePlatform.IOS);
        await metadata.ensureDevice("ann", "d2", DevicePlatform.WEB);
        await metadata.ensureDevice("ben", "d3", DevicePlatform.WEB);
        await metadata.revokeDevice("ann", "d2");
        const list = await metadata.listDevices("ann");
        expect(list.map((d) => d.deviceId).sort()).toEqual(["d1", "d2"]);
        expect(list.find((d) => d.deviceId === "d2")?.revokedAtMs).toBeGreaterThan(0);
        expect(await metadata.listDevices("nobody")).toEqual([]);
      });

      it("gives a push token to the device that registered it last, of whichever user", async () => {
        await open();
        const token = (t: string) => ({
          platform: DevicePlatform.IOS,
          displayName: "",
          pushToken: t,
        });
        await metadata.ensureDevice("ann", "a1", DevicePlatform.IOS);
        await metadata.ensureDevice("ann", "a2", DevicePlatform.IOS);
        await metadata.ensureDevice("ben", "b1", DevicePlatform.IOS);
        await metadata.updateDevice("ann", "a1", token("install-1"));
        // The same install signs in as ben: ann's notifications must not reach it.
        await metadata.updateDevice("ben", "b1", token("install-1"));
        expect((await metadata.getDevice("a1"))?.pushToken).toBe("");
        expect((await metadata.getDevice("b1"))?.pushToken).toBe("install-1");
        expect(await metadata.pushTargets(["ann"])).toEqual([]);
        // Registering it again on the same device, or another token elsewhere, takes nothing.
        await metadata.updateDevice("ben", "b1", token("install-1"));
        await metadata.updateDevice("ann", "a2", token("install-2"));
        expect((await metadata.getDevice("b1"))?.pushToken).toBe("install-1");
        expect((await metadata.pushTargets(["ann", "ben"])).map((d) => d.deviceId).sort()).toEqual([
          "a2",
          "b1",
        ]);
      });

      it("forgets a stale push token only while the device still has it", async () => {
        await open();
        const token = (t: string) => ({
          platform: DevicePlatform.ANDROID,
          displayName: "",
          pushToken: t,
        });
        await metadata.ensureDevice("ann", "a1", DevicePlatform.ANDROID);
        await metadata.updateDevice("ann", "a1", token("old"));
        await metadata.updateDevice("ann", "a1", token("new"));
        expect(await metadata.forgetPushToken("a1", "old")).toBe(false);
        expect((await metadata.getDevice("a1"))?.pushToken).toBe("new");
        expect(await metadata.forgetPushToken("a1", "new")).toBe(true);
        expect((await metadata.getDevice("a1"))?.pushToken).toBe("");
        expect(await metadata.pushTargets(["ann"])).toEqual([]);
        expect(await metadata.forgetPushToken("nobody", "new")).toBe(false);
      });

      it("returns push targets: live devices with a token of the given users", async () => {
        await open();
        const token = (t: string) => ({
          platform: DevicePlatform.ANDROID,
          displayName: "",
          pushToken: t,
        });
        for (const [user, device] of [
          ["ann", "a1"],
          ["ann", "a2"],
          ["ann", "a3"],
          ["ben", "b1"],
          ["cat", "c1"],
        ] as const) {
          await metadata.ensureDevice(user, device, DevicePlatform.ANDROID);
        }
        await metadata.updateDevice("ann", "a1", token("t-a1"));
        await metadata.updateDevice("ann", "a2", token("t-a2"));
        await metadata.revokeDevice("ann", "a2");
        await metadata.updateDevice("ben", "b1", token("t-b1"));
        await metadata.updateDevice("cat", "c1", token("t-c1"));
        const targets = await metadata.pushTargets(["ann", "ben"]);
        expect(targets.map((d) => [d.deviceId, d.pushToken]).sort()).toEqual([
          ["a1", "t-a1"],
          ["b1", "t-b1"],
        ]);
        expect(await metadata.pushTargets([])).toEqual([]);
      });
    });

    describe("projections of committed events", () => {
      it("projects a group's creation: kind, title, creator, roles, joined seq, count", async () => {
        await open();
        const conv = newConversationId();
        await commitAll(events, [
          ev.group(conv, "ann", ["ben", "cat"], { title: "Team", atMs: 1_700_000_000_000 }),
        ]);
        const c = await metadata.getConversation(conv);
        expect(c).toMatchObject({
          conversationId: conv,
          kind: ConversationKind.GROUP,
          title: "Team",
          createdBy: "ann",
          createdAtMs: 1_700_000_000_000,
          headSeq: 1n,
          lastActivityMs: 1_700_000_000_000,
          memberCount: 3,
        });
        const members = byUser(await metadata.listMembers(conv));
        expect(members.map((m) => [m.userId, m.role, m.joinedSeq, m.leftSeq])).toEqual([
          ["ann", Role.OWNER, 1n, undefined],
          ["ben", Role.MEMBER, 1n, undefined],
          ["cat", Role.MEMBER, 1n, undefined],
        ]);
        expect(members.every((m) => m.readSeq === 0n && m.deliveredSeq === 0n)).toBe(true);
        expect(await metadata.getConversation(newConversationId())).toBeUndefined();
      });

      it("projects a direct chat with two plain members and no title", async () => {
        await open();
        const conv = newConversationId();
        await commitAll(events, [ev.direct(conv, "ann", "ben")]);
        const c = await metadata.getConversation(conv);
        expect(c).toMatchObject({ kind: ConversationKind.DIRECT, title: "", memberCount: 2 });
        const members = byUser(await metadata.listMembers(conv));
        expect(members.map((m) => [m.userId, m.role])).toEqual([
          ["ann", Role.MEMBER],
          ["ben", Role.MEMBER],
        ]);
      });

      it("tracks additions, removals, role changes, renames, rejoins and the head", async () => {
        await open();
        const conv = newConversationId();
        const t0 = 1_700_000_000_000;
        await commitAll(events, [ev.group(conv, "ann", ["ben"], { atMs: t0 })]);
        await commitAll(events, [ev.added(conv, 2, "ann", ["cat", "dan"], { atMs: t0 + 10 })]);
        let c = await metadata.getConversation(conv);
        expect(c).toMatchObject({ memberCount: 4, headSeq: 2n, lastActivityMs: t0 + 10 });
        expect((await metadata.getMember(conv, "cat"))?.joinedSeq).toBe(2n);
        expect((await metadata.getMember(conv, "cat"))?.role).toBe(Role.MEMBER);

        await commitAll(events, [
          ev.posted(conv, 3, "ben", "hi from ben", { atMs: t0 + 20 }),
          ev.removed(conv, 4, "ann", "ben", { atMs: t0 + 30 }),
          ev.roleChanged(conv, 5, "ann", "cat", Role.ADMIN),
          ev.renamed(conv, 6, "cat", "Renamed"),
        ]);
        c = await metadata.getConversation(conv);
        expect(c).toMatchObject({ memberCount: 3, headSeq: 6n, title: "Renamed" });
        const ben = await metadata.getMember(conv, "ben");
        expect(ben?.leftSeq).toBe(4n);
        expect(ben?.readSeq).toBe(3n);
        expect((await metadata.listMembers(conv)).map((m) => m.userId).sort()).toEqual([
          "ann",
          "cat",
          "dan",
        ]);
        expect((await metadata.getMember(conv, "cat"))?.role).toBe(Role.ADMIN);

        // A rejoin starts over: new joined seq, no left seq, fresh cursors.
        await commitAll(events, [ev.added(conv, 7, "ann", ["ben"])]);
        const back = await metadata.getMember(conv, "ben");
        expect(back).toMatchObject({
          joinedSeq: 7n,
          leftSeq: undefined,
          readSeq: 0n,
          deliveredSeq: 0n,
          role: Role.MEMBER,
        });
        expect((await metadata.getConversation(conv))?.memberCount).toBe(4);
        expect(await metadata.getMember(conv, "nobody")).toBeUndefined();
      });

      it("does not reset a current member who is added again", async () => {
        await open();
        const conv = newConversationId();
        await commitAll(events, [
          ev.group(conv, "ann", ["ben"]),
          ev.posted(conv, 2, "ben", "hello"),
          ev.added(conv, 3, "ann", ["ben", "cat"]),
        ]);
        const ben = await metadata.getMember(conv, "ben");
        expect(ben).toMatchObject({ joinedSeq: 1n, readSeq: 2n });
        expect((await metadata.getConversation(conv))?.memberCount).toBe(3);
      });

      it("moves the sender's read cursor with each message, and its device cursor only onward from the seq below", async () => {
        await open();
        const conv = newConversationId();
        await commitAll(events, [
          ev.group(conv, "ann", ["ben"]),
          ev.posted(conv, 2, "ann", "one", { deviceId: "ann-phone" }),
        ]);
        // A device that never said what it holds gets no cursor from sending.
        const cursor = async (device: string) =>
          (await metadata.syncStates("ann", device)).find((s) => s.conversationId === conv)
            ?.deviceCursor;
        expect(await cursor("ann-phone")).toBeUndefined();
        await metadata.advanceReceipt("ann", "ann-phone", conv, 2n, 0n);
        await commitAll(events, [
          ev.posted(conv, 3, "ann", "two", { deviceId: "ann-phone" }),
          ev.posted(conv, 4, "ben", "three"),
          ev.posted(conv, 5, "ann", "four", { deviceId: "ann-phone" }),
        ]);
        expect(await metadata.getMember(conv, "ann")).toMatchObject({
          readSeq: 5n,
          deliveredSeq: 5n,
        });
        expect(await metadata.getMember(conv, "ben")).toMatchObject({
          readSeq: 4n,
          deliveredSeq: 4n,
        });
        // Seq 3 extends the phone's cursor; seq 5 does not, as ben's seq 4
        // may not have reached the phone: resuming from 3 brings it.
        expect(await cursor("ann-phone")).toBe(3n);
        expect(await cursor("ann-laptop")).toBeUndefined();
      });

      it("leaves cursors alone for bot and system posts", async () => {
        await open();
        const conv = newConversationId();
        const bot = ev.posted(conv, 2, "ben", "beep", { deviceId: "ben-phone" });
        if (bot.kind.case === "messagePosted") bot.kind.value.messageKind = MessageKind.BOT;
        const system = ev.posted(conv, 3, "", "maintenance tonight");
        if (system.kind.case === "messagePosted")
          system.kind.value.messageKind = MessageKind.SYSTEM;
        await commitAll(events, [ev.group(conv, "ann", ["ben"]), bot, system]);
        expect(await metadata.getMember(conv, "ben")).toMatchObject({
          readSeq: 0n,
          deliveredSeq: 0n,
        });
        const [state] = await metadata.syncStates("ben", "ben-phone");
        expect(state?.deviceCursor).toBeUndefined();
        expect((await metadata.getConversation(conv))?.headSeq).toBe(3n);
      });
    });

    describe("listUserConversations", () => {
      it("lists current conversations by last activity, newest first, with keyset paging", async () => {
        await open();
        const t0 = 1_700_000_000_000;
        const ids = Array.from({ length: 5 }, () => newConversationId());
        for (const [i, id] of ids.entries()) {
          await commitAll(events, [ev.group(id, "ann", ["ben"], { atMs: t0 + i * 1000 })]);
        }
        // Activity moves ids[0] to the top; ann leaves ids[2].
        await commitAll(events, [ev.posted(ids[0]!, 2, "ben", "bump", { atMs: t0 + 10_000 })]);
        await commitAll(events, [ev.removed(ids[2]!, 2, "ann", "ann", { atMs: t0 + 11_000 })]);

        const { below: all, moved } = await metadata.listUserConversations("ann", 10);
        expect(moved).toEqual([]);
        expect(all.map((r) => r.conversation.conversationId)).toEqual([
          ids[0],
          ids[4],
          ids[3],
          ids[1],
        ]);
        expect(all[0]!.member).toMatchObject({ userId: "ann", role: Role.OWNER });
        expect(all[0]!.conversation.lastActivityMs).toBe(t0 + 10_000);

        const page1 = (await metadata.listUserConversations("ann", 2)).below;
        const last = page1.at(-1)!.conversation;
        const page2 = (
          await metadata.listUserConversations("ann", 2, {
            lastActivityMs: last.lastActivityMs,
            conversationId: last.conversationId,
          })
        ).below;
        const tail = page2.at(-1)!.conversation;
        const page3 = (
          await metadata.listUserConversations("ann", 2, {
            lastActivityMs: tail.lastActivityMs,
            conversationId: tail.conversationId,
          })
        ).below;
        expect([...page1, ...page2].map((r) => r.conversation.conversationId)).toEqual(
          all.map((r) => r.conversation.conversationId),
        );
        expect(page3).toEqual([]);
        // Ben still has all five.
        expect((await metadata.listUserConversations("ben", 10)).below).toHaveLength(5);
        expect(await metadata.listUserConversations("nobody", 10)).toEqual({
          moved: [],
          below: [],
          rev: 0n,
        });
      });

      it("pages through conversations with equal activity times without loss or repeats", async () => {
        await open();
        const t = 1_700_000_000_000;
        const ids = Array.from({ length: 5 }, () => newConversationId());
        await commitAll(
          events,
          ids.map((id) => ev.group(id, "ann", ["ben"], { atMs: t })),
        );
        const seen: string[] = [];
        let after: { lastActivityMs: number; conversationId: string; rev: bigint } | undefined;
        for (let i = 0; i < 5; i++) {
          const { moved, below, rev } = await metadata.listUserConversations("ann", 2, after);
          expect(moved).toEqual([]);
          if (below.length === 0) break;
          seen.push(...below.map((r) => r.conversation.conversationId));
          const c = below.at(-1)!.conversation;
          after = { lastActivityMs: c.lastActivityMs, conversationId: c.conversationId, rev };
        }
        expect(seen).toHaveLength(5);
        expect(new Set(seen).size).toBe(5);
        expect([...seen].sort()).toEqual([...ids].sort());
      });

      it("returns what became active, or the user's, since a page was read, when it moved ahead of that page's position", async () => {
        await open();
        const t0 = 1_700_000_000_000;
        const ids = Array.from({ length: 4 }, () => newConversationId());
        for (const [i, id] of ids.entries()) {
          await commitAll(events, [ev.group(id, "ann", ["ben"], { atMs: t0 + i * 1000 })]);
        }
        const first = await metadata.listUserConversations("ann", 2);
        expect(first.below.map((r) => r.conversation.conversationId)).toEqual([ids[3], ids[2]]);
        const c = first.below.at(-1)!.conversation;
        const position = {
          lastActivityMs: c.lastActivityMs,
          conversationId: c.conversationId,
          rev: first.rev,
        };
        // Below the position: ids[0] becomes active, and ann is added to a new group.
        const joined = newConversationId();
        await commitAll(events, [
          ev.posted(ids[0]!, 2, "ben", "bump", { atMs: t0 + 10_000 }),
          ev.group(joined, "ben", ["cat"], { atMs: t0 + 11_000 }),
        ]);
        await commitAll(events, [ev.added(joined, 2, "ben", ["ann"], { atMs: t0 + 12_000 })]);
        const next = await metadata.listUserConversations("ann", 2, position);
        expect(next.moved.map((r) => r.conversation.conversationId)).toEqual([joined, ids[0]]);
        expect(next.below.map((r) => r.conversation.conversationId)).toEqual([ids[1]]);
        expect(next.rev).toBeGreaterThan(first.rev);
        // From the new position nothing is repeated.
        const again = await metadata.listUserConversations("ann", 2, {
          ...position,
          rev: next.rev,
        });
        expect(again.moved).toEqual([]);
      });

      it("returns at most `limit` moved conversations, the earliest moves first, the rest on the next read", async () => {
        await open();
        const t0 = 1_700_000_000_000;
        const ids = Array.from({ length: 6 }, () => newConversationId());
        for (const [i, id] of ids.entries()) {
          await commitAll(events, [ev.group(id, "ann", ["ben"], { atMs: t0 + i * 1000 })]);
        }
        const first = await metadata.listUserConversations("ann", 1);
        const c = first.below[0]!.conversation;
        const position = { lastActivityMs: c.lastActivityMs, conversationId: c.conversationId };
        // Five move ahead, one commit each, ids[0] first.
        for (const [i, id] of ids.slice(0, 5).entries()) {
          await commitAll(events, [ev.posted(id, 2, "ben", "bump", { atMs: t0 + 10_000 + i })]);
        }
        const seen: string[] = [];
        let rev = first.rev;
        for (let round = 0; round < 4; round++) {
          const page = await metadata.listUserConversations("ann", 2, { ...position, rev });
          expect(page.moved.length).toBeLessThanOrEqual(2);
          seen.push(...page.moved.map((r) => r.conversation.conversationId));
          rev = page.rev;
        }
        expect(seen).toEqual([ids[1], ids[0], ids[3], ids[2], ids[4]]);
      });
    });

    describe("syncStates", () => {
      it("reports current and left conversations with head, joined/left seqs and the device cursor", async () => {
        await open();
        const stay = newConversationId();
        const gone = newConversationId();
        await commitAll(events, [
          ev.group(stay, "ann", ["ben"], { atMs: 1_700_000_000_000 }),
          ev.posted(stay, 2, "ann", "x"),
          ev.posted(stay, 3, "ann", "y", { atMs: 1_700_000_005_000 }),
          ev.group(gone, "ben", ["cat"]),
          ev.added(gone, 2, "ben", ["ann"]),
          ev.removed(gone, 3, "ben", "ann"),
          ev.posted(gone, 4, "ben", "after ann left"),
        ]);
        await metadata.advanceReceipt("ann", "ann-phone", stay, 2n, 0n);
        const states = new Map(
          (await metadata.syncStates("ann", "ann-phone")).map((s) => [s.conversationId, s]),
        );
        expect(states.size).toBe(2);
        expect(states.get(stay)).toMatchObject({
          joinedSeq: 1n,
          leftSeq: undefined,
          headSeq: 3n,
          lastActivityMs: 1_700_000_005_000,
          deviceCursor: 2n,
        });
        expect(states.get(gone)).toMatchObject({
          joinedSeq: 2n,
          leftSeq: 3n,
          headSeq: 4n,
          deviceCursor: undefined,
        });
        expect(await metadata.syncStates("nobody", "d")).toEqual([]);
      });
    });

    describe("advanceReceipt", () => {
      const setup = async () => {
        const conv = newConversationId();
        await commitAll(events, [
          ev.group(conv, "ann", ["ben"]),
          ...[2, 3, 4, 5, 6].map((seq) => ev.posted(conv, seq, "ann", `m${seq}`)),
        ]);
        return conv;
      };

      it("moves cursors forward only; read implies delivered", async () => {
        await open();
        const conv = await setup();
        const a = await metadata.advanceReceipt("ben", "ben-phone", conv, 3n, 0n);
        expect(a.changed).toBe(true);
        expect(a.member).toMatchObject({ userId: "ben", deliveredSeq: 3n, readSeq: 0n });
        expect(a.member.receiptUpdatedAtMs).toBeGreaterThan(0);

        const b = await metadata.advanceReceipt("ben", "ben-phone", conv, 0n, 5n);
        expect(b.changed).toBe(true);
        expect(b.member).toMatchObject({ deliveredSeq: 5n, readSeq: 5n });

        const back = await metadata.advanceReceipt("ben", "ben-phone", conv, 2n, 4n);
        expect(back.changed).toBe(false);
        expect(back.member).toMatchObject({ deliveredSeq: 5n, readSeq: 5n });

        const same = await metadata.advanceReceipt("ben", "ben-phone", conv, 5n, 5n);
        expect(same.changed).toBe(false);

        const deliveredOnly = await metadata.advanceReceipt("ben", "ben-phone", conv, 6n, 0n);
        expect(deliveredOnly.changed).toBe(true);
        expect(deliveredOnly.member).toMatchObject({ deliveredSeq: 6n, readSeq: 5n });
        expect(await metadata.getMember(conv, "ben")).toMatchObject({
          deliveredSeq: 6n,
          readSeq: 5n,
        });
      });

      it("moves the device's cursor forward only, also when the user's cursors stay", async () => {
        await open();
        const conv = await setup();
        await metadata.advanceReceipt("ben", "ben-phone", conv, 5n, 0n);
        const laptop = await metadata.advanceReceipt("ben", "ben-laptop", conv, 3n, 0n);
        expect(laptop.changed).toBe(false);
        const cursor = async (device: string) =>
          (await metadata.syncStates("ben", device)).find((s) => s.conversationId === conv)
            ?.deviceCursor;
        expect(await cursor("ben-phone")).toBe(5n);
        expect(await cursor("ben-laptop")).toBe(3n);
        await metadata.advanceReceipt("ben", "ben-laptop", conv, 2n, 0n);
        expect(await cursor("ben-laptop")).toBe(3n);
        await metadata.advanceReceipt("ben", "ben-laptop", conv, 0n, 4n);
        expect(await cursor("ben-laptop")).toBe(4n);
      });

      it("refuses non-members, and former members beyond their removal, without changing anything", async () => {
        await open();
        const conv = await setup();
        await expect(
          metadata.advanceReceipt("cat", "cat-phone", conv, 2n, 2n),
        ).rejects.toBeInstanceOf(NotMemberError);
        await commitAll(events, [
          ev.removed(conv, 7, "ann", "ben"),
          ev.posted(conv, 8, "ann", "after ben"),
        ]);
        const err = await metadata
          .advanceReceipt("ben", "ben-phone", conv, 8n, 0n)
          .catch((e: unknown) => e);
        expect(err).toBeInstanceOf(NotMemberError);
        expect((err as NotMemberError).userId).toBe("ben");
        expect((err as NotMemberError).conversationId).toBe(conv);
        await expect(
          metadata.advanceReceipt("ben", "ben-phone", conv, 0n, 8n),
        ).rejects.toBeInstanceOf(NotMemberError);
        const ben = await metadata.getMember(conv, "ben");
        expect(ben).toMatchObject({ readSeq: 0n, deliveredSeq: 0n, leftSeq: 7n });
        const state = (await metadata.syncStates("ben", "ben-phone")).find(
          (s) => s.conversationId === conv,
        );
        expect(state?.deviceCursor).toBeUndefined();
      });

      it("lets a former member's device acknowledge up to the removal, moving only its cursor", async () => {
        await open();
        const conv = await setup();
        await metadata.advanceReceipt("ben", "ben-phone", conv, 3n, 2n);
        await commitAll(events, [
          ev.removed(conv, 7, "ann", "ben"),
          ev.posted(conv, 8, "ann", "after ben"),
        ]);
        const cursor = async (device: string) =>
          (await metadata.syncStates("ben", device)).find((s) => s.conversationId === conv)
            ?.deviceCursor;
        const delivered = await metadata.advanceReceipt("ben", "ben-phone", conv, 7n, 0n);
        expect(delivered.changed).toBe(false);
        expect(delivered.member).toMatchObject({ deliveredSeq: 3n, readSeq: 2n, leftSeq: 7n });
        expect(await cursor("ben-phone")).toBe(7n);
        const read = await metadata.advanceReceipt("ben", "ben-laptop", conv, 0n, 5n);
        expect(read.changed).toBe(false);
        expect(await cursor("ben-laptop")).toBe(5n);
        expect(await metadata.getMember(conv, "ben")).toMatchObject({
          deliveredSeq: 3n,
          readSeq: 2n,
          leftSeq: 7n,
        });
      });
    });

    describe("sharedPeers", () => {
      it("returns the candidates sharing a current conversation with the user", async () => {
        await open();
        const g = newConversationId();
        const d = newConversationId();
        const old = newConversationId();
        await commitAll(events, [
          ev.group(g, "ann", ["ben", "cat"]),
          ev.direct(d, "ann", "dan"),
          ev.group(old, "ann", ["eve", "fay"]),
          ev.removed(old, 2, "ann", "eve"),
          ev.removed(old, 3, "ann", "ann"),
        ]);
        const peers = await metadata.sharedPeers("ann", ["ben", "dan", "eve", "fay", "zed"]);
        expect([...peers].sort()).toEqual(["ben", "dan"]);
        expect(await metadata.sharedPeers("eve", ["ann", "fay"])).toEqual([]);
        expect([...(await metadata.sharedPeers("ben", ["cat", "ann", "dan"]))].sort()).toEqual([
          "ann",
          "cat",
        ]);
        expect(await metadata.sharedPeers("ann", [])).toEqual([]);
      });
    });
  });
}
