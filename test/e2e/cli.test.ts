import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { login } from "../helpers/clients.js";
import { startServer, type TestServer } from "../helpers/server.js";

const root = resolve(import.meta.dirname, "../..");

/** One CLI process: `node --import tsx cli/chat.ts <args> --server <url> --home <dir>`. */
class Cli {
  out = "";
  err = "";
  readonly exit: Promise<number | null>;
  private readonly proc: ChildProcess;
  private readonly waiters = new Set<() => void>();

  constructor(server: TestServer, home: string, args: string[]) {
    this.proc = spawn(
      process.execPath,
      ["--import", "tsx", "cli/chat.ts", ...args, "--server", server.url, "--home", home],
      { cwd: root, stdio: ["pipe", "pipe", "pipe"] },
    );
    this.proc.stdout!.setEncoding("utf8").on("data", (d: string) => {
      this.out += d;
      this.poke();
    });
    this.proc.stderr!.setEncoding("utf8").on("data", (d: string) => {
      this.err += d;
      this.poke();
    });
    this.exit = new Promise((r) => this.proc.on("exit", (code) => r(code)));
    void this.exit.then(() => this.poke());
  }

  private poke() {
    for (const w of [...this.waiters]) w();
  }

  /** Waits until stdout (or stderr) matches. */
  async waitFor(pattern: RegExp, stream: "out" | "err" = "out", timeoutMs = 10_000) {
    const seen = () => pattern.test(stream === "out" ? this.out : this.err);
    if (seen()) return;
    await new Promise<void>((res, rej) => {
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        rej(
          new Error(
            `timed out waiting for ${pattern} on ${stream}\nstdout:\n${this.out}\nstderr:\n${this.err}`,
          ),
        );
      }, timeoutMs);
      const check = () => {
        if (!seen()) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        res();
      };
      this.waiters.add(check);
    });
  }

  write(line: string) {
    this.proc.stdin!.write(`${line}\n`);
  }

  endInput() {
    this.proc.stdin!.end();
  }

  signal(sig: NodeJS.Signals) {
    this.proc.kill(sig);
  }

  /** The exit code; kills the process if it does not exit in time. */
  async exited(timeoutMs = 10_000): Promise<number | null> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, rej) => {
      timer = setTimeout(() => {
        this.kill();
        rej(new Error(`process did not exit\nstdout:\n${this.out}\nstderr:\n${this.err}`));
      }, timeoutMs);
    });
    try {
      return await Promise.race([this.exit, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  kill() {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill("SIGKILL");
  }
}

let server: TestServer | undefined;
let home = "";
const running: Cli[] = [];

afterEach(async () => {
  for (const c of running.splice(0)) c.kill();
  await server?.destroy();
  server = undefined;
  if (home) rmSync(home, { recursive: true, force: true });
  home = "";
});

async function setup(overrides: Parameters<typeof startServer>[0] = {}) {
  server = await startServer(overrides);
  home = mkdtempSync(join(tmpdir(), "chat-cli-"));
  return server;
}

/** Starts a long-running CLI command (killed after the test). */
function start(...args: string[]): Cli {
  const c = new Cli(server!, home, args);
  running.push(c);
  return c;
}

/** Runs a CLI command to completion. */
async function run(...args: string[]) {
  const c = start(...args);
  c.endInput();
  const code = await c.exited(15_000);
  return { code, out: c.out, err: c.err };
}

const convId = /c_[0-9a-z]{26}/;

describe("cli", () => {
  it("logs in through DevService, saves the token privately, and auto-logs in other users", async () => {
    await setup();
    const res = await run("login", "alice", "--device", "alice-laptop");
    expect(res.code).toBe(0);
    expect(res.out).toContain("logged in as alice (device alice-laptop)");
    const file = join(home, "alice.json");
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const saved = JSON.parse(readFileSync(file, "utf8")) as Record<string, string>;
    expect(saved).toMatchObject({ server: server!.url, userId: "alice", deviceId: "alice-laptop" });
    expect(saved.token!.split(".")).toHaveLength(3);

    const me = await run("whoami", "--as", "alice");
    expect(me.code).toBe(0);
    expect(me.out).toContain("alice");
    expect(me.out).toContain("device alice-laptop");

    // No saved login for bob: the CLI logs him in by itself in dev mode.
    const bob = await run("whoami", "--as", "bob");
    expect(bob.code).toBe(0);
    expect(bob.out).toContain("device bob-dev");
    expect(statSync(join(home, "bob.json")).mode & 0o777).toBe(0o600);

    // Two saved logins and no --as: the CLI asks which one.
    const which = await run("whoami");
    expect(which.code).toBe(1);
    expect(which.err).toMatch(/--as/);
  });

  it("says dev mode is off when the server has no DevService", async () => {
    await setup({
      devMode: false,
      auth: { signingKeys: [{ kid: "k1", secret: new Uint8Array(32).fill(7) }] },
    });
    const res = await run("login", "alice");
    expect(res.code).toBe(1);
    expect(res.err).toMatch(/\[unimplemented\] dev mode is off/);
  });

  it("lets two terminals talk: each line typed by one appears at the other", async () => {
    await setup();
    // Bob starts first; alice has no account until her own talk logs her in.
    const bob = start("talk", "@alice", "--as", "bob");
    await bob.waitFor(/alice has no account yet; waiting/, "err", 15_000);
    const alice = start("talk", "@bob", "--as", "alice");
    await alice.waitFor(/connected; talking with bob/, "err", 15_000);
    await bob.waitFor(/connected; talking with alice/, "err", 15_000);
    // Each side watches the other's presence.
    await alice.waitFor(/bob is online/);
    await bob.waitFor(/alice is online/);

    alice.write("hello bob");
    await bob.waitFor(/\d\d:\d\d:\d\d alice: hello bob {2}#2/);
    // Alice sees her own line once it is durable, with its seq.
    await alice.waitFor(/alice: hello bob {2}#2/);
    // Bob's terminal displayed it, so it is marked read.
    await alice.waitFor(/bob read up to 2/);

    bob.write("hi alice");
    await alice.waitFor(/\d\d:\d\d:\d\d bob: hi alice {2}#3/);
    await bob.waitFor(/alice read up to 3/);

    // EOF ends both sessions cleanly.
    alice.endInput();
    bob.endInput();
    expect(await alice.exited()).toBe(0);
    expect(await bob.exited()).toBe(0);
    expect(alice.out.match(/hello bob/g)).toHaveLength(1);
    expect(bob.out.match(/hi alice/g)).toHaveLength(1);

    // A piped batch of lines is sent in order before talk exits.
    const batch = start("talk", "@bob", "--as", "alice");
    for (const line of ["one", "two", "three"]) batch.write(line);
    batch.endInput();
    expect(await batch.exited(15_000)).toBe(0);
    const hist = await run("history", "@alice", "--as", "bob");
    expect(hist.out).toMatch(/alice: one {2}#4\n.*alice: two {2}#5\n.*alice: three {2}#6/);
  });

  it("sends, lists, pages history, marks read and creates groups", async () => {
    await setup();
    await run("login", "bob");
    const dm = await run("dm", "bob", "--as", "alice");
    expect(dm.code).toBe(0);
    const id = dm.out.trim();
    expect(id).toMatch(convId);
    // Asking again returns the same direct chat.
    expect((await run("dm", "bob", "--as", "alice")).out.trim()).toBe(id);

    const sent = await run("send", "@bob", "lunch", "at", "noon?", "--as", "alice");
    expect(sent.code).toBe(0);
    expect(sent.out.trim()).toBe(`sent #2 to ${id}`);
    expect((await run("send", id, "or later", "--as", "alice")).out.trim()).toBe(
      `sent #3 to ${id}`,
    );

    const list = await run("conversations", "--as", "bob");
    expect(list.code).toBe(0);
    expect(list.out).toMatch(
      new RegExp(`${id}\\s+direct\\s+@alice\\s+unread 2\\s+alice: or later`),
    );

    const history = await run("history", "@alice", "--as", "bob", "--limit", "2");
    expect(history.out.trim().split("\n")).toEqual([
      "… older events exist (showing the last 2)",
      expect.stringMatching(/^\d\d:\d\d:\d\d alice: lunch at noon\? {2}#2$/),
      expect.stringMatching(/^\d\d:\d\d:\d\d alice: or later {2}#3$/),
    ]);

    const read = await run("read", id, "--as", "bob");
    expect(read.out.trim()).toBe(`read up to #3 in ${id}`);
    expect((await run("conversations", "--as", "bob")).out).toMatch(/unread 0/);

    await run("whoami", "--as", "carol");
    const group = await run("group", "Weekend plans", "bob", "carol", "--as", "alice");
    expect(group.code).toBe(0);
    const gid = group.out.trim();
    expect(gid).toMatch(convId);
    const members = await run("members", gid, "--as", "carol");
    expect(members.out.trim().split("\n")).toEqual([
      expect.stringMatching(/^alice\s+owner\s+joined at #1$/),
      expect.stringMatching(/^bob\s+member\s+joined at #1$/),
      expect.stringMatching(/^carol\s+member\s+joined at #1$/),
    ]);
    const groups = await run("conversations", "--as", "carol");
    expect(groups.out).toMatch(
      new RegExp(
        `${gid}\\s+group\\s+Weekend plans\\s+unread 0\\s+alice created group "Weekend plans"`,
      ),
    );
  });

  it("prints the Connect code and exits 1 on server errors", async () => {
    await setup();
    await run("whoami", "--as", "dave");
    const gid = (await run("group", "private", "dave", "--as", "alice")).out.trim();
    const denied = await run("history", gid, "--as", "bob");
    expect(denied.code).toBe(1);
    expect(denied.err).toMatch(/^error: \[permission_denied\] /m);
    const missing = await run("send", "c_00000000000000000000000000", "hi", "--as", "bob");
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/^error: \[not_found\] /m);
    const unknown = await run("dm", "nobody", "--as", "bob");
    expect(unknown.code).toBe(1);
    expect(unknown.err).toMatch(/^error: \[not_found\] unknown user/m);
    const usage = await run("send", "bob", "hi", "--as", "bob");
    expect(usage.code).toBe(1);
    expect(usage.err).toMatch(/not a target/);
  });

  it("tails live events, typing and presence, marks them delivered, and resumes without repeats", async () => {
    await setup();
    const a = await login(server!, "alice");
    await run("whoami", "--as", "bob");
    const id = (await a.chat.createDirectConversation({ peerUserId: "bob" })).conversation!
      .conversationId;
    await a.chat.send({ conversationId: id, clientMsgId: "m1", content: { text: "first" } });

    const tail = start("tail", "--as", "bob");
    await tail.waitFor(/up to date/, "err", 15_000);
    expect(tail.out).toMatch(/\[@alice\] alice: first {2}#2/);
    await a.chat.heartbeat({});
    await tail.waitFor(/alice is online/);
    await a.chat.setTyping({ conversationId: id, typing: true });
    await tail.waitFor(/alice is typing… in \[@alice\]/);
    await a.chat.send({ conversationId: id, clientMsgId: "m2", content: { text: "second" } });
    await tail.waitFor(/\[@alice\] alice: second {2}#3/);
    // Tail marks what it prints as delivered.
    await expect
      .poll(
        async () => (await a.chat.getReadReceipts({ conversationId: id, seq: 3n })).deliveredCount,
        {
          timeout: 5000,
        },
      )
      .toBe(1);
    // Bob's own message from another command shows up too, and alice's receipt for it.
    expect((await run("send", "@alice", "third", "--as", "bob")).code).toBe(0);
    await tail.waitFor(/\[@alice\] bob: third {2}#4/);
    await a.chat.markRead({ conversationId: id, seq: 4n });
    await tail.waitFor(/alice read up to 4 in \[@alice\]/);
    tail.signal("SIGINT");
    expect(await tail.exited()).toBe(0);

    await a.chat.send({ conversationId: id, clientMsgId: "m4", content: { text: "while away" } });
    const again = start("tail", "--as", "bob");
    await again.waitFor(/up to date/, "err", 15_000);
    again.signal("SIGINT");
    expect(await again.exited()).toBe(0);
    // Only what came after the saved cursor.
    expect(again.out).toMatch(/alice: while away {2}#5/);
    expect(again.out).not.toMatch(/first|second|third/);
  });
});
