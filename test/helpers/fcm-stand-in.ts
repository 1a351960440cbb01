import { execFileSync } from "node:child_process";
import { generateKeyPairSync, randomBytes, verify } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { createWaiters } from "./waiters.js";

/** A message as FCM's HTTP v1 API receives it (the JSON firebase-admin posts). */
export interface FcmWireMessage {
  token: string;
  data?: Record<string, string>;
  android?: { priority?: string };
  apns?: { headers?: Record<string, string>; payload?: { aps?: Record<string, unknown> } };
  webpush?: { headers?: Record<string, string> };
  [key: string]: unknown;
}

/** How the stand-in answers one send: 200, or an FCM v1 error. */
export type FcmAnswer =
  | "ok"
  | "UNREGISTERED"
  | "INVALID_ARGUMENT"
  | "INTERNAL"
  | "QUOTA_EXCEEDED"
  | "UNAVAILABLE";

const errorStatus: Record<Exclude<FcmAnswer, "ok">, [number, string]> = {
  UNREGISTERED: [404, "NOT_FOUND"],
  INVALID_ARGUMENT: [400, "INVALID_ARGUMENT"],
  INTERNAL: [500, "INTERNAL"],
  QUOTA_EXCEEDED: [429, "RESOURCE_EXHAUSTED"],
  UNAVAILABLE: [503, "UNAVAILABLE"],
};

const hosts = ["fcm.googleapis.com", "oauth2.googleapis.com", "accounts.google.com"];

const b64json = (part: string) => JSON.parse(Buffer.from(part, "base64url").toString("utf8"));

/**
 * A local stand-in for Google's OAuth token endpoint and FCM's HTTP v1 send
 * API, over TLS with a certificate for their host names. firebase-admin runs
 * unchanged against it: `agent` connects its requests here, `credentialsFile`
 * is a fresh service account key. The token endpoint checks the JWT grant's
 * RS256 signature against that key; sends need the token it issued.
 * `answer` picks each send's answer by token and attempt (1-based).
 */
export async function startFcmStandIn(answer: (token: string, attempt: number) => FcmAnswer) {
  const dir = mkdtempSync(join(tmpdir(), "fcm-stand-in-"));
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-days",
      "1",
      "-subj",
      "/CN=fcm-stand-in",
      "-addext",
      `subjectAltName=${hosts.map((h) => `DNS:${h}`).join(",")}`,
      "-keyout",
      join(dir, "tls-key.pem"),
      "-out",
      join(dir, "tls-cert.pem"),
    ],
    { stdio: "ignore" },
  );
  const tlsCert = readFileSync(join(dir, "tls-cert.pem"));
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const projectId = "relaychat-test";
  const clientEmail = `push@${projectId}.iam.gserviceaccount.com`;
  const credentialsFile = join(dir, "service-account.json");
  writeFileSync(
    credentialsFile,
    JSON.stringify({
      type: "service_account",
      project_id: projectId,
      private_key_id: "key-1",
      private_key: privateKey.export({ type: "pkcs8", format: "pem" }),
      client_email: clientEmail,
      client_id: "1",
      token_uri: "https://oauth2.googleapis.com/token",
    }),
  );

  const issued = new Set<string>();
  const grants: { iss: string; scope: string }[] = [];
  const sent: FcmWireMessage[] = [];
  const attempts = new Map<string, number>();
  let unauthorized = 0;
  const { poke, until } = createWaiters();

  const json = (res: import("node:http").ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
    poke();
  };

  const server = https.createServer(
    { key: readFileSync(join(dir, "tls-key.pem")), cert: tlsCert },
    (req, res) => {
      let raw = "";
      req.on("data", (c) => {
        raw += c;
      });
      req.on("end", () => {
        const host = req.headers.host ?? "";
        if (
          req.method === "POST" &&
          host.startsWith("oauth2.googleapis.com") &&
          req.url === "/token"
        ) {
          const form = new URLSearchParams(raw);
          const [h, p, s] = (form.get("assertion") ?? "").split(".");
          const claims = p ? b64json(p) : {};
          const signed =
            h !== undefined &&
            s !== undefined &&
            b64json(h).alg === "RS256" &&
            verify("sha256", Buffer.from(`${h}.${p}`), publicKey, Buffer.from(s, "base64url"));
          if (
            form.get("grant_type") !== "urn:ietf:params:oauth:grant-type:jwt-bearer" ||
            !signed ||
            claims.iss !== clientEmail ||
            claims.exp * 1000 < Date.now()
          ) {
            return json(res, 400, { error: "invalid_grant" });
          }
          grants.push({ iss: claims.iss, scope: String(claims.scope) });
          const token = randomBytes(16).toString("hex");
          issued.add(token);
          return json(res, 200, { access_token: token, expires_in: 3600, token_type: "Bearer" });
        }
        if (
          req.method === "POST" &&
          host.startsWith("fcm.googleapis.com") &&
          req.url === `/v1/projects/${projectId}/messages:send`
        ) {
          const bearer = (req.headers.authorization ?? "").replace(/^Bearer /, "");
          if (!issued.has(bearer)) {
            unauthorized++;
            return json(res, 401, {
              error: { code: 401, message: "unauthenticated", status: "UNAUTHENTICATED" },
            });
          }
          const message = (JSON.parse(raw) as { message: FcmWireMessage }).message;
          const n = (attempts.get(message.token) ?? 0) + 1;
          attempts.set(message.token, n);
          const a = answer(message.token, n);
          if (a === "ok") {
            sent.push(message);
            return json(res, 200, { name: `projects/${projectId}/messages/${sent.length}` });
          }
          const [code, status] = errorStatus[a];
          return json(res, code, {
            error: {
              code,
              message: a,
              status,
              details: [
                { "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", errorCode: a },
              ],
            },
          });
        }
        json(res, 404, { error: { code: 404, message: "no such endpoint", status: "NOT_FOUND" } });
      });
    },
  );
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;

  /** Connects every request to the stand-in, verifying its certificate for the requested host. */
  class StandInAgent extends https.Agent {
    override createConnection(options: tls.ConnectionOptions) {
      return tls.connect({
        ...options,
        host: "127.0.0.1",
        port,
        servername: options.servername || String(options.host),
        ca: tlsCert,
      });
    }
  }
  const agent = new StandInAgent({ keepAlive: true });

  return {
    credentialsFile,
    agent,
    /** Messages FCM accepted, in order. */
    sent,
    /** Verified JWT grants exchanged for access tokens. */
    grants,
    /** Send attempts per token, accepted or not. */
    attempts,
    /** Sends refused for lacking an issued access token. */
    get unauthorized() {
      return unauthorized;
    },
    until: (pred: () => boolean, timeoutMs = 5000) => until(pred, timeoutMs, "the FCM stand-in"),
    async close() {
      agent.destroy();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
