import { createRedisSoftState } from "../../lib/backends/redis/redis-soft-state.js";
import { dropKeys, ensureRedis, redisUrl } from "../helpers/dev-env.js";
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
