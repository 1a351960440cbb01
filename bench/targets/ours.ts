import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ChatService } from "../../gen/chat/v1/chat_service_pb.js";
import { createTokenService, type TokenService } from "../../lib/auth/tokens.js";
import type { ConfigInput } from "../../lib/config.js";
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
  port: number;
  pid: number;
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

/**
 * Starts the embedded server in a child process on a fresh data directory,
 * with users u0..u{users-1} provisioned and real signed tokens (not dev mode).
 */
export async function startOurs(opts: {
  users: number;
  serverRoot?: string;
  config?: ConfigInput;
  /** Write a V8 CPU profile of the server here when it stops. */
  cpuProfileDir?: string;
}): Promise<OursTarget> {
  const dataDir = mkdtempSync(join(tmpdir(), "relaychat-bench-"));
  const key = { kid: "bench", secret: randomBytes(32) };
  const tokens = createTokenService({
    keys: [key],
    activeKeyId: key.kid,
    issuer: "relaychat",
    acceptDevTokens: false,
  });
  const child = forkTs(join(import.meta.dirname, "ours-server.ts"), [], {
    execArgv: [
      "--expose-gc",
      ...(opts.cpuProfileDir ? ["--cpu-prof", `--cpu-prof-dir=${opts.cpuProfileDir}`] : []),
    ],
  });
  const rpc = makeRpc(child);
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
  let started: { port: number; pid: number };
  try {
    started = await rpc<{ port: number; pid: number }>("start", {
      config,
      users: opts.users,
      ...(opts.serverRoot ? { serverRoot: opts.serverRoot } : {}),
    });
  } catch (err) {
    // A server that failed to start leaves neither a process nor its data behind.
    child.kill("SIGKILL");
    await waitExit(child, 5000);
    rmSync(dataDir, { recursive: true, force: true });
    throw err;
  }
  const { port, pid } = started;
  const transport = createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` });
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
    port,
    pid,
    tokens,
    token,
    chat: createClient(ChatService, transport),
    async as(i) {
      return { headers: { authorization: `Bearer ${await token(i)}` } };
    },
    rssAfterGc: () => rpc<number>("gc"),
    rss: () => rssOf(pid),
    async stop() {
      await rpc("stop").catch(() => undefined);
      await waitExit(child, 10_000);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
