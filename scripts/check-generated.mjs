// Regenerates gen/ from proto/ into a temp dir and fails if it differs from
// the committed gen/. Run by `npm test` (and so by CI).
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const out = mkdtempSync(join(tmpdir(), "gen-check-"));
try {
  execFileSync("buf", ["generate", "-o", out], { cwd: root, stdio: "inherit" });
  const walk = (dir) =>
    readdirSync(dir).flatMap((name) => {
      const p = join(dir, name);
      return statSync(p).isDirectory() ? walk(p) : [p];
    });
  const fresh = new Map(walk(join(out, "gen")).map((p) => [relative(join(out, "gen"), p), p]));
  const committed = new Map(
    walk(join(root, "gen")).map((p) => [relative(join(root, "gen"), p), p]),
  );
  const drift = [];
  for (const [rel, p] of fresh) {
    const c = committed.get(rel);
    if (!c) drift.push(`missing: gen/${rel}`);
    else if (!readFileSync(c).equals(readFileSync(p))) drift.push(`differs: gen/${rel}`);
  }
  for (const rel of committed.keys()) if (!fresh.has(rel)) drift.push(`extra: gen/${rel}`);
  if (drift.length > 0) {
    console.error(
      `gen/ is out of date with proto/ (run npm run generate):\n  ${drift.join("\n  ")}`,
    );
    process.exit(1);
  }
  console.log(`gen/ matches proto/ (${fresh.size} files)`);
} finally {
  rmSync(out, { recursive: true, force: true });
}
