import { closeSync, fdatasyncSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DiskProbe } from "./results.js";

/**
 * Times `count` appends of 4 KiB, each followed by fdatasync, in a file under
 * the temp dir, where ours keeps its SQLite database: about the cost of one
 * durable commit on this disk right now. Takes tens to hundreds of
 * milliseconds; a VM's disk latency can move from minute to minute, so the
 * bench probes before every scenario and system.
 */
export function probeDisk(before: string, count = 200): DiskProbe {
  const dir = mkdtempSync(join(tmpdir(), "relaychat-disk-"));
  const fd = openSync(join(dir, "probe"), "w");
  const page = Buffer.alloc(4096, 1);
  const us: number[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const t = process.hrtime.bigint();
      writeSync(fd, page);
      fdatasyncSync(fd);
      us.push(Number(process.hrtime.bigint() - t) / 1000);
    }
  } finally {
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  }
  us.sort((a, b) => a - b);
  const at = (q: number) => Math.round(us[Math.min(us.length - 1, Math.floor(q * us.length))]!);
  return { before, p50Us: at(0.5), p99Us: at(0.99), maxUs: Math.round(us[us.length - 1]!) };
}
