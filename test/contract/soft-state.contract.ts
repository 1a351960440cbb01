import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { type EdgeMessage, EdgeMessageSchema } from "../../gen/chat/internal/v1/edge_pb.js";
import { ServerFrameSchema } from "../../gen/chat/v1/chat_service_pb.js";
import type { DeviceAddress, DeviceLocation, SoftState } from "../../lib/backends/soft-state.js";
import { deliverToUsers } from "../../lib/delivery.js";
import { freshPerTest, sleep, waitFor } from "./fixtures.js";

export type SoftStateFactory = () => Promise<{ soft: SoftState; cleanup(): Promise<void> }>;

/** A bus message that carries a label, so tests can tell messages apart. */
const message = (label: string): EdgeMessage =>
  create(EdgeMessageSchema, {
    kind: { case: "deviceRevoked", value: { userId: "label", deviceId: label } },
  });

const labelOf = (m: EdgeMessage) => (m.kind.case === "deviceRevoked" ? m.kind.value.deviceId : "");

const sortLocations = (ls: DeviceLocation[]) =>
  [...ls]
    .map((l) => `${l.userId}/${l.deviceId}@${l.edgeId}`)
    .sort()
    .join(" ");

const sortAddresses = (as: DeviceAddress[]) =>
  [...as]
    .map((a) => `${a.userId}/${a.deviceId}`)
    .sort()
    .join(" ");

/**
 * The SoftState contract (in-memory, Redis). Every part is exercised through
 * its interface; bus delivery is awaited, not assumed synchronous.
 */
export function softStateContract(name: string, factory: SoftStateFactory) {
  describe(`SoftState contract: ${name}`, () => {
    const fresh = freshPerTest(factory);
    const open = async () => (await fresh()).soft;

    describe("registry", () => {
      it("locates every attached device of the given users", async () => {
        const { registry } = await open();
        await registry.attach({ userId: "ann", deviceId: "a1", edgeId: "e1" });
        await registry.attach({ userId: "ann", deviceId: "a2", edgeId: "e2" });
        await registry.attach({ userId: "ben", deviceId: "b1", edgeId: "e1" });
        await registry.attach({ userId: "cat", deviceId: "c1", edgeId: "e2" });
        expect(sortLocations(await registry.locate(["ann", "ben"]))).toBe(
          "ann/a1@e1 ann/a2@e2 ben/b1@e1",
        );
        expect(await registry.locate(["nobody"])).toEqual([]);
        expect(await registry.locate([])).toEqual([]);
      });

      it("moves a device to the edge it attached to last; a stale edge's detach keeps it", async () => {
        const { registry } = await open();
        await registry.attach({ userId: "ann", deviceId: "a1", edgeId: "e1" });
        await registry.attach({ userId: "ann", deviceId: "a1", edgeId: "e2" });
        expect(sortLocations(await registry.locate(["ann"]))).toBe("ann/a1@e2");
        await registry.detach({ userId: "ann", deviceId: "a1", edgeId: "e1" });
        expect(sortLocations(await registry.locate(["ann"]))).toBe("ann/a1@e2");
        await registry.detach({ userId: "ann", deviceId: "a1", edgeId: "e2" });
        expect(await registry.locate(["ann"])).toEqual([]);
        // Detaching something unknown is harmless.
        await registry.detach({ userId: "ann", deviceId: "a1", edgeId: "e2" });
      });

      it("detaches one device and keeps the user's others", async () => {
        const { registry } = await open();
        await registry.attach({ userId: "ann", deviceId: "a1", edgeId: "e1" });
        await registry.attach({ userId: "ann", deviceId: "a2", edgeId: "e1" });
        await registry.attach({ userId: "ann", deviceId: "a1", edgeId: "e1" });
        await registry.detach({ userId: "ann", deviceId: "a1", edgeId: "e1" });
        expect(sortLocations(await registry.locate(["ann"]))).toBe("ann/a2@e1");
      });
    });

    describe("bus", () => {
      it("delivers to the addressed edge only, in publish order", async () => {
        const { bus } = await open();
        const one: string[] = [];
        const two: string[] = [];
        const off1 = await bus.subscribe("edge-1", (m) => one.push(labelOf(m)));
        const off2 = await bus.subscribe("edge-2", (m) => two.push(labelOf(m)));
        const labels = Array.from({ length: 100 }, (_, i) => `m${i}`);
        await Promise.all(labels.map((l) => bus.publish("edge-1", message(l))));
        await bus.publish("edge-2", message("for-two"));
        await waitFor(() => one.length === 100 && two.length === 1, 5000, "bus delivery");
        expect(one).toEqual(labels);
        expect(two).toEqual(["for-two"]);
        await off1();
        await off2();
      });

      it("broadcasts to every subscribed edge", async () => {
        const { bus } = await open();
        const got = new Map<string, string[]>();
        const offs = await Promise.all(
          ["e1", "e2", "e3"].map((edge) =>
            bus.subscribe(edge, (m) => got.set(edge, [...(got.get(edge) ?? []), labelOf(m)])),
          ),
        );
        await bus.broadcast(message("all-1"));
        await bus.broadcast(message("all-2"));
        await waitFor(
          () => ["e1", "e2", "e3"].every((e) => got.get(e)?.length === 2),
          5000,
          "broadcast",
        );
        for (const e of ["e1", "e2", "e3"]) expect(got.get(e)).toEqual(["all-1", "all-2"]);
        for (const off of offs) await off();
      });

      it("stops delivering after unsubscribe; publishing to an edge nobody serves is harmless and says so", async () => {
        const { bus } = await open();
        const got: string[] = [];
        const off = await bus.subscribe("edge-x", (m) => got.push(labelOf(m)));
        expect(await bus.publish("edge-x", message("before"))).toBe(true);
        await waitFor(() => got.length === 1, 5000, "first message");
        await off();
        // Nobody listens: the publisher learns it (the devices there count as offline).
        expect(await bus.publish("edge-x", message("after"))).toBe(false);
        await bus.broadcast(message("broadcast-after"));
        expect(await bus.publish("edge-nobody", message("lost"))).toBe(false);
        await sleep(100);
        expect(got).toEqual(["before"]);
      });

      it("counts as reached only the devices of edges that took a delivery", async () => {
        const soft = await open();
        const got: string[][] = [];
        const off = await soft.bus.subscribe("edge-live", (m) => {
          if (m.kind.case === "delivery") got.push(m.kind.value.deviceIds);
        });
        await soft.registry.attach({ userId: "ann", deviceId: "a-live", edgeId: "edge-live" });
        // An edge that died: its entry stays until it expires, and nobody listens there.
        await soft.registry.attach({ userId: "ann", deviceId: "a-dead", edgeId: "edge-dead" });
        const frame = create(ServerFrameSchema, { frame: { case: "heartbeat", value: {} } });
        const reached = await deliverToUsers(soft, frame, ["ann"]);
        expect([...reached]).toEqual(["a-live"]);
        await waitFor(() => got.length === 1, 5000, "the delivery");
        expect(got).toEqual([["a-live"]]);
        await off();
      });

      it("keeps per-edge order across several publishers racing", async () => {
        const { bus } = await open();
        const got: string[] = [];
        const off = await bus.subscribe("edge-o", (m) => got.push(labelOf(m)));
        // Two publishers, each awaiting its own publishes in order.
        const publisher = async (p: string) => {
          for (let i = 0; i < 30; i++) await bus.publish("edge-o", message(`${p}${i}`));
        };
        await Promise.all([publisher("a"), publisher("b")]);
        await waitFor(() => got.length === 60, 5000, "60 messages");
        for (const p of ["a", "b"]) {
          expect(got.filter((l) => l.startsWith(p))).toEqual(
            Array.from({ length: 30 }, (_, i) => `${p}${i}`),
          );
        }
        await off();
      });
    });

    describe("presence", () => {
      it("reports true only on the offline-to-online transition", async () => {
        const { presence } = await open();
        const t = Date.now();
        expect(await presence.heartbeat("ann", "a1", t, 1000)).toBe(true);
        expect(await presence.heartbeat("ann", "a1", t + 100, 1000)).toBe(false);
        expect(await presence.heartbeat("ann", "a2", t + 200, 1000)).toBe(false);
        expect(await presence.heartbeat("ben", "b1", t + 200, 1000)).toBe(true);
      });

      it("expires a user once, only after every device's heartbeat lapsed", async () => {
        const { presence } = await open();
        const t = Date.now();
        await presence.heartbeat("ann", "a1", t, 1000);
        await presence.heartbeat("ann", "a2", t + 500, 1000);
        await presence.heartbeat("ben", "b1", t, 1000);

        const first = await presence.expire(t + 1200);
        expect(first).toEqual([{ userId: "ben", lastSeenMs: t }]);
        expect((await presence.get(["ann"], t + 1200))[0]?.online).toBe(true);

        const second = await presence.expire(t + 1600);
        expect(second).toEqual([{ userId: "ann", lastSeenMs: t + 500 }]);
        expect(await presence.expire(t + 5000)).toEqual([]);

        expect(await presence.get(["ann", "ben"], t + 1600)).toEqual([
          { userId: "ann", online: false, lastSeenMs: t + 500 },
          { userId: "ben", online: false, lastSeenMs: t },
        ]);
        // Coming back is a transition again.
        expect(await presence.heartbeat("ann", "a1", t + 2000, 1000)).toBe(true);
        expect((await presence.get(["ann"], t + 2000))[0]).toEqual({
          userId: "ann",
          online: true,
          lastSeenMs: t + 2000,
        });
      });

      it("returns an expired user to one of several concurrent sweepers", async () => {
        const { presence } = await open();
        const t = Date.now();
        await presence.heartbeat("ann", "a1", t, 1000);
        await presence.heartbeat("ben", "b1", t, 1000);
        const sweeps = await Promise.all([
          presence.expire(t + 2000),
          presence.expire(t + 2000),
          presence.expire(t + 2000),
        ]);
        const users = sweeps.flat().map((g) => g.userId);
        expect([...users].sort()).toEqual(["ann", "ben"]);
      });

      it("gets presence for any user: unknown users are offline and never seen", async () => {
        const { presence } = await open();
        const t = Date.now();
        await presence.heartbeat("ann", "a1", t, 1000);
        expect(await presence.get(["ann", "nobody"], t + 10)).toEqual([
          { userId: "ann", online: true, lastSeenMs: t },
          { userId: "nobody", online: false, lastSeenMs: 0 },
        ]);
        // A lapsed heartbeat reads as offline before any sweep ran.
        expect((await presence.get(["ann"], t + 1500))[0]?.online).toBe(false);
        expect(await presence.get([], t)).toEqual([]);
      });

      it("keeps watches per device, bounded by max, all-or-nothing", async () => {
        const { presence } = await open();
        const w1 = { userId: "ann", deviceId: "a1" };
        const w2 = { userId: "ann", deviceId: "a2" };
        const w3 = { userId: "ben", deviceId: "b1" };
        expect(await presence.watch(w1, ["u1", "u2"], 3)).toBe(true);
        expect(await presence.watch(w2, ["u1"], 3)).toBe(true);
        expect(await presence.watch(w3, ["u1"], 3)).toBe(true);
        expect(sortAddresses(await presence.watchers("u1"))).toBe("ann/a1 ann/a2 ben/b1");

        // Two more would make four: refused, and nothing of it is added.
        expect(await presence.watch(w1, ["u3", "u4"], 3)).toBe(false);
        expect(await presence.watchers("u3")).toEqual([]);
        expect(await presence.watchers("u4")).toEqual([]);
        // Re-watching counts once.
        expect(await presence.watch(w1, ["u1", "u2", "u3"], 3)).toBe(true);
        expect(await presence.watch(w1, ["u1"], 3)).toBe(true);
        expect(sortAddresses(await presence.watchers("u3"))).toBe("ann/a1");

        await presence.unwatch(w1, ["u1"]);
        expect(sortAddresses(await presence.watchers("u1"))).toBe("ann/a2 ben/b1");
        // Freed a slot.
        expect(await presence.watch(w1, ["u5"], 3)).toBe(true);

        await presence.unwatchAll(w1);
        expect(await presence.watchers("u2")).toEqual([]);
        expect(await presence.watchers("u3")).toEqual([]);
        expect(await presence.watchers("u5")).toEqual([]);
        expect(sortAddresses(await presence.watchers("u1"))).toBe("ann/a2 ben/b1");
        // All slots free again.
        expect(await presence.watch(w1, ["x1", "x2", "x3"], 3)).toBe(true);
        await presence.unwatchAll({ userId: "nobody", deviceId: "none" });
        await presence.unwatch(w3, ["never-watched"]);
        expect(await presence.watchers("nobody-watched")).toEqual([]);
      });
    });

    describe("sequencer", () => {
      it("seeds from the durable head once and increments from there", async () => {
        const { sequencer } = await open();
        let calls = 0;
        const head = async () => {
          calls++;
          return 5n;
        };
        expect(await sequencer.next("c1", head)).toBe(6n);
        expect(await sequencer.next("c1", head)).toBe(7n);
        expect(await sequencer.next("c1", head)).toBe(8n);
        expect(calls).toBe(1);
        expect(await sequencer.next("c2", async () => 0n)).toBe(1n);
        expect(await sequencer.next("c1", head)).toBe(9n);
      });

      it("single-flights concurrent first calls: one seed, distinct contiguous seqs", async () => {
        const { sequencer } = await open();
        let calls = 0;
        const slowHead = async () => {
          calls++;
          await sleep(30);
          return 10n;
        };
        const got = await Promise.all(
          Array.from({ length: 20 }, () => sequencer.next("c-race", slowHead)),
        );
        expect(calls).toBe(1);
        expect([...got].sort((a, b) => (a < b ? -1 : 1))).toEqual(
          Array.from({ length: 20 }, (_, i) => BigInt(11 + i)),
        );
      });

      it("reseeds from the durable head after a reset", async () => {
        const { sequencer } = await open();
        expect(await sequencer.next("c1", async () => 3n)).toBe(4n);
        expect(await sequencer.next("c1", async () => 3n)).toBe(5n);
        await sequencer.reset("c1");
        expect(await sequencer.next("c1", async () => 42n)).toBe(43n);
        expect(await sequencer.next("c1", async () => 0n)).toBe(44n);
        // Resetting an unknown conversation is harmless.
        await sequencer.reset("c-unknown");
        expect(await sequencer.next("c-unknown", async () => 7n)).toBe(8n);
      });

      it("propagates a failing seed and seeds again on the next call", async () => {
        const { sequencer } = await open();
        await expect(
          sequencer.next("c1", async () => {
            throw new Error("store down");
          }),
        ).rejects.toThrow("store down");
        expect(await sequencer.next("c1", async () => 2n)).toBe(3n);
      });
    });

    describe("limiter", () => {
      it("allows the burst, then refuses, per key", async () => {
        const { limiter } = await open();
        // 0.5 tokens/s: no refill worth a token during the test.
        const takes: boolean[] = [];
        for (let i = 0; i < 5; i++) takes.push(await limiter.take("k1", 0.5, 3));
        expect(takes).toEqual([true, true, true, false, false]);
        expect(await limiter.take("k2", 0.5, 3)).toBe(true);
      });

      it("refills over time, up to the burst", async () => {
        const { limiter } = await open();
        expect(await limiter.take("r", 10, 2)).toBe(true);
        expect(await limiter.take("r", 10, 2)).toBe(true);
        expect(await limiter.take("r", 10, 2)).toBe(false);
        // 0.6 s at 10/s is six tokens' worth; the bucket holds two.
        await sleep(600);
        expect(await limiter.take("r", 10, 2)).toBe(true);
        expect(await limiter.take("r", 10, 2)).toBe(true);
        expect(await limiter.take("r", 10, 2)).toBe(false);
      });
    });
  });
}
