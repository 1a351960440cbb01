import { createInProcessLog } from "../../lib/backends/memory/in-process-log.js";
import { messageLogContract } from "./message-log.contract.js";

messageLogContract("in-process log", async () => {
  const log = createInProcessLog();
  return { log, cleanup: () => log.close() };
});

messageLogContract("in-process log with small batches", async () => {
  const log = createInProcessLog({ maxBatch: 3 });
  return { log, cleanup: () => log.close() };
});
