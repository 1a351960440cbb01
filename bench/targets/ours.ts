import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ChatService } from "../../gen/chat/v1/chat_service_pb.js";
import { createTokenService, type TokenService } from "../../lib/auth/tokens.js";
import type { ConfigInput } from "../../lib/config.js";
// The tests' dev-env helper: the machine's Redis, started if it is not running, and the test Cassandra.
import {
  cassandraPid,
  cassandraRunning,
  dropKeys,
  dropKeyspace,
  ensureCassandra,
  ensurePulsar,
  ensureRedis,
  freePort,
  pulsarPid,
  pulsarRunning,
  redisPid,
  redisUrl,
  stopCassandra,
  stopPulsar,
} from "../../test/helpers/dev-env.js";
import { forkTs, makeRpc, rssOf, waitExit } from "../lib/procs.js";

/** What the bench changes from production defaults, and why; it goes into the report. */
export const benchSettings: Record<string, string> = {
  "limits.sendPerSecond / sendBurst":
    "1,000,000: the load generator multiplexes many messages per user; the per-user abuse limit would cap the bench, not the server",
  "limits.requestsPerSecond / requestBurst":
    "1,000,000: same reason, for history paging and stream opens",
  "limits.streamsPerUser / streamsPerDevice": "unchanged (16 / 4)",
  "limits.groupMaxMembers": "1024 (default): the 500-member groups fit",
  "metrics.enabled": "false: no scraper runs; the metrics interceptor still records every call",
  logLevel: "warn",
  "sqlite.synchronous": "FULL (default): every ack waits for an fsync'd commit",
  "session.heartbeatIntervalMs": "25,000 (production default)",
};

export interface OursTarget {
  name: "ours";
  host: string;
  /** The first edge's port (the only one unless split). */
  port: number;
  /** Every edge's port: clients spread over them. */
  ports: number[];
  /** The server's process, or a split's core. */
  pid: number;
  /** Every process whose CPU counts: the server, or a split's core, edges and Redis. */
  pids: number[];
  tokens: TokenService;
  /** A token for user u<i> on its device d-u<i>. */
  token(i: number): Promise<string>;
  /** ChatService over one shared HTTP/2 connection; pass `as(i)` as call options. */
  chat: Client<typeof ChatService>;
  /** Call options that authenticate as user u<i>. */
  as(i: number): Promise<{ headers: Record<string, string> }>;
  /** Server RSS after a full GC, so garbage does not count as per-connection memory. */
  rssAfterGc(): Promise<number>;
  rss(): number;
  stop(): Promise<void>;
}

/** One server process (embedded, or one role of a split), driven over IPC. */
async function startProcess(
  config: ConfigInput,
  users: number,
  opts: { serverRoot?: string; cpuProfileDir?: string },
) {
  const child = forkTs(join(import.meta.dirname, "ours-server.ts"), [], {
    execArgv: [
      "--expose-gc",
      ...(opts.cpuProfileDir ? ["--cpu-prof", `--cpu-prof-dir=${opts.cpuProfileDir}`] : []),
    ],
  });
  const rpc = makeRpc(child);
  try {
    const started = await rpc<{ port: number; pid: number }>("start", {
      config,
      users,
      ...(opts.serverRoot ? { serverRoot: opts.serverRoot } : {}),
    });
    return { ...started, rpc, child };
  } catch (err) {
    // A server that failed to start leaves no process behind.
    child.kill("SIGKILL");
    await waitExit(child, 5000);
    throw err;
  }
}

/**
 * Starts the embedded server in a child process on a fresh data directory,
 * with users u0..u{users-1} provisioned and real signed tokens (not dev mode).
 * With `split`, a split deployment instead: a core and `split` edges, each
 * its own process, sharing soft state in the machine's Redis under a prefix
 * of their own (removed at stop).
 */
export async function startOurs(opts: {
  users: number;
  serverRoot?: string;
  config?: ConfigInput;
  /** Write a V8 CPU profile of the server here when it stops. */
  cpuProfileDir?: string;
  /** Edges of a split deployment; 0 or absent for the embedded server. */
  split?: number;
  /**
   * Events and metadata in the test Cassandra (started if none runs, and
   * then stopped again at stop), in a keyspace of its own dropped at stop.
   */
  cassandra?: boolean;
  /**
   * The message log in the test Pulsar (started if none runs, and then
   * stopped again at stop), on a topic of its own.
   */
  pulsar?: boolean;
}): Promise<OursTarget> {
  const dataDir = mkdtempSync(join(tmpdir(), "relaychat-bench-"));
  const key = { kid: "bench", secret: randomBytes(32) };
  const tokens = createTokenService({
    keys: [key],
    activeKeyId: key.kid,
    issuer: "relaychat",
    acceptDevTokens: false,
  });
  const config: ConfigInput = {
    host: "127.0.0.1",
    port: 0,
    dataDir,
    logLevel: "warn",
    auth: {
      signingKeys: [
        { kid: key.kid, secret: key.secret.toString("base64") as unknown as Uint8Array },
      ],
      activeKeyId: key.kid,
      tokenTtlSeconds: 6 * 3600,
      maxTokenTtlSeconds: 24 * 3600,
    },
    limits: {
      sendPerSecond: 1_000_000,
      sendBurst: 1_000_000,
      requestsPerSecond: 1_000_000,
      requestBurst: 1_000_000,
    },
    metrics: { enabled: false },
    ...opts.config,
  };
  const procOpts = {
    ...(opts.serverRoot ? { serverRoot: opts.serverRoot } : {}),
    ...(opts.cpuProfileDir ? { cpuProfileDir: opts.cpuProfileDir } : {}),
  };
  const prefix = `bench:${randomBytes(4).toString("hex")}:`;
  const keyspace = `bench_${randomBytes(4).toString("hex")}`;
  let startedCassandra = false;
  let startedPulsar = false;
  const procs: Awaited<ReturnType<typeof startProcess>>[] = [];
  const cleanup = async () => {
    // Edges first, then the core: each drains what it holds.
    for (const p of [...procs].reverse()) {
      await p.rpc("stop").catch(() => undefined);
      await waitExit(p.child, 10_000);
    }
    rmSync(dataDir, { recursive: true, force: true });
    if (opts.split) await dropKeys(prefix);
    if (opts.cassandra) {
      if (startedCassandra) await stopCassandra();
      else await dropKeyspace(keyspace).catch(() => undefined);
    }
    if (startedPulsar) await stopPulsar();
  };
  try {
    if (opts.cassandra) {
      startedCassandra = !(await cassandraRunning());
      const node = await ensureCassandra();
      config.cassandra = {
        contactPoints: [node.contactPoint],
        localDataCenter: node.localDataCenter,
        keyspace,
      };
    }
    if (opts.pulsar) {
      startedPulsar = !(await pulsarRunning());
      const broker = await ensurePulsar();
      config.pulsar = {
        webUrl: broker.webUrl,
        topic: `persistent://public/default/bench-${randomBytes(4).toString("hex")}`,
      };
    }
    if (!opts.split) {
      procs.push(await startProcess(config, opts.users, procOpts));
    } else {
      await ensureRedis();
      const corePort = await freePort();
      const split: ConfigInput = {
        ...config,
        redis: { url: redisUrl, keyPrefix: prefix },
        core: {
          host: "127.0.0.1",
          port: corePort,
          urls: [`http://127.0.0.1:${corePort}`],
          secret: randomBytes(24).toString("base64url"),
        },
      };
      procs.push(await startProcess({ ...split, role: "core" }, opts.users, procOpts));
      for (let e = 0; e < opts.split; e++) {
        procs.push(await startProcess({ ...split, role: "edge" }, opts.users, procOpts));
      }
    }
  } catch (err) {
    await cleanup();
    throw err;
  }
  const edges = opts.split ? procs.slice(1) : procs;
  const ports = edges.map((p) => p.port);
  const procPids = procs.map((p) => p.pid);
  // A split's soft state and a Cassandra store are part of the system under test: their CPU counts.
  const pids = [
    ...procPids,
    ...(opts.split ? [await redisPid()] : []),
    ...(opts.cassandra ? [cassandraPid() ?? 0].filter((p) => p > 0) : []),
    ...(opts.pulsar ? [pulsarPid() ?? 0].filter((p) => p > 0) : []),
  ];
  const transport = createGrpcTransport({ baseUrl: `http://127.0.0.1:${ports[0]}` });
  const tokenCache = new Map<number, string>();
  const token = async (i: number) => {
    let t = tokenCache.get(i);
    if (!t) {
      t = (await tokens.mint({ userId: `u${i}`, deviceId: `d-u${i}`, ttlSeconds: 6 * 3600 })).token;
      tokenCache.set(i, t);
    }
    return t;
  };
  return {
    name: "ours",
    host: "127.0.0.1",
    port: ports[0]!,
    ports,
    pid: pids[0]!,
    pids,
    tokens,
    token,
    chat: createClient(ChatService, transport),
    async as(i) {
      return { headers: { authorization: `Bearer ${await token(i)}` } };
    },
    async rssAfterGc() {
      const each = await Promise.all(procs.map((p) => p.rpc<number>("gc")));
      return each.reduce((a, b) => a + b, 0);
    },
    rss: () => procPids.reduce((sum, pid) => sum + rssOf(pid), 0),
    stop: cleanup,
  };
}
