import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jwtVerify, SignJWT } from "jose";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createTokenService, loadOrCreateDevKey, TokenError } from "../../lib/auth/tokens.js";
import type { SigningKey } from "../../lib/config.js";

const k1: SigningKey = { kid: "k1", secret: Buffer.alloc(32, 1) };
const k2: SigningKey = { kid: "k2", secret: Buffer.alloc(32, 2) };

const service = (
  keys: SigningKey[],
  activeKeyId: string,
  more: { issuer?: string; acceptDevTokens?: boolean } = {},
) =>
  createTokenService({
    keys,
    activeKeyId,
    issuer: more.issuer ?? "relaychat",
    acceptDevTokens: more.acceptDevTokens ?? false,
  });

/** Signs arbitrary claims with a key, for tokens the service would never mint. */
const forge = (key: SigningKey, claims: Record<string, unknown>, set: (j: SignJWT) => SignJWT) =>
  set(
    new SignJWT(claims)
      .setProtectedHeader({ alg: "HS256", kid: key.kid })
      .setIssuedAt()
      .setExpirationTime("1h"),
  ).sign(key.secret);

const rejects = async (p: Promise<unknown>, message: RegExp) => {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TokenError);
  expect((err as Error).message).toMatch(message);
};

describe("token service", () => {
  it("verifies what it mints, bound to user and device", async () => {
    const tokens = service([k1], "k1");
    const before = Date.now();
    const minted = await tokens.mint({ userId: "ann", deviceId: "phone", ttlSeconds: 600 });
    expect(minted.kid).toBe("k1");
    // Whole seconds, rounded up: the token lives at least the TTL, at most 1 s more.
    expect(minted.expiresAtMs).toBeGreaterThanOrEqual(before + 600_000);
    expect(minted.expiresAtMs).toBeLessThanOrEqual(Date.now() + 601_000);
    expect(minted.expiresAtMs % 1000).toBe(0);
    const claims = await tokens.verify(minted.token);
    expect(claims).toEqual({
      userId: "ann",
      deviceId: "phone",
      expiresAtMs: minted.expiresAtMs,
      dev: false,
    });
    const header = JSON.parse(Buffer.from(minted.token.split(".")[0]!, "base64url").toString());
    expect(header).toMatchObject({ alg: "HS256", kid: "k1" });
  });

  it("mints tokens that an independent JWT library verifies, dev marks included", async () => {
    const tokens = service([k1], "k1");
    for (const dev of [false, true]) {
      const minted = await tokens.mint({ userId: "ann", deviceId: "phone", ttlSeconds: 600, dev });
      const { payload, protectedHeader } = await jwtVerify(minted.token, k1.secret, {
        algorithms: ["HS256"],
        issuer: "relaychat",
        audience: "chat.v1",
      });
      expect(protectedHeader).toEqual({ alg: "HS256", kid: "k1", typ: "JWT" });
      expect(payload).toMatchObject({ sub: "ann", did: "phone", exp: minted.expiresAtMs / 1000 });
      expect(payload.dev).toBe(dev ? true : undefined);
      // Signed with another secret, the same library refuses it.
      await expect(jwtVerify(minted.token, k2.secret)).rejects.toThrow(/signature/);
    }
  });

  it("keeps accepting tokens of an older key while a new key is active", async () => {
    const old = service([k1], "k1");
    const rotated = service([k1, k2], "k2");
    const oldToken = (await old.mint({ userId: "ann", deviceId: "d", ttlSeconds: 60 })).token;
    const newToken = await rotated.mint({ userId: "ben", deviceId: "d", ttlSeconds: 60 });
    expect(newToken.kid).toBe("k2");
    expect((await rotated.verify(oldToken)).userId).toBe("ann");
    expect((await rotated.verify(newToken.token)).userId).toBe("ben");
    // A server that does not know k2 refuses its tokens.
    await rejects(old.verify(newToken.token), /unknown signing key/);
    // After k1 is retired, its tokens are refused.
    await rejects(service([k2], "k2").verify(oldToken), /unknown signing key/);
  });

  it("refuses a token signed with a different secret under a known kid", async () => {
    const impostor = service([{ kid: "k1", secret: Buffer.alloc(32, 9) }], "k1");
    const token = (await impostor.mint({ userId: "ann", deviceId: "d", ttlSeconds: 60 })).token;
    await rejects(service([k1], "k1").verify(token), /invalid token/);
  });

  it("refuses expired tokens", async () => {
    const tokens = service([k1], "k1");
    const { token } = await tokens.mint({ userId: "ann", deviceId: "d", ttlSeconds: -10 });
    await rejects(tokens.verify(token), /token expired/);
  });

  it("remembers a verified token only until it expires, and only for exactly that text", async () => {
    const tokens = service([k1], "k1");
    const start = Date.now();
    vi.useFakeTimers({ now: start, toFake: ["Date"] });
    try {
      const { token } = await tokens.mint({ userId: "ann", deviceId: "d", ttlSeconds: 60 });
      const first = await tokens.verify(token);
      expect(await tokens.verify(token)).toEqual(first);
      // Shared by every call with this token, so no caller can change it for the others.
      expect(Object.isFrozen(first)).toBe(true);
      // One character more or less is another token, checked on its own.
      await rejects(tokens.verify(`${token}A`), /invalid token/);
      await rejects(tokens.verify(token.slice(0, -1)), /invalid token/);
      vi.setSystemTime(start + 59_000);
      expect((await tokens.verify(token)).userId).toBe("ann");
      vi.setSystemTime(first.expiresAtMs);
      await rejects(tokens.verify(token), /token expired/);
    } finally {
      vi.useRealTimers();
    }
  });

  it("accepts dev tokens only while dev tokens are accepted", async () => {
    const dev = service([k1], "k1", { acceptDevTokens: true });
    const prod = service([k1], "k1", { acceptDevTokens: false });
    const { token } = await dev.mint({ userId: "ann", deviceId: "d", ttlSeconds: 60, dev: true });
    expect((await dev.verify(token)).dev).toBe(true);
    await rejects(prod.verify(token), /dev tokens are disabled/);
    const normal = await prod.mint({ userId: "ann", deviceId: "d", ttlSeconds: 60 });
    expect((await dev.verify(normal.token)).dev).toBe(false);
  });

  it("refuses a wrong audience or issuer", async () => {
    const tokens = service([k1], "k1");
    const wrongAudience = await forge(k1, { did: "d" }, (j) =>
      j.setSubject("ann").setIssuer("relaychat").setAudience("other.v1"),
    );
    await rejects(tokens.verify(wrongAudience), /invalid token/);
    const wrongIssuer = await forge(k1, { did: "d" }, (j) =>
      j.setSubject("ann").setIssuer("someone-else").setAudience("chat.v1"),
    );
    await rejects(tokens.verify(wrongIssuer), /invalid token/);
    const otherIssuerService = service([k1], "k1", { issuer: "tenant-b" });
    const minted = await tokens.mint({ userId: "ann", deviceId: "d", ttlSeconds: 60 });
    await rejects(otherIssuerService.verify(minted.token), /invalid token/);
    const right = await forge(k1, { did: "d" }, (j) =>
      j.setSubject("ann").setIssuer("relaychat").setAudience("chat.v1"),
    );
    expect((await tokens.verify(right)).deviceId).toBe("d");
  });

  it("refuses tokens without a device, subject, kid or with garbage", async () => {
    const tokens = service([k1], "k1");
    const noDevice = await forge(k1, {}, (j) =>
      j.setSubject("ann").setIssuer("relaychat").setAudience("chat.v1"),
    );
    await rejects(tokens.verify(noDevice), /not bound to a user and device/);
    const emptyDevice = await forge(k1, { did: "" }, (j) =>
      j.setSubject("ann").setIssuer("relaychat").setAudience("chat.v1"),
    );
    await rejects(tokens.verify(emptyDevice), /not bound/);
    const noSubject = await forge(k1, { did: "d" }, (j) =>
      j.setIssuer("relaychat").setAudience("chat.v1"),
    );
    await rejects(tokens.verify(noSubject), /invalid token/);
    const noKid = await new SignJWT({ did: "d" })
      .setProtectedHeader({ alg: "HS256" })
      .setSubject("ann")
      .setIssuer("relaychat")
      .setAudience("chat.v1")
      .setExpirationTime("1h")
      .sign(k1.secret);
    await rejects(tokens.verify(noKid), /unknown signing key/);
    await rejects(tokens.verify("not.a.jwt"), /invalid token/);
    await rejects(tokens.verify(""), /invalid token/);
  });

  it("refuses tampered, unsigned, other-algorithm and not-yet-valid tokens", async () => {
    const tokens = service([k1], "k1");
    const { token } = await tokens.mint({ userId: "ann", deviceId: "d", ttlSeconds: 60 });
    const [h, p, sig] = token.split(".");
    const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
    const claims = JSON.parse(Buffer.from(p!, "base64url").toString());
    await rejects(tokens.verify(`${h}.${b64({ ...claims, sub: "ben" })}.${sig}`), /invalid token/);
    await rejects(tokens.verify(`${b64({ alg: "none", kid: "k1" })}.${p}.`), /invalid token/);
    await rejects(tokens.verify(`${b64({ alg: "HS512", kid: "k1" })}.${p}.${sig}`), /invalid/);
    await rejects(tokens.verify(`${h}.${p}.${sig}x`), /invalid token/);
    await rejects(tokens.verify(`${token}.x`), /invalid token/);
    const later = await forge(k1, { did: "d" }, (j) =>
      j.setSubject("ann").setIssuer("relaychat").setAudience("chat.v1").setNotBefore("1h"),
    );
    await rejects(tokens.verify(later), /invalid token/);
    const listed = await forge(k1, { did: "d" }, (j) =>
      j.setSubject("ann").setIssuer("relaychat").setAudience(["other.v1", "chat.v1"]),
    );
    expect((await tokens.verify(listed)).userId).toBe("ann");
  });

  it("refuses to start without its active key", () => {
    expect(() => service([k1], "k2")).toThrow(TokenError);
  });
});

describe("dev signing key", () => {
  let dir: string | undefined;
  afterEach(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it("is created once, kept private, and loaded again", () => {
    dir = mkdtempSync(join(tmpdir(), "chat-devkey-"));
    const first = loadOrCreateDevKey(join(dir, "nested"));
    expect(first.kid).toMatch(/^dev-[0-9a-f]{8}$/);
    expect(first.secret.length).toBe(32);
    expect(statSync(join(dir, "nested", "dev-signing-key.json")).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, "nested")).mode & 0o777).toBe(0o700);
    // Written aside and renamed: nothing but the key is left.
    expect(readdirSync(join(dir, "nested"))).toEqual(["dev-signing-key.json"]);
    const again = loadOrCreateDevKey(join(dir, "nested"));
    expect(again.kid).toBe(first.kid);
    expect(Buffer.from(again.secret).equals(Buffer.from(first.secret))).toBe(true);
  });
});
