import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/**
 * Per-conversation "I have shown everything up to seq" kept in
 * `<home>/<user>.cursors.json`, so a restarted tail resumes without repeats.
 * Saving merges with the file, because tail and talk may run side by side.
 */
export class CursorFile {
  private readonly seqs = new Map<string, bigint>();
  private timer: NodeJS.Timeout | undefined;
  readonly path: string;

  constructor(home: string, user: string) {
    this.path = join(home, `${user}.cursors.json`);
    for (const [id, seq] of this.read()) this.seqs.set(id, seq);
  }

  get(conversationId: string): bigint {
    return this.seqs.get(conversationId) ?? 0n;
  }

  all(): { conversationId: string; seq: bigint }[] {
    return [...this.seqs].map(([conversationId, seq]) => ({ conversationId, seq }));
  }

  /** Moves a cursor forward (never back) and schedules a save. */
  advance(conversationId: string, seq: bigint) {
    if (seq <= this.get(conversationId)) return;
    this.seqs.set(conversationId, seq);
    this.timer ??= setTimeout(() => this.save(), 300);
  }

  save() {
    clearTimeout(this.timer);
    this.timer = undefined;
    for (const [id, seq] of this.read()) if (seq > this.get(id)) this.seqs.set(id, seq);
    const out = Object.fromEntries([...this.seqs].map(([id, seq]) => [id, seq.toString()]));
    const tmp = `${this.path}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(out, null, 2)}\n`, { mode: 0o600 });
    renameSync(tmp, this.path);
  }

  private read(): [string, bigint][] {
    if (!existsSync(this.path)) return [];
    const raw = JSON.parse(readFileSync(this.path, "utf8")) as Record<string, string>;
    return Object.entries(raw).flatMap(([id, seq]) =>
      /^\d+$/.test(seq) ? [[id, BigInt(seq)]] : [],
    );
  }
}
