import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { LoadMembershipResponseSchema } from "../../gen/chat/internal/v1/store_service_pb.js";
import { ConversationKind, Role } from "../../gen/chat/v1/event_pb.js";
import { MemberSchema } from "../../gen/chat/v1/model_pb.js";
import { createConversationCache } from "../../services/router/conversation-cache.js";
import type { StoreClient } from "../../services/router/store-client.js";

/** A store whose membership answer the test moves, counting the reads. */
function fakeStore() {
  const s = { head: 1n, members: ["ann", "ben"], reads: 0 };
  const store = {
    async loadMembership() {
      s.reads++;
      return create(LoadMembershipResponseSchema, {
        found: true,
        kind: ConversationKind.GROUP,
        headSeq: s.head,
        members: s.members.map((userId) => create(MemberSchema, { userId, role: Role.MEMBER })),
      });
    },
  } as unknown as StoreClient;
  return { s, store };
}

const deferred = () => {
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
};

describe("conversation cache", () => {
  it("loads a dropped view only once the appends in flight have settled", async () => {
    const { s, store } = fakeStore();
    const cache = createConversationCache(store, 10);
    const first = (await cache.get("c"))!;
    expect(cache.holds(first)).toBe(true);

    // A removal is sequenced and appended; an append ahead of it fails and drops the view.
    const removal = deferred();
    const failed = deferred();
    cache.track("c", removal.promise);
    cache.track("c", failed.promise);
    cache.invalidate("c");
    expect(cache.holds(first)).toBe(false);

    const reloaded = cache.get("c");
    await new Promise((r) => setTimeout(r, 5));
    expect(s.reads).toBe(1);
    failed.reject(new Error("refused"));
    await new Promise((r) => setTimeout(r, 5));
    expect(s.reads).toBe(1);
    // Committed: the store holds the removal before the view is read again.
    s.head = 3n;
    s.members = ["ann"];
    removal.resolve();
    const fresh = (await reloaded)!;
    expect(s.reads).toBe(2);
    expect([...fresh.members.keys()]).toEqual(["ann"]);
    expect(fresh.lastSeq).toBe(3n);
    expect(cache.holds(fresh)).toBe(true);
    expect(cache.holds(first)).toBe(false);
  });

  it("waits only for what was in flight when asked, and not at all when nothing is", async () => {
    const { s, store } = fakeStore();
    const cache = createConversationCache(store, 10);
    await cache.settled("c");
    const pending = deferred();
    cache.track("c", pending.promise);
    let done = false;
    const waiting = cache.settled("c").then(() => {
      done = true;
    });
    cache.track("c", new Promise<void>(() => {}));
    await new Promise((r) => setTimeout(r, 5));
    expect(done).toBe(false);
    pending.resolve();
    await waiting;
    expect(done).toBe(true);
    expect(s.reads).toBe(0);
  });

  it("stops holding a view it evicted", async () => {
    const { store } = fakeStore();
    const cache = createConversationCache(store, 1);
    const a = (await cache.get("a"))!;
    const b = (await cache.get("b"))!;
    expect(cache.holds(a)).toBe(false);
    expect(cache.holds(b)).toBe(true);
  });
});
