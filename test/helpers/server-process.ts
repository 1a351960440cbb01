import { type ChildProcess, spawn } from "node:child_process";
import { resolve } from "node:path";

const root = resolve(import.meta.dirname, "../..");

/** Rejects with `what` if `p` takes longer than `ms`. */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, rej) => {
    timer = setTimeout(() => rej(new Error(`timed out waiting for ${what}`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/**
 * The real server entrypoint (services/main.ts) in a child process, set up
 * only by `env` (CHAT_* variables; PATH is passed on).
 */
export class ServerProcess {
  out = "";
  readonly exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly proc: ChildProcess;

  constructor(env: Record<string, string>) {
    this.proc = spawn(process.execPath, ["--import", "tsx", "services/main.ts"], {
      cwd: root,
      stdio: ["ignore", "pipe", "pipe"],
      env: { PATH: process.env.PATH ?? "", ...env },
    });
    for (const s of [this.proc.stdout!, this.proc.stderr!]) {
      s.setEncoding("utf8").on("data", (d: string) => {
        this.out += d;
      });
    }
    this.exit = new Promise((r) => this.proc.on("exit", (code, signal) => r({ code, signal })));
  }

  /** Resolves to the port the server logs once it listens. */
  ready(timeoutMs = 20_000): Promise<number> {
    const port = new Promise<number>((res, rej) => {
      const check = () => {
        const m = /chat server ready on [^:"]+:(\d+)/.exec(this.out);
        if (m) res(Number(m[1]));
      };
      this.proc.stdout!.on("data", check);
      check();
      void this.exit.then(() => rej(new Error(`server exited:\n${this.out}`)));
    });
    return within(port, timeoutMs, "the server to listen");
  }

  kill(signal: NodeJS.Signals = "SIGKILL") {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(signal);
  }
}

/**
 * The embedded server in a child process on `dataDir`: dev mode, port 0 on
 * loopback, info logs (the ready line is at info), no metrics listener.
 * `env` adds to that or overrides it.
 */
export function embeddedProcess(dataDir: string, env: Record<string, string> = {}) {
  return new ServerProcess({
    CHAT_DEV_MODE: "true",
    CHAT_DATA_DIR: dataDir,
    CHAT_HOST: "127.0.0.1",
    CHAT_PORT: "0",
    CHAT_LOG_LEVEL: "info",
    CHAT_METRICS_ENABLED: "false",
    ...env,
  });
}
