/**
 * Launches a private ejabberd (Debian package) as a benchmark target.
 *
 * Each start gets its own temp dir (config, spool, logs), its own Erlang node
 * name and cookie, free ports, and a fresh PostgreSQL database holding the
 * users (and, in archive mode, the MAM archive). The node never registers with
 * epmd: it uses `-erl_epmd_port` with `-start_epmd false`, so we neither start
 * nor depend on a shared epmd (RabbitMQ or others may run one).
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { readFile } from "node:fs/promises";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "../../test/helpers/dev-env.js";

/** A running ejabberd started by {@link startEjabberd}. */
export interface EjabberdTarget {
  name: "ejabberd-routing" | "ejabberd-archive";
  /** "127.0.0.1". */
  host: string;
  /** c2s TCP port (plain, no TLS). */
  port: number;
  /** XMPP domain, "bench.local". */
  domain: string;
  /** MUC service domain, "conference.bench.local". */
  mucDomain: string;
  /** ejabberd version string, e.g. "23.01-1". */
  version: string;
  /** The beam.smp OS pid (for RSS). */
  pid: number;
  /** Erlang node name (for `ejabberdctl`-style debugging with ERL_DIST_PORT). */
  node: string;
  /** The PostgreSQL database this instance uses. */
  database: string;
  /** Directory with ejabberd.log / error.log (removed by stop()). */
  logDir: string;
  /** VmRSS of the beam process from /proc. */
  rssBytes(): Promise<number>;
  /** Rows in the MAM `archive` table (0 in routing mode). */
  archivedCount(): Promise<number>;
  /** Stops ejabberd, drops the temp PG database, removes the temp dir. */
  stop(): Promise<void>;
}

/** Options for {@link startEjabberd}. */
export interface StartEjabberdOptions {
  mode: "routing" | "archive";
  /** Provision users u0..u{users-1}, password "bench". */
  users: number;
  /** Service and per-room occupant limit; default 1000. */
  mucMaxUsers?: number;
  log?: (line: string) => void;
  /** PostgreSQL synchronous_commit for the archive database; default true (PG default). */
  syncCommit?: boolean;
  /** Startup bound; default 60000. */
  startTimeoutMs?: number;
}

const ERL = "/usr/bin/erl";
const PSQL = "psql";
const LIB_ROOT = "/usr/lib/x86_64-linux-gnu";
const PG_SCHEMA = "/usr/share/ejabberd/sql/pg.sql";
const PG_ARGS = ["-h", "127.0.0.1", "-U", "postgres", "-X", "-q", "-v", "ON_ERROR_STOP=1"];
const DOMAIN = "bench.local";
const MUC_DOMAIN = `conference.${DOMAIN}`;
const DB_PREFIX = "bench_ejabberd_";
const DIR_PREFIX = "bench-ejabberd-";
const READY_MARK = "BENCH_EJABBERD_READY";
/** ejabberd's default pool size, stated so that readiness can wait for every worker. */
const SQL_POOL_SIZE = 10;

let startCount = 0;

function findEjabberdApp(): string | undefined {
  if (!existsSync(LIB_ROOT)) return undefined;
  for (const entry of readdirSync(LIB_ROOT)) {
    if (!entry.startsWith("ejabberd-")) continue;
    const app = join(LIB_ROOT, entry, "ebin", "ejabberd.app");
    if (existsSync(app)) return app;
  }
  return undefined;
}

function psqlSync(db: string, sql: string): { ok: boolean; out: string } {
  const r = spawnSync(PSQL, [...PG_ARGS, "-d", db, "-tA", "-c", sql], {
    encoding: "utf8",
    timeout: 30_000,
  });
  return { ok: r.status === 0, out: `${r.stdout ?? ""}${r.stderr ?? ""}`.trim() };
}

function psql(db: string, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(PSQL, [...PG_ARGS, "-d", db, "-tA", ...args], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      out += d;
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      err += d;
    });
    child.on("error", reject);
    child.on("close", (code) => {
      if (code === 0) resolve(out.trim());
      else reject(new Error(`psql ${args.join(" ")} failed (${code}): ${err.trim()}`));
    });
    child.stdin.end(input ?? "");
  });
}

/**
 * Whether this machine can run the ejabberd target (package, driver, schema,
 * PostgreSQL). `installable` marks what scripts/install-ejabberd.sh provides.
 */
export type EjabberdAvailability =
  | { ok: true }
  | { ok: false; reason: string; installable: boolean };

export function ejabberdAvailable(): EjabberdAvailability {
  const missing = (reason: string) => ({ ok: false as const, reason, installable: true });
  if (!existsSync(ERL)) return missing("Erlang (/usr/bin/erl) is not installed");
  if (findEjabberdApp() === undefined) {
    return missing("ejabberd is not installed: run scripts/install-ejabberd.sh");
  }
  if (!readdirSync(LIB_ROOT).some((e) => e.startsWith("p1_pgsql")) && !pgsqlInErlangLib()) {
    return missing("erlang-p1-pgsql is not installed");
  }
  if (!existsSync(PG_SCHEMA)) return missing(`${PG_SCHEMA} is missing`);
  const probe = psqlSync("postgres", "select 1");
  if (!probe.ok) {
    return {
      ok: false,
      reason: `PostgreSQL at 127.0.0.1:5432: ${probe.out}`,
      installable: false,
    };
  }
  return { ok: true };
}

/** Runs scripts/install-ejabberd.sh (Debian's packages, once per machine), its messages to stderr. */
export function runEjabberdInstall(): { ok: boolean; detail: string } {
  const script = join(import.meta.dirname, "../../scripts/install-ejabberd.sh");
  const r = spawnSync(script, [], { stdio: ["ignore", "inherit", "pipe"], encoding: "utf8" });
  process.stderr.write(r.stderr ?? "");
  const lastLine = (r.stderr ?? "").trim().split("\n").at(-1) ?? "";
  return r.status === 0
    ? { ok: true, detail: "" }
    : { ok: false, detail: r.error?.message ?? (lastLine || `exit status ${r.status}`) };
}

/**
 * Sets ejabberd up for the bench when its packages are missing, so a fresh
 * clone's `npm run bench` compares against it without a separate step. Only
 * what the install script provides is attempted (not a PostgreSQL that is
 * down); a failed install is named in the reason the target is skipped.
 */
export function ensureEjabberd(
  deps: {
    check?: () => EjabberdAvailability;
    install?: () => { ok: boolean; detail: string };
  } = {},
): EjabberdAvailability & { installed: boolean } {
  const check = deps.check ?? ejabberdAvailable;
  const before = check();
  if (before.ok || !before.installable) return { ...before, installed: false };
  const result = (deps.install ?? runEjabberdInstall)();
  const after = check();
  if (after.ok || result.ok) return { ...after, installed: result.ok };
  return {
    ...after,
    reason: `${after.reason} (scripts/install-ejabberd.sh failed: ${result.detail})`,
    installed: false,
  };
}

function pgsqlInErlangLib(): boolean {
  const dir = "/usr/lib/erlang/lib";
  return existsSync(dir) && readdirSync(dir).some((e) => e.startsWith("p1_pgsql"));
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host: "127.0.0.1", port });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Removes databases and temp dirs left by bench processes that died without stop(). */
function dropStaleLeftovers(): void {
  for (const entry of readdirSync(tmpdir())) {
    if (!entry.startsWith(DIR_PREFIX)) continue;
    const pid = Number(entry.slice(DIR_PREFIX.length).split("-")[0]);
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && !pidAlive(pid)) {
      rmSync(join(tmpdir(), entry), { recursive: true, force: true });
    }
  }
  const r = psqlSync(
    "postgres",
    `select datname from pg_database where datname like '${DB_PREFIX}%'`,
  );
  if (!r.ok) return;
  for (const name of r.out.split("\n")) {
    const pid = Number(name.slice(DB_PREFIX.length).split("_")[0]);
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && !pidAlive(pid)) {
      psqlSync("postgres", `drop database if exists ${name} with (force)`);
    }
  }
}

function ejabberdYml(o: {
  port: number;
  db: string;
  archive: boolean;
  mucMaxUsers: number;
}): string {
  // Fairness: no TLS, no shaper, big queues, no offline storage, SM on, and SQL
  // auth in both modes so that only mod_mam differs between routing and archive.
  const mam = o.archive ? ["  mod_mam:", "    db_type: sql", "    default: always"] : [];
  return [
    "hosts:",
    `  - ${DOMAIN}`,
    "loglevel: warning",
    "log_rotate_count: 0",
    "hide_sensitive_log_data: true",
    "acme:",
    "  auto: false",
    "auth_method: sql",
    "auth_password_format: plain",
    "sql_type: pgsql",
    'sql_server: "127.0.0.1"',
    "sql_port: 5432",
    `sql_database: "${o.db}"`,
    'sql_username: "postgres"',
    'sql_password: ""',
    `sql_pool_size: ${SQL_POOL_SIZE}`,
    "auth_cache_size: 1000000",
    "max_fsm_queue: 1000000",
    "s2s_access: none",
    "listen:",
    "  -",
    `    port: ${o.port}`,
    '    ip: "127.0.0.1"',
    "    module: ejabberd_c2s",
    "    max_stanza_size: 262144",
    "    shaper: none",
    "    access: all",
    "    starttls: false",
    "    starttls_required: false",
    "    backlog: 4096",
    "acl:",
    "  local:",
    '    user_regexp: ""',
    "access_rules:",
    "  local:",
    "    allow: local",
    "modules:",
    "  mod_disco: {}",
    "  mod_stream_mgmt: {}",
    "  mod_muc:",
    `    host: "${MUC_DOMAIN}"`,
    "    access: all",
    "    access_create: all",
    "    access_persistent: all",
    "    access_admin: none",
    "    history_size: 0",
    `    max_users: ${o.mucMaxUsers}`,
    `    max_users_presence: ${o.mucMaxUsers}`,
    "    max_user_conferences: 10000",
    "    max_users_admin_threshold: 20",
    "    min_message_interval: 0",
    "    min_presence_interval: 0",
    "    default_room_options:",
    `      max_users: ${o.mucMaxUsers}`,
    "      persistent: false",
    "      public: false",
    `      mam: ${o.archive}`,
    ...mam,
    "",
  ].join("\n");
}

function readVersion(): string {
  const app = findEjabberdApp();
  if (app === undefined) return "unknown";
  const m = /\{vsn,\s*"([^"]+)"\}/.exec(readFileSync(app, "utf8"));
  return m?.[1] ?? "unknown";
}

/**
 * Starts ejabberd in the given mode with users u0..u{users-1} (password
 * "bench") and resolves once it is fully started and c2s accepts connections.
 */
export async function startEjabberd(opts: StartEjabberdOptions): Promise<EjabberdTarget> {
  const avail = ejabberdAvailable();
  if (!avail.ok) throw new Error(avail.reason);
  const log = opts.log ?? (() => {});
  const archive = opts.mode === "archive";
  const mucMaxUsers = opts.mucMaxUsers ?? 1000;
  const startTimeoutMs = opts.startTimeoutMs ?? 60_000;
  const n = startCount++;
  const db = `${DB_PREFIX}${process.pid}_${n}`;
  const node = `bench_ejabberd_${process.pid}_${n}@localhost`;
  dropStaleLeftovers();
  const dir = mkdtempSync(join(tmpdir(), `${DIR_PREFIX}${process.pid}-`));
  const spool = join(dir, "spool");
  const logDir = join(dir, "logs");
  const t0 = Date.now();

  let child: ChildProcess | undefined;
  let exited = false;
  const cleanupSync = (): void => {
    if (child?.pid !== undefined && !exited) {
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    psqlSync("postgres", `drop database if exists ${db} with (force)`);
    rmSync(dir, { recursive: true, force: true });
  };
  // Last resort if the bench process exits without stop(); a killed bench is
  // covered by the stdin watchdog in the Erlang node.
  process.on("exit", cleanupSync);

  try {
    await psql("postgres", ["-c", `create database ${db}`]);
    if (opts.syncCommit === false) {
      await psql("postgres", ["-c", `alter database ${db} set synchronous_commit = off`]);
    }
    await psql(db, ["-f", PG_SCHEMA]);
    // One server-side statement provisions all users: 20k rows take well under a second.
    await psql(db, [
      "-c",
      `insert into users(username, password) select 'u' || g, 'bench' ` +
        `from generate_series(0, ${opts.users - 1}) g`,
    ]);
    log(`ejabberd: database ${db} with ${opts.users} users in ${Date.now() - t0} ms`);

    // Drawn below the ephemeral range, where no outgoing connection takes them before ejabberd binds.
    const port = await freePort();
    let distPort = await freePort();
    while (distPort === port) distPort = await freePort();
    const configPath = join(dir, "ejabberd.yml");
    writeFileSync(configPath, ejabberdYml({ port, db, archive, mucMaxUsers }));
    writeFileSync(
      join(dir, "inetrc"),
      '{lookup,["file","native"]}.\n{host,{127,0,0,1}, ["localhost"]}.\n',
    );
    const cookie = randomBytes(16).toString("hex");
    // ejabberd 23.01 starts the SQL pool lazily on first use, and a burst of
    // first logins races it (badarg in ejabberd_sql:get_worker); so run one query
    // (it starts the pool) and wait for every worker before printing the ready
    // mark. Afterwards, halt the node when our stdin pipe closes (bench died).
    const watchdog =
      `Workers = [list_to_atom("ejabberd_sql_${DOMAIN}_" ++ integer_to_list(I)) ` +
      `|| I <- lists:seq(1, ${SQL_POOL_SIZE})], ` +
      "WaitSql = fun Wait(0) -> timeout; Wait(K) -> case " +
      `element(1, ejabberd_sql:sql_query(<<"${DOMAIN}">>, [<<"select 1">>])) =:= selected ` +
      "andalso lists:all(fun(P) -> is_pid(whereis(P)) end, Workers) " +
      "of true -> ok; false -> timer:sleep(50), Wait(K - 1) end end, " +
      `case WaitSql(${Math.ceil(startTimeoutMs / 50)}) of ok -> ` +
      `io:format("~s~n", ["${READY_MARK}"]); timeout -> io:format("sql pool not ready~n") end, ` +
      "spawn(fun W() -> case io:get_line('') of eof -> erlang:halt(0); " +
      "{error, _} -> erlang:halt(0); _ -> W() end end).";
    const args = [
      "-sname",
      node,
      "-setcookie",
      cookie,
      "-start_epmd",
      "false",
      "-erl_epmd_port",
      String(distPort),
      "-kernel",
      "inet_dist_use_interface",
      "{127,0,0,1}",
      // Process and port limits for ~20k sessions; no scheduler busy-waiting
      // since the load generator shares the two cores.
      "+P",
      "2000000",
      "+Q",
      "65536",
      "+sbwt",
      "none",
      "+sbwtdcpu",
      "none",
      "+sbwtdio",
      "none",
      "-noshell",
      "-mnesia",
      "dir",
      `"${spool}"`,
      "-s",
      "ejabberd",
      "-eval",
      watchdog,
    ];
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: dir,
      LANG: "C.UTF-8",
      EJABBERD_CONFIG_PATH: configPath,
      EJABBERD_LOG_PATH: join(logDir, "ejabberd.log"),
      ERL_LIBS: LIB_ROOT,
      ERL_MAX_PORTS: "65536",
      ERL_MAX_ETS_TABLES: "10000",
      ERL_CRASH_DUMP: join(dir, "erl_crash.dump"),
      ERL_CRASH_DUMP_BYTES: "0",
      ERL_INETRC: join(dir, "inetrc"),
    };
    writeFileSync(join(dir, "command.txt"), `${ERL} ${args.join(" ")}\n`);
    mkdirSync(spool);
    mkdirSync(logDir);
    const proc = spawn(ERL, args, {
      cwd: spool,
      env,
      stdio: ["pipe", "pipe", "pipe"],
      detached: true,
    });
    child = proc;
    proc.on("exit", () => {
      exited = true;
    });
    const pid = proc.pid;
    if (pid === undefined) throw new Error("failed to spawn erl");

    await new Promise<void>((resolve, reject) => {
      let outBuf = "";
      const timer = setTimeout(
        () => reject(new Error(`ejabberd did not start within ${startTimeoutMs} ms`)),
        startTimeoutMs,
      );
      const onLine = (line: string): void => {
        if (line.includes(READY_MARK)) {
          clearTimeout(timer);
          resolve();
        } else if (line.trim() !== "") {
          log(`ejabberd: ${line}`);
        }
      };
      proc.stdout?.setEncoding("utf8").on("data", (d: string) => {
        outBuf += d;
        const lines = outBuf.split("\n");
        outBuf = lines.pop() ?? "";
        for (const l of lines) onLine(l);
      });
      proc.stderr?.setEncoding("utf8").on("data", (d: string) => {
        for (const l of d.split("\n")) if (l.trim() !== "") log(`ejabberd stderr: ${l}`);
      });
      proc.once("exit", (code, signal) => {
        clearTimeout(timer);
        let tail = "";
        try {
          tail = readFileSync(join(logDir, "error.log"), "utf8").slice(-2000);
        } catch {
          // no log yet
        }
        reject(new Error(`ejabberd exited during startup (${code ?? signal}): ${tail}`));
      });
    });
    while (!(await canConnect(port))) {
      if (Date.now() - t0 > startTimeoutMs || exited) {
        throw new Error("ejabberd c2s port never accepted connections");
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    log(`ejabberd: ${opts.mode} ready on ${port} (pid ${pid}) in ${Date.now() - t0} ms`);

    let stopped = false;
    const target: EjabberdTarget = {
      name: archive ? "ejabberd-archive" : "ejabberd-routing",
      host: "127.0.0.1",
      port,
      domain: DOMAIN,
      mucDomain: MUC_DOMAIN,
      version: readVersion(),
      pid,
      node,
      database: db,
      logDir,
      async rssBytes() {
        const status = await readFile(`/proc/${pid}/status`, "utf8");
        const m = /VmRSS:\s+(\d+) kB/.exec(status);
        return m === null ? 0 : Number(m[1]) * 1024;
      },
      async archivedCount() {
        return Number(await psql(db, ["-c", "select count(*) from archive"]));
      },
      async stop() {
        if (stopped) return;
        stopped = true;
        // Its spool and database are thrown away below, so there is nothing for a graceful
        // init:stop() to save (it takes 1–2 s); erl_child_setup and any port programs share
        // the process group.
        const gone = exited ? undefined : new Promise<void>((r) => proc.once("exit", () => r()));
        try {
          process.kill(-pid, "SIGKILL");
        } catch {
          // already gone
        }
        await gone;
        await psql("postgres", ["-c", `drop database if exists ${db} with (force)`]);
        rmSync(dir, { recursive: true, force: true });
        process.off("exit", cleanupSync);
      },
    };
    return target;
  } catch (err) {
    cleanupSync();
    process.off("exit", cleanupSync);
    throw err;
  }
}
