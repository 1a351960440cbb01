import { create } from "@bufbuild/protobuf";
import { createClient, type Transport } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import {
  ActorSchema,
  type ApplyRequest,
  RouterService,
} from "../../gen/chat/internal/v1/router_service_pb.js";
import { StoreService } from "../../gen/chat/internal/v1/store_service_pb.js";
import { ConversationKind, EventSchema } from "../../gen/chat/v1/event_pb.js";
import { createCoreShards, ownerOf, shardKey } from "../../lib/core-shards.js";

/** A core that records the calls it gets and answers each with an empty message. */
function fakeCore(name: string, calls: string[]): Transport & { close(): void } {
  return {
    async unary(method) {
      calls.push(`${name} ${method.name}`);
      return {
        stream: false,
        service: method.parent,
        method,
        header: new Headers(),
        trailer: new Headers(),
        message: create(method.output),
      } as never;
    },
    async stream() {
      throw new Error("unary only");
    },
    close() {
      calls.push(`${name} closed`);
    },
  };
}

describe("core shards", () => {
  it("names a call by its conversation, a direct pair being opened, else its device, else its user", () => {
    const proposal = create(EventSchema, { conversationId: "c_1" });
    expect(shardKey({ actor: { userId: "ann", deviceId: "a1" }, proposal })).toBe("c c_1");
    expect(shardKey({ viewerUserId: "ann", conversationId: "c_2" })).toBe("c c_2");
    expect(shardKey({ userId: "ann", deviceId: "a1" })).toBe("d a1");
    expect(shardKey({ actor: { userId: "ann", deviceId: "a1" }, title: "x" })).toBe("d a1");
    expect(shardKey({ viewerUserId: "ann" })).toBe("u ann");
    // A direct conversation is opened on the pair's core, whichever of the two asks.
    const opens = (userId: string, peer: string, kind = ConversationKind.DIRECT) =>
      shardKey({ actor: { userId, deviceId: `${userId}1` }, kind, memberUserIds: [peer] });
    expect(opens("ann", "ben")).toBe("p ann ben");
    expect(opens("ben", "ann")).toBe("p ann ben");
    expect(opens("ann", "ben", ConversationKind.GROUP)).toBe("d ann1");
    expect(shardKey({ userIds: ["ann", "ben"] })).toBeUndefined();
  });

  it("spreads keys over the cores, and keeps each key on one", () => {
    const owners = Array.from({ length: 1000 }, (_, i) => ownerOf(`c c_${i}`, 3));
    for (const k of [0, 1, 2]) {
      expect(owners.filter((o) => o === k).length).toBeGreaterThan(250);
    }
    expect(ownerOf("c c_7", 3)).toBe(owners[7]);
  });

  it("sends every call about a conversation to its owner, whichever service it is for, and lookups in turn", async () => {
    const calls: string[] = [];
    const shards = createCoreShards([fakeCore("A", calls), fakeCore("B", calls)]);
    const router = createClient(RouterService, shards);
    const store = createClient(StoreService, shards);
    // Two conversations with different owners.
    let a = "";
    let b = "";
    for (let i = 0; !a || !b; i++) {
      const id = `c_${i}`;
      if (ownerOf(`c ${id}`, 2) === 0) a ||= id;
      else b ||= id;
    }
    const apply = (conversationId: string): Partial<ApplyRequest> => ({
      actor: create(ActorSchema, { userId: "ann", deviceId: "a1" }),
      proposal: create(EventSchema, { conversationId }),
    });
    await router.apply(apply(a));
    await store.readHistory({ viewerUserId: "ann", conversationId: a });
    await router.apply(apply(b));
    await store.loadMembership({ conversationId: b });
    expect(calls.splice(0)).toEqual(["A Apply", "A ReadHistory", "B Apply", "B LoadMembership"]);
    await store.loadUsers({ userIds: ["ann"] });
    await store.loadUsers({ userIds: ["ann"] });
    expect(calls.splice(0).sort()).toEqual(["A LoadUsers", "B LoadUsers"]);
    shards.close();
    expect(calls).toEqual(["A closed", "B closed"]);
  });
});
