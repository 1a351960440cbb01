import { describe, expect, it } from "vitest";
import type { Event } from "../../gen/chat/v1/event_pb.js";
import { createInProcessLog } from "../../lib/backends/memory/in-process-log.js";
import { ev, newConversationId, sleep } from "./fixtures.js";
import { messageLogContract } from "./message-log.contract.js";

messageLogContract(
  "in-process log",
  async () => {
    const log = createInProcessLog();
    return { log, cleanup: () => log.close() };
  },
  { judges: true },
);

messageLogContract(
  "in-process log with small batches",
  async () => {
    const log = createInProcessLog({ maxBatch: 3 });
    return { log, cleanup: () => log.close() };
  },
  { judges: true },
);

describe("in-process log", () => {
  it("hands over up to maxInFlight batches before the first is handled, in append order", async () => {
    const log = createInProcessLog({ maxInFlight: 2 });
    let release!: () => void;
    const released = new Promise<void>((r) => {
      release = r;
    });
    let handling = 0;
    let peak = 0;
    const handedOver: string[] = [];
    log.consume(async (batch: Event[]) => {
      handedOver.push(...batch.map((e) => e.clientMsgId));
      peak = Math.max(peak, ++handling);
      await released;
      handling--;
      return batch.map(() => undefined);
    });
    const conv = newConversationId();
    const appends: Promise<void>[] = [];
    for (const [i, key] of ["a", "b", "c"].entries()) {
      appends.push(log.append(ev.posted(conv, i + 2, "ann", key, { clientMsgId: key })));
      await sleep(20);
    }
    // The third waits: two batches are already being handled.
    expect(handedOver).toEqual(["a", "b"]);
    release();
    await Promise.all(appends);
    expect(handedOver).toEqual(["a", "b", "c"]);
    expect(peak).toBe(2);
    await log.close();
  });
});
