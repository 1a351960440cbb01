import { describe, expect, it } from "vitest";
import { type EjabberdAvailability, ensureEjabberd } from "../../bench/targets/ejabberd.js";

const missing: EjabberdAvailability = {
  ok: false,
  reason: "ejabberd is not installed: run scripts/install-ejabberd.sh",
  installable: true,
};
const pgDown: EjabberdAvailability = {
  ok: false,
  reason: "PostgreSQL at 127.0.0.1:5432: connection refused",
  installable: false,
};

/** A check that answers from a list, one answer per call, and an installer that counts calls. */
function fakes(answers: EjabberdAvailability[], installOk = true) {
  let installs = 0;
  let checks = 0;
  return {
    deps: {
      check: () => answers[Math.min(checks++, answers.length - 1)]!,
      install: () => {
        installs++;
        return installOk ? { ok: true, detail: "" } : { ok: false, detail: "E: no sudo" };
      },
    },
    installs: () => installs,
  };
}

describe("ensureEjabberd: the bench sets ejabberd up itself", () => {
  it("leaves an installed ejabberd alone", () => {
    const f = fakes([{ ok: true }]);
    expect(ensureEjabberd(f.deps)).toEqual({ ok: true, installed: false });
    expect(f.installs()).toBe(0);
  });

  it("installs missing packages once and checks again", () => {
    const f = fakes([missing, { ok: true }]);
    expect(ensureEjabberd(f.deps)).toEqual({ ok: true, installed: true });
    expect(f.installs()).toBe(1);
  });

  it("does not install for what packages cannot fix, and keeps the reason", () => {
    const f = fakes([pgDown]);
    const r = ensureEjabberd(f.deps);
    expect(f.installs()).toBe(0);
    expect(r).toMatchObject({ ok: false, installed: false, reason: pgDown.reason });
  });

  it("names a failed install in the reason the targets are skipped", () => {
    const f = fakes([missing, missing], false);
    const r = ensureEjabberd(f.deps);
    expect(f.installs()).toBe(1);
    expect(r.ok).toBe(false);
    expect(r.installed).toBe(false);
    expect(!r.ok && r.reason).toBe(
      `${missing.reason} (scripts/install-ejabberd.sh failed: E: no sudo)`,
    );
  });

  it("reports what still blocks after a successful install", () => {
    const f = fakes([missing, pgDown]);
    const r = ensureEjabberd(f.deps);
    expect(f.installs()).toBe(1);
    expect(r).toMatchObject({ ok: false, installed: true, reason: pgDown.reason });
  });
});
