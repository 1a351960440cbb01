import { describe, expect, it } from "vitest";
import { createKeyedQueue } from "../../lib/keyed-queue.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function gate() {
  let open!: () => void;
  const opened = new Promise<void>((r) => {
    open = r;
  });
  return { open, opened };
}

describe("keyed queue", () => {
  it("runs the tasks of one key one at a time, in call order", async () => {
    const queue = createKeyedQueue();
    const log: string[] = [];
    let running = 0;
    let maxRunning = 0;
    const task = (name: string, ms: number) => async () => {
      running++;
      maxRunning = Math.max(maxRunning, running);
      log.push(`start ${name}`);
      await sleep(ms);
      log.push(`end ${name}`);
      running--;
      return name;
    };
    // Later tasks are shorter: without serialization they would finish first.
    const results = await Promise.all([
      queue.run("k", task("a", 30)),
      queue.run("k", task("b", 10)),
      queue.run("k", task("c", 0)),
    ]);
    expect(results).toEqual(["a", "b", "c"]);
    expect(maxRunning).toBe(1);
    expect(log).toEqual(["start a", "end a", "start b", "end b", "start c", "end c"]);
  });

  it("runs different keys concurrently", async () => {
    const queue = createKeyedQueue();
    const blocker = gate();
    const blocked = queue.run("slow", async () => {
      await blocker.opened;
      return "slow";
    });
    // Another key finishes while the first is still blocked.
    await expect(queue.run("fast", async () => "fast")).resolves.toBe("fast");
    let slowDone = false;
    void blocked.then(() => {
      slowDone = true;
    });
    await sleep(10);
    expect(slowDone).toBe(false);
    blocker.open();
    await expect(blocked).resolves.toBe("slow");
  });

  it("passes a task's error to its caller and goes on with the next task", async () => {
    const queue = createKeyedQueue();
    const order: string[] = [];
    const failing = queue.run("k", async () => {
      order.push("fail");
      throw new Error("boom");
    });
    const next = queue.run("k", async () => {
      order.push("next");
      return 42;
    });
    await expect(failing).rejects.toThrow("boom");
    await expect(next).resolves.toBe(42);
    expect(order).toEqual(["fail", "next"]);
    // A synchronous throw inside the task does not jam the key either.
    const sync = queue.run("k", () => {
      throw new Error("sync");
    });
    await expect(sync).rejects.toThrow("sync");
    await expect(queue.run("k", async () => "after")).resolves.toBe("after");
  });

  it("waits for everything queued in idle() and forgets finished keys", async () => {
    const queue = createKeyedQueue();
    const done: string[] = [];
    for (const k of ["a", "b", "c"]) {
      void queue.run(k, async () => {
        await sleep(10);
        done.push(k);
      });
    }
    void queue
      .run("a", async () => {
        throw new Error("ignored by idle");
      })
      .catch(() => undefined);
    expect(queue.size).toBe(3);
    await queue.idle();
    expect([...done].sort()).toEqual(["a", "b", "c"]);
    await sleep(0);
    expect(queue.size).toBe(0);
  });
});
