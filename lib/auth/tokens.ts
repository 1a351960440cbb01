import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { errors as joseErrors, jwtVerify, SignJWT } from "jose";
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
  /** Throws TokenError for anything but a valid, unexpired token from a known key. */
  verify(token: string): Promise<TokenClaims>;
}

export function createTokenService(opts: {
  keys: SigningKey[];
  activeKeyId: string;
  issuer: string;
  acceptDevTokens: boolean;
}): TokenService {
  const byKid = new Map(opts.keys.map((k) => [k.kid, k.secret]));
  const active = byKid.get(opts.activeKeyId);
  if (!active) throw new TokenError(`active key ${opts.activeKeyId} is not configured`);
  return {
    async mint({ userId, deviceId, ttlSeconds, dev = false }) {
      const nowMs = Date.now();
      const nowS = Math.floor(nowMs / 1000);
      // JWT times are whole seconds: round expiry up so a token lives at least ttlSeconds.
      const exp = Math.ceil((nowMs + ttlSeconds * 1000) / 1000);
      const jwt = new SignJWT({ did: deviceId, ...(dev ? { dev: true } : {}) })
        .setProtectedHeader({ alg: "HS256", kid: opts.activeKeyId, typ: "JWT" })
        .setSubject(userId)
        .setIssuer(opts.issuer)
        .setAudience(audience)
        .setIssuedAt(nowS)
        .setExpirationTime(exp);
      return { token: await jwt.sign(active), expiresAtMs: exp * 1000, kid: opts.activeKeyId };
    },
    async verify(token) {
      try {
        const { payload } = await jwtVerify(
          token,
          (header) => {
            const key = header.kid === undefined ? undefined : byKid.get(header.kid);
            if (!key) throw new TokenError("unknown signing key");
            return key;
          },
          { issuer: opts.issuer, audience, algorithms: ["HS256"], requiredClaims: ["exp", "sub"] },
        );
        const did = payload.did;
        if (typeof payload.sub !== "string" || typeof did !== "string" || did === "") {
          throw new TokenError("token is not bound to a user and device");
        }
        const dev = payload.dev === true;
        if (dev && !opts.acceptDevTokens) throw new TokenError("dev tokens are disabled");
        return { userId: payload.sub, deviceId: did, expiresAtMs: (payload.exp ?? 0) * 1000, dev };
      } catch (err) {
        if (err instanceof TokenError) throw err;
        if (err instanceof joseErrors.JWTExpired) throw new TokenError("token expired");
        throw new TokenError("invalid token", { cause: err });
      }
    },
  };
}

/**
 * DEV MODE ONLY: loads the signing key kept in the data directory, creating
 * it on first start, so dev tokens survive restarts. Never used when keys
 * are configured.
 */
export function loadOrCreateDevKey(dataDir: string): SigningKey {
  mkdirSync(dataDir, { recursive: true });
  const file = join(dataDir, "dev-signing-key.json");
  if (existsSync(file)) {
    const { kid, secret } = JSON.parse(readFileSync(file, "utf8")) as {
      kid: string;
      secret: string;
    };
    return { kid, secret: Buffer.from(secret, "base64") };
  }
  const key = { kid: `dev-${randomBytes(4).toString("hex")}`, secret: randomBytes(32) };
  writeFileSync(
    file,
    JSON.stringify({ kid: key.kid, secret: Buffer.from(key.secret).toString("base64") }),
    { mode: 0o600 },
  );
  return key;
}
