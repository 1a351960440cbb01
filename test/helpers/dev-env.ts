import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { type AddressInfo, createServer } from "node:net";
import { Redis } from "ioredis";

/** A loopback port nothing listens on right now, for a server that must be told its port. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

/** The machine's Redis, which the tests share; each test keeps to its own key prefix. */
export const redisUrl = "redis://127.0.0.1:6379";

async function ping(): Promise<boolean> {
  const r = new Redis(redisUrl, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  r.on("error", () => undefined);
  try {
    await r.connect();
    return (await r.ping()) === "PONG";
  } catch {
    return false;
  } finally {
    r.disconnect();
  }
}

/**
 * Resolves once Redis answers at `redisUrl`, starting the machine's
 * redis-server (in memory, nothing saved) when none is running. Throws when
 * there is none to start: a suite that needs Redis fails rather than skips.
 */
export async function ensureRedis(): Promise<void> {
  if (await ping()) return;
  try {
    execFileSync(
      "redis-server",
      [
        "--port",
        "6379",
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "yes",
      ],
      { stdio: "ignore" },
    );
  } catch (err) {
    throw new Error(`Redis is not running at ${redisUrl} and redis-server could not be started`, {
      cause: err,
    });
  }
  for (let i = 0; i < 50; i++) {
    if (await ping()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`redis-server started but ${redisUrl} does not answer`);
}

/** Deletes every key under the prefix. */
export async function dropKeys(prefix: string) {
  const r = new Redis(redisUrl);
  try {
    let cursor = "0";
    do {
      const [next, keys] = await r.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000);
      if (keys.length > 0) await r.del(...keys);
      cursor = next;
    } while (cursor !== "0");
  } finally {
    await r.quit();
  }
}

/**
 * A redis-server of the test's own on a free port, to take down and bring
 * back (empty) without touching the shared one.
 */
export async function startPrivateRedis() {
  const port = await freePort();
  const url = `redis://127.0.0.1:${port}`;
  let child: ChildProcess | undefined;
  const up = async () => {
    child = spawn(
      "redis-server",
      ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
      { stdio: "ignore" },
    );
    for (let i = 0; i < 50; i++) {
      const r = new Redis(url, {
        lazyConnect: true,
        maxRetriesPerRequest: 0,
        retryStrategy: () => null,
      });
      r.on("error", () => undefined);
      const ok = await r
        .connect()
        .then(() => r.ping())
        .catch(() => undefined);
      r.disconnect();
      if (ok === "PONG") return;
      await new Promise((res) => setTimeout(res, 100));
    }
    throw new Error(`redis-server on port ${port} does not answer`);
  };
  const down = async () => {
    const c = child;
    child = undefined;
    if (!c || c.exitCode !== null) return;
    await new Promise<void>((res) => {
      c.once("exit", () => res());
      c.kill("SIGKILL");
    });
  };
  await up();
  return { url, up, down };
}

/** The process id of the Redis at `redisUrl`, to count its CPU with the system it serves. */
export async function redisPid(): Promise<number> {
  const r = new Redis(redisUrl);
  try {
    const m = /process_id:(\d+)/.exec(await r.info("server"));
    if (!m) throw new Error("redis INFO has no process_id");
    return Number(m[1]);
  } finally {
    await r.quit();
  }
}
