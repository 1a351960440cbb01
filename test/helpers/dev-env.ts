import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { createConnection, createServer } from "node:net";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import cassandraDriver from "cassandra-driver";
import { Redis } from "ioredis";

/** Whether a listener can bind `port` on loopback right now. */
function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once("error", () => resolve(false));
    probe.listen(port, "127.0.0.1", () => probe.close(() => resolve(true)));
  });
}

/** The lowest port the kernel hands outgoing connections (Linux; 32768 elsewhere). */
function ephemeralLow(): number {
  try {
    const low = Number(
      readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").split(/\s+/)[0],
    );
    return Number.isInteger(low) && low > 2048 ? low : 32_768;
  } catch {
    return 32_768;
  }
}

/**
 * A loopback port nothing listens on right now, for a server that must be
 * told its port (and may be restarted on it). Drawn below the ephemeral
 * range: a port the kernel can hand an outgoing connection may be taken by
 * one of the suite's many connections before the server binds it.
 */
export async function freePort(): Promise<number> {
  // From 20000: the shared nodes' fixed ports (Cassandra 19042-19044, Pulsar 18080...) lie below.
  const low = Math.max(Math.min(ephemeralLow(), 32_768), 24_000);
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * (low - 20_000));
    if (await canListen(port)) return port;
  }
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

// ---------------------------------------------------------------------------
// Java servers (Cassandra, Pulsar): assembled from Maven Central by the
// project's scripts into a cache outside the repository, started with `java`

/** One kind of Java server the tests run, and how to tell that a node of it is up. */
interface JvmService {
  name: string;
  /** Where its jars (lib/) and its shared node (node/) live. */
  home: string;
  /** Assembles it into `home` (once per machine; a no-op afterwards). */
  installScript: string;
  /** The main class its command line names, with its node's directory (against recycled pids). */
  mainClass: string;
  /** Its files under logs/, quoted when it will not start. */
  logs: string[];
  startTimeoutMs: number;
  /** Whether the node on this port is up for tests. */
  answers(port: number): Promise<boolean>;
}

const cacheDir = () => process.env.RELAYCHAT_CACHE || join(homedir(), ".cache", "relaychat");

/** The pid of the node this helper started in `nodeDir`, when it is still running. */
function runningNode(svc: JvmService, nodeDir: string): number | undefined {
  let pid: number;
  try {
    pid = Number(readFileSync(join(nodeDir, "node.pid"), "utf8"));
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 0 || !alive(pid)) return undefined;
  try {
    // A recycled pid is some other process: only ours names this node's directory.
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    if (!cmdline.includes(svc.mainClass) || !cmdline.includes(nodeDir)) return undefined;
  } catch {
    // no /proc (not Linux): trust the pid file
  }
  return pid;
}

/** The end of the node's logs, for an error message. */
function logTail(svc: JvmService, nodeDir: string): string {
  const tail = (file: string) => {
    try {
      const lines = readFileSync(join(nodeDir, "logs", file), "utf8")
        .trimEnd()
        .split("\n");
      return lines.length === 1 && lines[0] === "" ? "" : lines.slice(-40).join("\n");
    } catch {
      return "";
    }
  };
  const parts = svc.logs
    .map((file) => [`logs/${file}`, tail(file)] as const)
    .filter(([, text]) => text !== "");
  return parts.length === 0
    ? ` (nothing logged in ${nodeDir}/logs)`
    : parts.map(([name, text]) => `\n--- ${join(nodeDir, name)} (tail) ---\n${text}`).join("");
}

/** Waits for the node to be up; kills it (it is ours) and throws when it will not be. */
async function waitForNode(svc: JvmService, pid: number, nodeDir: string, port: number) {
  const deadline = Date.now() + svc.startTimeoutMs;
  for (;;) {
    if (await svc.answers(port)) return;
    if (!alive(pid)) {
      throw new Error(
        `${svc.name} (pid ${pid}) exited before answering on port ${port}${logTail(svc, nodeDir)}`,
      );
    }
    if (Date.now() > deadline) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // gone already
      }
      throw new Error(
        `${svc.name} (pid ${pid}) did not answer on port ${port} within ` +
          `${svc.startTimeoutMs / 1000} s and was killed${logTail(svc, nodeDir)}`,
      );
    }
    await sleep(250);
  }
}

/**
 * Starts `java args` in `nodeDir` as a detached process of its own (its own
 * process group, no pipes to this one), so that it outlives the vitest
 * worker that started it, with its output in logs/stdout.log. Assembles the
 * server first on a machine that lacks it. Returns its pid.
 */
function spawnNode(svc: JvmService, nodeDir: string, args: string[]): number {
  const java = process.env.JAVA_HOME ? join(process.env.JAVA_HOME, "bin", "java") : "java";
  const out = openSync(join(nodeDir, "logs", "stdout.log"), "a");
  let child: ChildProcess;
  try {
    child = spawn(java, args, { cwd: nodeDir, detached: true, stdio: ["ignore", out, out] });
  } finally {
    closeSync(out);
  }
  child.on("error", () => undefined); // a missing java shows as no pid, below
  child.unref();
  if (child.pid === undefined) {
    throw new Error(`could not run ${java} to start ${svc.name}: is a JDK 17 installed?`);
  }
  writeFileSync(join(nodeDir, "node.pid"), String(child.pid));
  return child.pid;
}

/** Assembles the server on a machine that lacks it (the test command's pretest does it first). */
function installed(svc: JvmService): string {
  if (!existsSync(join(svc.home, ".installed"))) {
    execFileSync(fileURLToPath(new URL(svc.installScript, import.meta.url)), {
      stdio: ["ignore", "inherit", "inherit"],
    });
  }
  return join(svc.home, "lib");
}

/**
 * Resolves once the shared node answers on `port`, starting one (`start`,
 * in the service's node/ directory) when none does. Test files racing to
 * start it take turns through a lock file; the losers wait for the winner's
 * node. A node still starting whose starter is gone is waited for, not
 * replaced.
 */
async function ensureSharedNode(
  svc: JvmService,
  port: number,
  start: (nodeDir: string) => number,
): Promise<void> {
  if (await svc.answers(port)) return;
  const nodeDir = join(svc.home, "node");
  const lock = join(svc.home, "start.lock");
  // A holder gives up (and lets go) after its own timeout; this is for one that hangs.
  const waitDeadline = Date.now() + 2 * svc.startTimeoutMs;
  mkdirSync(svc.home, { recursive: true });
  for (;;) {
    if (tryLock(lock)) {
      try {
        if (await svc.answers(port)) return;
        const pid = runningNode(svc, nodeDir) ?? start(nodeDir);
        await waitForNode(svc, pid, nodeDir, port);
        return;
      } finally {
        rmSync(lock, { force: true });
      }
    }
    // Another test file is starting it: wait for its node, or for its lock to go.
    await sleep(250);
    if (await svc.answers(port)) return;
    if (Date.now() > waitDeadline) {
      throw new Error(
        `${svc.name} did not answer on port ${port} within ` +
          `${(2 * svc.startTimeoutMs) / 1000} s while another test process ` +
          `(lock ${lock}) was starting it${logTail(svc, nodeDir)}`,
      );
    }
  }
}

/**
 * A node of a test's own in a temp directory, started at once: `kill`
 * SIGKILLs it, `restart` starts it again on the same data, and `stop` kills
 * it and removes the data.
 */
async function privateNode(
  svc: JvmService,
  port: number,
  start: (nodeDir: string, keep: boolean) => number,
) {
  const nodeDir = mkdtempSync(join(tmpdir(), `chat-${svc.name.toLowerCase()}-`));
  const run = async (keep: boolean) => {
    const pid = start(nodeDir, keep);
    await waitForNode(svc, pid, nodeDir, port);
    return pid;
  };
  let pid = await run(false);
  const kill = async () => {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone already
    }
    while (alive(pid)) await sleep(50);
  };
  return {
    /** The node's pid, to measure or signal it. */
    pid: () => pid,
    kill,
    async restart() {
      pid = await run(true);
    },
    async stop() {
      await kill();
      rmSync(nodeDir, { recursive: true, force: true });
    },
  };
}

/**
 * Stops the shared node this helper started (SIGTERM, then SIGKILL after
 * 30 s), for a run that started it and should leave nothing behind.
 */
async function stopSharedNode(svc: JvmService): Promise<void> {
  const pid = runningNode(svc, join(svc.home, "node"));
  if (pid === undefined) return;
  process.kill(pid, "SIGTERM");
  const deadline = Date.now() + 30_000;
  while (alive(pid) && Date.now() < deadline) await sleep(100);
  if (alive(pid)) process.kill(pid, "SIGKILL");
}

// ---------------------------------------------------------------------------
// Cassandra

/** The Cassandra that scripts/install-cassandra.sh assembles from Maven Central. */
const cassandraVersion = "5.0.6";

/**
 * The test Cassandra's CQL port: fixed, so a node started by one test file (or
 * run) is found and reused by the next, and not 9042, so it never meets a
 * developer's own Cassandra. Its internode ports are the next two up, not
 * 7000/7001, for the same reason.
 */
const cassandraPort = 19042;

/** A node's ports: CQL, and the two internode ones it must bind even alone. */
interface NodePorts {
  native: number;
  storage: number;
  ssl: number;
}
const sharedPorts: NodePorts = {
  native: cassandraPort,
  storage: cassandraPort + 1,
  ssl: cassandraPort + 2,
};

/**
 * A cold start takes about 4 s on an idle 2-core box and several times that
 * when other test files keep it busy; this leaves room for a very busy one.
 */
const cassandra: JvmService = {
  name: "Cassandra",
  home: join(cacheDir(), `cassandra-${cassandraVersion}`),
  installScript: "../../scripts/install-cassandra.sh",
  mainClass: "CassandraDaemon",
  logs: ["system.log", "stdout.log"],
  startTimeoutMs: 120_000,
  answers: (port) => cqlAnswers(port),
};

/**
 * Resolves once a single-node Cassandra answers CQL on 127.0.0.1:`cassandraPort`,
 * starting one when none does. The node outlives the test file that started
 * it (the next file reuses it) and is left running (test/global-setup.ts
 * stops it after a run that started it); every cold start begins from an
 * empty data directory, so tests must create their own keyspaces. Throws,
 * with the tail of the node's log, when it cannot start: a suite that needs
 * Cassandra fails rather than skips.
 *
 * `contactPoint` is "host:port", usable as is in cassandra-driver's
 * `contactPoints`; the data center is SimpleSnitch's.
 */
export async function ensureCassandra(): Promise<{
  contactPoint: string;
  localDataCenter: string;
  port: number;
}> {
  await ensureSharedNode(cassandra, cassandraPort, (nodeDir) =>
    startCassandra(nodeDir, sharedPorts),
  );
  return {
    contactPoint: `127.0.0.1:${cassandraPort}`,
    localDataCenter: "datacenter1",
    port: cassandraPort,
  };
}

/**
 * A Cassandra node of a test's own, on free ports and in a directory of its
 * own, for tests that take it away and bring it back: `kill` SIGKILLs it,
 * `restart` starts it again on the same data (its commit log replayed), and
 * `stop` kills it and removes the data.
 */
export async function startPrivateCassandra() {
  const ports: NodePorts = { native: await freePort(), storage: await freePort(), ssl: 0 };
  ports.ssl = await freePort();
  const node = await privateNode(cassandra, ports.native, (nodeDir, keep) =>
    startCassandra(nodeDir, ports, { keep }),
  );
  return {
    contactPoint: `127.0.0.1:${ports.native}`,
    localDataCenter: "datacenter1",
    kill: node.kill,
    restart: node.restart,
    stop: node.stop,
  };
}

/** True when the test Cassandra answers CQL (whoever started it). */
export function cassandraRunning(): Promise<boolean> {
  return cqlAnswers(cassandraPort);
}

/** The test Cassandra's pid, when this helper started the node that runs. */
export function cassandraPid(): number | undefined {
  return runningNode(cassandra, join(cassandra.home, "node"));
}

/** Stops the test Cassandra this helper started, for a run that should leave nothing behind. */
export function stopCassandra(): Promise<void> {
  return stopSharedNode(cassandra);
}

/**
 * Drops a test's keyspace from the shared test node (it keeps running
 * between files and runs, and every keyspace left costs it memory).
 */
export async function dropKeyspace(keyspace: string): Promise<void> {
  const client = new cassandraDriver.Client({
    contactPoints: [`127.0.0.1:${cassandraPort}`],
    localDataCenter: "datacenter1",
  });
  try {
    await client.execute(`DROP KEYSPACE IF EXISTS ${keyspace}`);
  } finally {
    await client.shutdown();
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Takes the start lock (an O_EXCL file holding the taker's pid), or clears a
 * lock whose taker has died so that the next call can take it.
 */
function tryLock(lock: string): boolean {
  try {
    writeFileSync(lock, String(process.pid), { flag: "wx" });
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
  let holder: string;
  try {
    holder = readFileSync(lock, "utf8");
  } catch {
    return false; // released in between
  }
  const pid = Number(holder);
  // An empty lock is one being written; it is stale only when old.
  const stale =
    holder === ""
      ? Date.now() - (statSync(lock, { throwIfNoEntry: false })?.mtimeMs ?? Date.now()) > 10_000
      : !(Number.isInteger(pid) && pid > 0 && alive(pid));
  if (stale) {
    try {
      if (readFileSync(lock, "utf8") === holder) unlinkSync(lock);
    } catch {
      // gone already
    }
  }
  return false;
}

/**
 * Whether a CQL server answers on the port: OPTIONS, then STARTUP, which
 * must come back READY (protocol v4, no authentication), as a driver's first
 * connection does. Cassandra opens its CQL port only once it is up.
 */
function cqlAnswers(port: number, timeoutMs = 2_000): Promise<boolean> {
  const frame = (stream: number, opcode: number, body: Buffer) => {
    const header = Buffer.alloc(9);
    header[0] = 0x04; // request, protocol v4
    header.writeInt16BE(stream, 2);
    header[4] = opcode;
    header.writeInt32BE(body.length, 5);
    return Buffer.concat([header, body]);
  };
  const text = (s: string) => {
    const b = Buffer.from(s, "utf8");
    const len = Buffer.alloc(2);
    len.writeUInt16BE(b.length);
    return Buffer.concat([len, b]);
  };
  const startup = Buffer.concat([Buffer.from([0, 1]), text("CQL_VERSION"), text("3.0.0")]);
  return new Promise((resolve) => {
    let settled = false;
    let received = Buffer.alloc(0);
    const socket = createConnection({ host: "127.0.0.1", port });
    const done = (ok: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.on("error", () => done(false));
    socket.on("close", () => done(false));
    socket.on("connect", () => {
      // OPTIONS (0x05) on stream 0, STARTUP (0x01) on stream 1
      socket.write(Buffer.concat([frame(0, 0x05, Buffer.alloc(0)), frame(1, 0x01, startup)]));
    });
    socket.on("data", (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      while (received.length >= 9) {
        const length = received.readInt32BE(5);
        if (received.length < 9 + length) return;
        const [version, , , , opcode] = received;
        const stream = received.readInt16BE(2);
        received = received.subarray(9 + length);
        if (version !== 0x84) return done(false);
        if (stream === 1) return done(opcode === 0x02); // READY
      }
    });
  });
}

/**
 * Starts a node in a fresh `nodeDir` (or, with `keep`, on what a previous
 * node left there). Returns its pid.
 */
function startCassandra(nodeDir: string, ports: NodePorts, opts: { keep?: boolean } = {}): number {
  const keep = opts.keep ?? false;
  const lib = installed(cassandra);
  if (!keep) rmSync(nodeDir, { recursive: true, force: true });
  for (const d of [
    "conf",
    "data",
    "commitlog",
    "saved_caches",
    "hints",
    "cdc_raw",
    "triggers",
    "logs",
  ]) {
    mkdirSync(join(nodeDir, d), { recursive: true });
  }
  const yaml = join(nodeDir, "conf", "cassandra.yaml");
  const logback = join(nodeDir, "conf", "logback.xml");
  writeFileSync(yaml, cassandraYaml(nodeDir, ports));
  writeFileSync(logback, cassandraLogback(nodeDir));
  const jamm = readdirSync(lib).find((f) => /^jamm-.*\.jar$/.test(f));
  return spawnNode(cassandra, nodeDir, [
    "-Xms512m",
    "-Xmx1g",
    "-Xss256k",
    "-XX:+UseG1GC",
    "-XX:+ParallelRefProcEnabled",
    "-XX:MaxTenuringThreshold=1",
    "-XX:+PerfDisableSharedMem",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.net.preferIPv4Stack=true",
    // What Cassandra's conf/jvm17-server.options opens up on JDK 17.
    "-Djdk.attach.allowAttachSelf=true",
    ...[
      "java.base/jdk.internal.misc",
      "java.management.rmi/com.sun.jmx.remote.internal.rmi",
      "java.rmi/sun.rmi.registry",
      "java.rmi/sun.rmi.server",
      "java.sql/java.sql",
      "java.base/java.lang.ref",
      "jdk.unsupported/sun.misc",
      "jdk.compiler/com.sun.tools.javac.file",
      "jdk.attach/sun.tools.attach",
    ].flatMap((p) => ["--add-exports", `${p}=ALL-UNNAMED`]),
    ...[
      "java.base/java.lang.module",
      "java.base/jdk.internal.loader",
      "java.base/jdk.internal.ref",
      "java.base/jdk.internal.reflect",
      "java.base/jdk.internal.math",
      "java.base/jdk.internal.module",
      "java.base/jdk.internal.util.jar",
      "jdk.management/com.sun.management.internal",
      "java.base/sun.nio.ch",
      "java.base/java.io",
      "java.base/java.lang.reflect",
      "jdk.compiler/com.sun.tools.javac",
      "java.base/java.lang",
      "java.base/java.util",
    ].flatMap((p) => ["--add-opens", `${p}=ALL-UNNAMED`]),
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
    ...(jamm ? [`-javaagent:${join(lib, jamm)}`] : []),
    `-Dcassandra.config=${pathToFileURL(yaml).href}`,
    `-Dlogback.configurationFile=${pathToFileURL(logback).href}`,
    `-Dcassandra.storagedir=${nodeDir}`,
    `-Dcassandra.logdir=${join(nodeDir, "logs")}`,
    `-Dcassandra.triggers_dir=${join(nodeDir, "triggers")}`,
    "-Dcassandra-foreground=yes",
    // No JMX: neither cassandra.jmx.local.port nor a remote port is set.
    // A single seed with nothing to wait for: skip the gossip and ring delays.
    "-Dcassandra.skip_wait_for_gossip_to_settle=0",
    "-Dcassandra.ring_delay_ms=0",
    "-Dcassandra.superuser_setup_delay_ms=0",
    "-Dcassandra.load_ring_state=false",
    "-Dchronicle.analytics.disable=true",
    "-Dchronicle.announcer.disable=true",
    "-cp",
    `${lib}/*`,
    "org.apache.cassandra.service.CassandraDaemon",
  ]);
}

/** The node's configuration: one token, loopback only, small thread pools, nothing kept. */
function cassandraYaml(nodeDir: string, ports: NodePorts): string {
  const dir = (d: string) => JSON.stringify(join(nodeDir, d));
  return `# Written by test/helpers/dev-env.ts on every cold start of the test node.
cluster_name: relaychat-test
num_tokens: 1
initial_token: 0
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:${ports.storage}"
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: ${ports.storage}
ssl_storage_port: ${ports.ssl}
start_native_transport: true
native_transport_port: ${ports.native}
authenticator:
  class_name: org.apache.cassandra.auth.AllowAllAuthenticator
authorizer:
  class_name: org.apache.cassandra.auth.AllowAllAuthorizer
storage_compatibility_mode: NONE
data_file_directories:
  - ${dir("data")}
commitlog_directory: ${dir("commitlog")}
saved_caches_directory: ${dir("saved_caches")}
hints_directory: ${dir("hints")}
cdc_raw_directory: ${dir("cdc_raw")}
# A write is acknowledged once the commit log holding it is fsync'd, as
# durable acks need (the default, periodic, acks before and syncs every 10 s:
# a node killed in between loses what it acknowledged). Batch mode syncs at
# once, sharing the fsync among the writes waiting; group mode waits for a
# window first, which every write of a send's chain would pay.
commitlog_sync: batch
# Lightweight transactions in two round trips instead of four.
paxos_variant: v2
# Tests TRUNCATE and DROP a lot: no snapshot for either.
auto_snapshot: false
snapshot_before_compaction: false
incremental_backups: false
hinted_handoff_enabled: false
concurrent_reads: 16
concurrent_writes: 64
concurrent_counter_writes: 8
concurrent_materialized_view_writes: 2
concurrent_compactors: 1
memtable_flush_writers: 1
native_transport_max_threads: 32
`;
}

/** Logback for the node: warnings and errors to logs/system.log, nothing on stdout. */
function cassandraLogback(nodeDir: string): string {
  return `<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>${join(nodeDir, "logs", "system.log")}</file>
    <encoder>
      <pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern>
    </encoder>
  </appender>
  <root level="WARN">
    <appender-ref ref="FILE" />
  </root>
</configuration>
`;
}

// ---------------------------------------------------------------------------
// Pulsar

/** The Pulsar that scripts/install-pulsar.sh assembles from Maven Central. */
const pulsarVersion = "4.0.7";

/** A broker's ports: the binary protocol, HTTP (admin and WebSocket API), and its one bookie. */
interface BrokerPorts {
  broker: number;
  web: number;
  bookie: number;
}

/**
 * The test broker's ports: fixed, so a broker started by one test file (or
 * run) is found and reused by the next, and not 6650/8080/3181, so it never
 * meets a developer's own Pulsar.
 */
const pulsarSharedPorts: BrokerPorts = { broker: 16650, web: 18080, bookie: 13181 };

/**
 * A cold start takes 5-10 s on a 2-core box that other work keeps half busy,
 * and longer while test files compete for it; this leaves room for a very busy one.
 */
const pulsar: JvmService = {
  name: "Pulsar",
  home: join(cacheDir(), `pulsar-${pulsarVersion}`),
  installScript: "../../scripts/install-pulsar.sh",
  mainClass: "PulsarStandaloneStarter",
  logs: ["pulsar.log", "stdout.log"],
  startTimeoutMs: 180_000,
  answers: (port) => pulsarAnswers(port),
};

/**
 * Resolves once a standalone Pulsar (broker, one bookie, RocksDB metadata)
 * passes its health check on 127.0.0.1 and has its public/default
 * namespace, starting one when none does. The broker outlives the test file
 * that started it (the next file reuses it) and is left running
 * (test/global-setup.ts stops it after a run that started it); every cold
 * start begins from an empty data directory, so tests must use topics of
 * their own. Throws, with the tail of the broker's log, when it cannot
 * start: a suite that needs Pulsar fails rather than skips.
 *
 * `webUrl` serves the admin API and the WebSocket API (ws://…/ws/v2/…);
 * `serviceUrl` is the binary protocol's; `port` is the web port.
 */
export async function ensurePulsar(): Promise<{
  webUrl: string;
  serviceUrl: string;
  port: number;
}> {
  await ensureSharedNode(pulsar, pulsarSharedPorts.web, (nodeDir) =>
    startPulsar(nodeDir, pulsarSharedPorts),
  );
  return brokerUrls(pulsarSharedPorts);
}

/**
 * A standalone Pulsar of a test's own, on free ports and in a directory of
 * its own, for tests that take it away and bring it back: `kill` SIGKILLs
 * it, `restart` starts it again on the same data (the bookie replays its
 * journal, subscriptions resume from their persisted positions), and `stop`
 * kills it and removes the data.
 */
export async function startPrivatePulsar() {
  const ports: BrokerPorts = { broker: await freePort(), web: await freePort(), bookie: 0 };
  ports.bookie = await freePort();
  const node = await privateNode(pulsar, ports.web, (nodeDir, keep) =>
    startPulsar(nodeDir, ports, { keep }),
  );
  return { ...brokerUrls(ports), ...node };
}

/** True when the test Pulsar is healthy (whoever started it). */
export function pulsarRunning(): Promise<boolean> {
  return pulsarAnswers(pulsarSharedPorts.web);
}

/** The test Pulsar's pid, when this helper started the broker that runs. */
export function pulsarPid(): number | undefined {
  return runningNode(pulsar, join(pulsar.home, "node"));
}

/** Stops the test Pulsar this helper started, for a run that should leave nothing behind. */
export function stopPulsar(): Promise<void> {
  return stopSharedNode(pulsar);
}

function brokerUrls(ports: BrokerPorts) {
  return {
    webUrl: `http://127.0.0.1:${ports.web}`,
    serviceUrl: `pulsar://127.0.0.1:${ports.broker}`,
    port: ports.web,
  };
}

/**
 * Whether the broker on the web port is up for tests: its namespace
 * public/default exists (standalone creates it once the broker has started)
 * and its health check, a produce and consume on a heartbeat topic, passes.
 */
async function pulsarAnswers(webPort: number): Promise<boolean> {
  const ok = async (path: string, timeoutMs: number) => {
    try {
      const res = await fetch(`http://127.0.0.1:${webPort}${path}`, {
        signal: AbortSignal.timeout(timeoutMs),
      });
      await res.arrayBuffer();
      return res.ok;
    } catch {
      return false;
    }
  };
  return (
    (await ok("/admin/v2/namespaces/public/default", 2_000)) &&
    (await ok("/admin/v2/brokers/health", 10_000))
  );
}

/**
 * Starts a standalone broker in a fresh `nodeDir` (or, with `keep`, on what
 * a previous one left there). Returns its pid.
 */
function startPulsar(nodeDir: string, ports: BrokerPorts, opts: { keep?: boolean } = {}): number {
  const keep = opts.keep ?? false;
  const lib = installed(pulsar);
  if (!keep) rmSync(nodeDir, { recursive: true, force: true });
  for (const d of ["conf", "data", "logs"]) mkdirSync(join(nodeDir, d), { recursive: true });
  const conf = join(nodeDir, "conf", "standalone.conf");
  const log4j = join(nodeDir, "conf", "log4j2.xml");
  writeFileSync(conf, pulsarConf(ports));
  writeFileSync(log4j, pulsarLog4j(nodeDir));
  return spawnNode(pulsar, nodeDir, [
    "-Xms256m",
    "-Xmx768m",
    "-XX:MaxDirectMemorySize=512m",
    "-XX:+UseG1GC",
    "-XX:+PerfDisableSharedMem",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.net.preferIPv4Stack=true",
    // What Pulsar's bin/pulsar opens up on JDK 17: BookKeeper's fadvise and
    // CRC32 digest, Netty's direct buffers, DNS and GC metrics.
    "-Dio.netty.tryReflectionSetAccessible=true",
    ...[
      "java.base/java.io",
      "java.base/java.util.zip",
      "java.base/java.nio",
      "java.base/jdk.internal.misc",
      "java.base/sun.net",
      "java.management/sun.management",
    ].flatMap((p) => ["--add-opens", `${p}=ALL-UNNAMED`]),
    `-Dlog4j.configurationFile=${pathToFileURL(log4j).href}`,
    // Lets the broker log its own shutdown, as bin/pulsar does.
    "-Dlog4j.shutdownHookEnabled=false",
    "-cp",
    `${lib}/*`,
    "org.apache.pulsar.PulsarStandaloneStarter",
    "--config",
    conf,
    "--no-functions-worker",
    "--no-stream-storage",
    // Metadata in RocksDB under the node (no ZooKeeper, no port of its own).
    "--metadata-dir",
    join(nodeDir, "data", "metadata"),
    "--bookkeeper-dir",
    join(nodeDir, "data", "bookkeeper"),
    "--bookkeeper-port",
    String(ports.bookie),
  ]);
}

/**
 * The broker's and its bookie's configuration (standalone reads both from
 * one file): loopback only, one copy of everything, small caches, and an
 * acknowledgement only once the data is on disk.
 */
function pulsarConf(ports: BrokerPorts): string {
  return `# Written by test/helpers/dev-env.ts on every start of a test broker.
clusterName=standalone
bindAddress=127.0.0.1
advertisedAddress=127.0.0.1
brokerServicePort=${ports.broker}
webServicePort=${ports.web}
# The WebSocket API (/ws/v2/...) on the web port.
webSocketServiceEnabled=true
loadManagerClassName=org.apache.pulsar.broker.loadbalance.NoopLoadManager
loadBalancerEnabled=false
transactionCoordinatorEnabled=false
allowAutoTopicCreation=true
allowAutoTopicCreationType=non-partitioned
# A topic nobody is connected to keeps its messages until they are consumed.
brokerDeleteInactiveTopicsEnabled=false
managedLedgerDefaultEnsembleSize=1
managedLedgerDefaultWriteQuorum=1
managedLedgerDefaultAckQuorum=1
# Every acknowledgement moves the subscription's persisted position at once
# (rate-limited, a restart would redeliver what was acknowledged meanwhile).
managedLedgerDefaultMarkDeleteRateLimit=0
# A caught-up subscription looks for new messages at once, not 10 ms later.
managedLedgerNewEntriesCheckDelayInMillis=0
# --- the bookie ---
# Binds the given --bookkeeper-port (without it, BKCluster picks a free one).
allowEphemeralPorts=true
allowLoopback=true
listeningInterface=lo
# A write is acknowledged only once its journal entry is fsync'd, flushed as
# soon as no other write waits (the journal's group commit).
journalSyncData=true
journalWriteData=true
journalFlushWhenQueueEmpty=true
journalMaxGroupWaitMSec=1
ledgerStorageClass=org.apache.bookkeeper.bookie.storage.ldb.DbLedgerStorage
dbStorage_writeCacheMaxSizeMb=16
dbStorage_readAheadCacheMaxSizeMb=16
dbStorage_rocksDB_blockCacheSize=16777216
diskUsageThreshold=0.99
diskUsageWarnThreshold=0.99
`;
}

/** Log4j for the broker: warnings and errors, and its start-up steps, to logs/pulsar.log. */
function pulsarLog4j(nodeDir: string): string {
  return `<Configuration status="warn">
  <Appenders>
    <File name="File" fileName="${join(nodeDir, "logs", "pulsar.log")}">
      <PatternLayout pattern="%d{ISO8601} %-5level [%t] %c{1} - %msg%n" />
    </File>
  </Appenders>
  <Loggers>
    <Logger name="org.apache.pulsar.PulsarStandalone" level="info" />
    <Logger name="org.apache.pulsar.metadata.bookkeeper.BKCluster" level="info" />
    <Root level="warn">
      <AppenderRef ref="File" />
    </Root>
  </Loggers>
</Configuration>
`;
}
