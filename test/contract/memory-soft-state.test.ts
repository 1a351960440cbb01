import { createMemorySoftState } from "../../lib/backends/memory/memory-soft-state.js";
import { softStateContract } from "./soft-state.contract.js";

softStateContract("memory", async () => {
  const soft = createMemorySoftState();
  return { soft, cleanup: () => soft.close() };
});
