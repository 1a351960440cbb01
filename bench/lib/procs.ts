import { type ChildProcess, fork, spawn } from "node:child_process";
import { readFileSync } from "node:fs";

const live = new Set<ChildProcess>();
let hooked = false;

/** Kills every process the bench started that is still running. */
export function killAll(signal: NodeJS.Signals = "SIGKILL"): void {
  for (const p of live) {
    try {
      // Each child leads its own process group, so its own children go too.
      if (p.pid) process.kill(-p.pid, signal);
    } catch {
      p.kill(signal);
    }
  }
  live.clear();
}

function hook() {
  if (hooked) return;
  hooked = true;
  // The bench must leave nothing behind, whatever way it ends.
  process.on("exit", () => killAll());
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.on(sig, () => {
      killAll();
      process.exitCode = 130;
      process.kill(process.pid, "SIGKILL");
    });
  }
}

function track(p: ChildProcess): ChildProcess {
  hook();
  live.add(p);
  p.on("exit", () => live.delete(p));
  return p;
}

/** Forks a TypeScript module (through tsx) with an IPC channel, in its own process group. */
export function forkTs(
  modulePath: string,
  args: string[] = [],
  opts: { execArgv?: string[]; env?: NodeJS.ProcessEnv } = {},
): ChildProcess {
  return track(
    fork(modulePath, args, {
      execArgv: ["--import", "tsx", ...(opts.execArgv ?? [])],
      env: opts.env ?? process.env,
      detached: true,
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    }),
  );
}

/** Spawns a command in its own process group and tracks it for cleanup. */
export function spawnTracked(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {},
): ChildProcess {
  return track(
    spawn(cmd, args, {
      env: opts.env ?? process.env,
      cwd: opts.cwd ?? process.cwd(),
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
    }),
  );
}

/** Resolves when the child exits, or kills it after timeoutMs. */
export function waitExit(p: ChildProcess, timeoutMs: number): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      try {
        if (p.pid) process.kill(-p.pid, "SIGKILL");
      } catch {
        p.kill("SIGKILL");
      }
    }, timeoutMs);
    p.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Resident set size of a process, from /proc (0 once it is gone). */
export function rssOf(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** User + system CPU time of a process so far, in microseconds (from /proc/<pid>/stat). */
export function cpuUsOf(pid: number): number {
  return statCpuUs(`/proc/${pid}/stat`);
}

/**
 * CPU time of a process's main thread alone so far, in microseconds: for a
 * Node process, its event loop (the writer, GC and libuv threads are others).
 */
export function mainThreadCpuUsOf(pid: number): number {
  return statCpuUs(`/proc/${pid}/task/${pid}/stat`);
}

/**
 * How long a process's main thread has waited for a CPU so far while
 * runnable, in microseconds (/proc/<pid>/task/<pid>/schedstat; 0 if absent).
 */
export function mainThreadWaitUsOf(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/task/${pid}/schedstat`, "utf8").split(" ");
    return Number(fields[1]) / 1000 || 0;
  } catch {
    return 0;
  }
}

function statCpuUs(path: string): number {
  try {
    const stat = readFileSync(path, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // utime and stime are fields 14 and 15 of the whole line, in clock ticks (100/s on Linux).
    return (Number(fields[11]) + Number(fields[12])) * 10_000;
  } catch {
    return 0;
  }
}

/** Busy and total CPU time of the whole machine so far, in clock ticks (from /proc/stat). */
function machineTicks(): { busy: number; total: number } {
  const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!;
  // user nice system idle iowait irq softirq steal ...; idle and iowait are not busy.
  const t = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = t.reduce((a, b) => a + b, 0);
  return { busy: total - t[3]! - t[4]!, total };
}

/**
 * Waits until the whole machine has been quiet (under `busyPct` of all its
 * cores busy) for one `windowMs`, and at most `maxMs`; resolves with the time
 * it waited. Before each scenario, so that CPU work the previous one left
 * running (a server's shutdown, processes still loading) does not land on the
 * next system's measurements. Waiting on the disk (iowait) counts as quiet.
 */
export async function machineQuiet(busyPct = 15, windowMs = 1000, maxMs = 20_000): Promise<number> {
  const start = Date.now();
  for (;;) {
    const a = machineTicks();
    await new Promise((r) => setTimeout(r, windowMs));
    const b = machineTicks();
    const pct = ((b.busy - a.busy) / Math.max(1, b.total - a.total)) * 100;
    if (pct < busyPct || Date.now() - start >= maxMs) return Date.now() - start;
  }
}

/** Sends one IPC request and waits for the reply with the same id. */
export function makeRpc(child: ChildProcess) {
  let next = 1;
  const waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  child.on("message", (m: { id?: number; ok?: boolean; result?: unknown; error?: string }) => {
    if (typeof m?.id !== "number") return;
    const w = waiting.get(m.id);
    if (!w) return;
    waiting.delete(m.id);
    if (m.ok) w.resolve(m.result);
    else w.reject(new Error(m.error ?? "worker error"));
  });
  child.on("exit", (code, signal) => {
    for (const w of waiting.values()) w.reject(new Error(`process exited (${code ?? signal})`));
    waiting.clear();
  });
  return <T>(op: string, args: unknown = {}): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const id = next++;
      waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      child.send({ id, op, args });
    });
}

/** The child side of makeRpc: answers requests with the handler's result. */
export function serveRpc(handlers: Record<string, (args: never) => unknown>): void {
  process.on("message", async (m: { id: number; op: string; args: never }) => {
    const h = handlers[m.op];
    try {
      if (!h) throw new Error(`unknown op ${m.op}`);
      const result = await h(m.args);
      process.send?.({ id: m.id, ok: true, result });
    } catch (err) {
      process.send?.({
        id: m.id,
        ok: false,
        error: err instanceof Error ? err.stack : String(err),
      });
    }
  });
  // The coordinator's death must end the worker too.
  process.on("disconnect", () => process.exit(0));
}

/** Spread client sockets over loopback source addresses: each has its own ephemeral ports. */
export function sourceAddress(i: number): string {
  return `127.0.${1 + (Math.floor(i / 250) % 250)}.${2 + (i % 250)}`;
}
