import { describe, expect, it, vi } from "vitest";
import { createRedisSoftState } from "../../lib/backends/redis/redis-soft-state.js";
import { dropKeys, ensureRedis, redisUrl, startPrivateRedis } from "../helpers/dev-env.js";
import { softStateContract } from "./soft-state.contract.js";

await ensureRedis();

softStateContract("redis", async () => {
  const prefix = `test:${process.pid}:${Math.random().toString(36).slice(2)}:`;
  const soft = createRedisSoftState({ url: redisUrl, keyPrefix: prefix });
  return {
    soft,
    async cleanup() {
      await soft.close();
      await dropKeys(prefix);
    },
  };
});

describe("Redis soft state, beyond the contract", () => {
  it("keeps a device that attached to another edge while its old edge was detaching it", async () => {
    // Two edges' processes, each with its own connection, as in a split deployment.
    const prefix = `test:${process.pid}:race:`;
    const [e1, e2] = [1, 2].map(() => createRedisSoftState({ url: redisUrl, keyPrefix: prefix }));
    const turn = () => new Promise((r) => setImmediate(r));
    try {
      const lost: string[] = [];
      for (let i = 0; i < 40; i++) {
        const device = { userId: "ann", deviceId: `a${i}` };
        await e1!.registry.attach({ ...device, edgeId: "e1" });
        // The device reconnects to e2 while e1 lets its old session go, a few turns apart.
        await Promise.all([
          e1!.registry.detach({ ...device, edgeId: "e1" }),
          (async () => {
            for (let k = 0; k < i % 4; k++) await turn();
            await e2!.registry.attach({ ...device, edgeId: "e2" });
          })(),
        ]);
        const at = (await e1!.registry.locate(["ann"])).filter(
          (l) => l.deviceId === device.deviceId,
        );
        if (at.length !== 1 || at[0]!.edgeId !== "e2") lost.push(device.deviceId);
      }
      expect(lost).toEqual([]);
    } finally {
      await Promise.all([e1!.close(), e2!.close()]);
      await dropKeys(prefix);
    }
  });

  it("dates registry entries by Redis' clock, so devices of an edge whose clock runs behind are still found", async () => {
    const prefix = `test:${process.pid}:clock:`;
    const [edge, core] = [1, 2].map(() =>
      createRedisSoftState({ url: redisUrl, keyPrefix: prefix, registryTtlMs: 60_000 }),
    );
    try {
      // The edge's machine is ten minutes behind the core's: more than an entry's life.
      const realNow = Date.now();
      const behind = vi.spyOn(Date, "now").mockImplementation(() => realNow - 600_000);
      try {
        await edge!.registry.attach({ userId: "ann", deviceId: "a1", edgeId: "e1" });
      } finally {
        behind.mockRestore();
      }
      expect(await core!.registry.locate(["ann"])).toEqual([
        { userId: "ann", deviceId: "a1", edgeId: "e1" },
      ]);
      // And the core, ten minutes ahead of Redis, finds it too.
      const ahead = vi.spyOn(Date, "now").mockImplementation(() => realNow + 600_000);
      try {
        expect(await core!.registry.locate(["ann"])).toHaveLength(1);
      } finally {
        ahead.mockRestore();
      }
    } finally {
      await Promise.all([edge!.close(), core!.close()]);
      await dropKeys(prefix);
    }
  });

  it("writes this process's registry entries and watches again when Redis comes back empty", async () => {
    const redis = await startPrivateRedis();
    const soft = createRedisSoftState({ url: redis.url, keyPrefix: "t:" });
    try {
      await soft.registry.attach({ userId: "ann", deviceId: "a1", edgeId: "e1" });
      await soft.registry.attach({ userId: "ann", deviceId: "a2", edgeId: "e1" });
      await soft.registry.detach({ userId: "ann", deviceId: "a2", edgeId: "e1" });
      await soft.presence.watch({ userId: "ann", deviceId: "a1" }, ["ben", "cat"], 10);
      await soft.presence.unwatch({ userId: "ann", deviceId: "a1" }, ["cat"]);

      await redis.down();
      await redis.up();
      await expect
        .poll(async () => soft.registry.locate(["ann"]).catch(() => []), { timeout: 5000 })
        .toEqual([{ userId: "ann", deviceId: "a1", edgeId: "e1" }]);
      expect(await soft.presence.watchers("ben")).toEqual([{ userId: "ann", deviceId: "a1" }]);
      expect(await soft.presence.watchers("cat")).toEqual([]);
      // The watch set is back too: the slots it takes still count.
      expect(await soft.presence.watch({ userId: "ann", deviceId: "a1" }, ["x1", "x2"], 2)).toBe(
        false,
      );
    } finally {
      await soft.close();
      await redis.down();
    }
  });
});
