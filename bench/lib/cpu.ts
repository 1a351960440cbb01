import { createHash } from "node:crypto";
import type { CpuProbe } from "./results.js";

const block = Buffer.alloc(1 << 20, 7);
const warmUpRounds = 3;

/** One round of the probe's fixed work: SHA-256 of 16 MiB, then 200,000 small objects built and read. */
function round(): number {
  const hash = createHash("sha256");
  for (let i = 0; i < 16; i++) hash.update(block);
  let sum = hash.digest()[0]!;
  let kept: { n: number; tag: string }[] = [];
  for (let i = 0; i < 200_000; i++) {
    kept.push({ n: i, tag: `m${i & 1023}` });
    // Dropped in chunks so the young generation is collected as a server's is.
    if (kept.length === 1000) {
      for (const o of kept) sum += o.n + o.tag.length;
      kept = [];
    }
  }
  return sum;
}

/**
 * Times `rounds` runs of a fixed single-thread workload (native hashing and
 * JavaScript allocation) on the bench's own thread, between scenarios while
 * nothing else runs: the median is how fast this VM's CPU is right now
 * (lower is faster). A VM's speed moves between runs and days for every
 * system alike, so the bench probes before every scenario and system. The
 * work is fixed: changing it makes earlier runs' probes incomparable.
 */
export function probeCpu(before: string, rounds = 7): CpuProbe {
  const ms: number[] = [];
  let sink = 0;
  // Unmeasured rounds first, so that the first probe of a run times optimized code too.
  for (let i = 0; i < warmUpRounds; i++) sink += round();
  for (let i = 0; i < rounds; i++) {
    const t = process.hrtime.bigint();
    sink += round();
    ms.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  ms.sort((a, b) => a - b);
  // Keeps the work from being optimized away.
  if (sink === -1) ms.push(0);
  const median = ms[Math.floor(ms.length / 2)]!;
  return {
    before,
    medianMs: Math.round(median * 10) / 10,
    maxMs: Math.round(ms.at(-1)! * 10) / 10,
  };
}
