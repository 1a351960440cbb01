import {
  createHmac,
  createSecretKey,
  type KeyObject,
  randomBytes,
  timingSafeEqual,
} from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { SigningKey } from "../config.js";

/** Who a verified user token speaks for. */
export interface TokenClaims {
  userId: string;
  deviceId: string;
  expiresAtMs: number;
  /** Minted by DevService; only accepted while the server is in dev mode. */
  dev: boolean;
}

export class TokenError extends Error {
  override name = "TokenError";
}

const audience = "chat.v1";

/**
 * Mints and verifies user tokens: HS256 JWTs bound to a user (`sub`) and a
 * device (`did`), with the signing key's id in the header so several keys can
 * be valid at once while they rotate.
 */
export interface TokenService {
  mint(input: { userId: string; deviceId: string; ttlSeconds: number; dev?: boolean }): Promise<{
    token: string;
    expiresAtMs: number;
    kid: string;
  }>;
  /**
   * Throws TokenError for anything but a valid, unexpired token from a known
   * key. A token that verified is remembered (by its whole text) until it
   * expires, so a client that presents it on every call (a browser's unary
   * sends and heartbeats) costs one signature check, not one per call.
   */
  verify(token: string): Promise<TokenClaims>;
}

/** Verified tokens remembered at most; past it the oldest is forgotten first. */
const verifiedMax = 20_000;

export function createTokenService(opts: {
  keys: SigningKey[];
  activeKeyId: string;
  issuer: string;
  acceptDevTokens: boolean;
}): TokenService {
  const hmacKeys = new Map(opts.keys.map((k) => [k.kid, createSecretKey(k.secret)]));
  const active = hmacKeys.get(opts.activeKeyId);
  if (!active) throw new TokenError(`active key ${opts.activeKeyId} is not configured`);
  const verified = new Map<string, TokenClaims>();
  return {
    async mint({ userId, deviceId, ttlSeconds, dev = false }) {
      const nowMs = Date.now();
      const nowS = Math.floor(nowMs / 1000);
      // JWT times are whole seconds: round expiry up so a token lives at least ttlSeconds.
      const exp = Math.ceil((nowMs + ttlSeconds * 1000) / 1000);
      const token = signHs256(
        { alg: "HS256", kid: opts.activeKeyId, typ: "JWT" },
        {
          did: deviceId,
          ...(dev ? { dev: true } : {}),
          sub: userId,
          iss: opts.issuer,
          aud: audience,
          iat: nowS,
          exp,
        },
        active,
      );
      return { token, expiresAtMs: exp * 1000, kid: opts.activeKeyId };
    },
    async verify(token) {
      const known = verified.get(token);
      // Expiry is the only claim that changes with time; past it, the full check says so.
      if (known && known.expiresAtMs > Date.now()) return known;
      if (known) verified.delete(token);
      const payload = verifyHs256(token, hmacKeys);
      checkClaims(payload, opts.issuer);
      const did = payload.did;
      if (typeof payload.sub !== "string" || typeof did !== "string" || did === "") {
        throw new TokenError("token is not bound to a user and device");
      }
      const dev = payload.dev === true;
      if (dev && !opts.acceptDevTokens) throw new TokenError("dev tokens are disabled");
      // Frozen: every later call with this token gets this same object.
      const claims: TokenClaims = Object.freeze({
        userId: payload.sub,
        deviceId: did,
        expiresAtMs: (payload.exp as number) * 1000,
        dev,
      });
      if (verified.size >= verifiedMax) verified.delete(verified.keys().next().value as string);
      verified.set(token, claims);
      return claims;
    },
  };
}

type Claims = Record<string, unknown>;

const base64url = /^[A-Za-z0-9_-]+$/;

const decodeJson = (part: string): Claims => {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
  } catch (err) {
    throw new TokenError("invalid token", { cause: err });
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new TokenError("invalid token");
  }
  return value as Claims;
};

/**
 * A compact JWS (RFC 7515) over HS256: synchronous HMAC in about 10 µs, where
 * jose's WebCrypto signer took about 190 µs a token here (a login or bench
 * storm mints thousands).
 */
function signHs256(header: object, claims: object, key: KeyObject): string {
  const h = Buffer.from(JSON.stringify(header)).toString("base64url");
  const p = Buffer.from(JSON.stringify(claims)).toString("base64url");
  const sig = createHmac("sha256", key).update(`${h}.${p}`).digest("base64url");
  return `${h}.${p}.${sig}`;
}

/**
 * Checks a compact HS256 JWS with node:crypto and returns its payload. Every
 * stream and call verifies a token, and this is synchronous and about ten
 * times cheaper than WebCrypto's HMAC (which jose uses).
 */
function verifyHs256(token: string, keys: Map<string, KeyObject>): Claims {
  const parts = token.split(".");
  const [h, p, sig] = parts;
  if (parts.length !== 3 || !h || !p || !sig) throw new TokenError("invalid token");
  if (!base64url.test(h) || !base64url.test(p) || !base64url.test(sig)) {
    throw new TokenError("invalid token");
  }
  const header = decodeJson(h);
  // No critical extensions are understood, so none may be required.
  if (header.alg !== "HS256" || header.crit !== undefined || header.b64 !== undefined) {
    throw new TokenError("invalid token");
  }
  const key = typeof header.kid === "string" ? keys.get(header.kid) : undefined;
  if (!key) throw new TokenError("unknown signing key");
  const expected = createHmac("sha256", key).update(`${h}.${p}`).digest();
  const actual = Buffer.from(sig, "base64url");
  if (actual.length !== expected.length || !timingSafeEqual(actual, expected)) {
    throw new TokenError("invalid token");
  }
  return decodeJson(p);
}

/** The registered claims, as RFC 7519 defines them: issuer, audience, and times in whole seconds. */
function checkClaims(c: Claims, issuer: string) {
  const aud = c.aud;
  const audOk = aud === audience || (Array.isArray(aud) && aud.includes(audience));
  if (c.iss !== issuer || !audOk || c.sub === undefined) throw new TokenError("invalid token");
  const now = Math.floor(Date.now() / 1000);
  for (const claim of ["exp", "nbf", "iat"]) {
    const v = c[claim];
    if (v !== undefined && (typeof v !== "number" || !Number.isFinite(v))) {
      throw new TokenError("invalid token");
    }
  }
  if (typeof c.nbf === "number" && c.nbf > now) throw new TokenError("invalid token");
  if (typeof c.exp !== "number") throw new TokenError("invalid token");
  if (c.exp <= now) throw new TokenError("token expired");
}

/**
 * DEV MODE ONLY: loads the signing key kept in the data directory, creating
 * it on first start, so dev tokens survive restarts. Never used when keys
 * are configured.
 */
export function loadOrCreateDevKey(dataDir: string): SigningKey {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const file = join(dataDir, "dev-signing-key.json");
  if (existsSync(file)) {
    const { kid, secret } = JSON.parse(readFileSync(file, "utf8")) as {
      kid: string;
      secret: string;
    };
    return { kid, secret: Buffer.from(secret, "base64") };
  }
  const key = { kid: `dev-${randomBytes(4).toString("hex")}`, secret: randomBytes(32) };
  // Written aside and renamed into place: a crash mid-write leaves no half a key to fail on.
  const partial = `${file}.${process.pid}.tmp`;
  writeFileSync(
    partial,
    JSON.stringify({ kid: key.kid, secret: Buffer.from(key.secret).toString("base64") }),
    { mode: 0o600 },
  );
  renameSync(partial, file);
  return key;
}
