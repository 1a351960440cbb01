import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { readFcmProjectId } from "../../lib/backends/fcm-push.js";
import {
  type ConfigInput,
  readEnv,
  toConfig,
  variableOf,
  withVariables,
} from "../../lib/config.js";
import { ConfigError } from "../../lib/errors.js";

const secret32 = Buffer.alloc(32, 7);
const b64 = (b: Buffer) => b.toString("base64");
const key = (kid: string, bytes = 32) => ({ kid, secret: Buffer.alloc(bytes, 1) });

/** A valid production-style input to vary one setting at a time. */
const valid = (more: ConfigInput = {}): ConfigInput => ({
  ...more,
  auth: { signingKeys: [key("k1")], ...more.auth },
});

const configError = (input: ConfigInput, message: RegExp) => {
  let caught: unknown;
  try {
    toConfig(input);
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(ConfigError);
  expect((caught as Error).message).toMatch(message);
};

describe("readEnv", () => {
  it("reads every CHAT_* variable", () => {
    const input = readEnv({
      CHAT_HOST: "0.0.0.0",
      CHAT_PORT: "9090",
      CHAT_DATA_DIR: "/var/lib/chat",
      CHAT_DEV_MODE: "true",
      CHAT_LOG_LEVEL: "debug",
      CHAT_CORS_ORIGINS: "https://a.example, https://b.example,,",
      CHAT_AUTH_SIGNING_KEYS: `k1:${b64(secret32)}, k2:${b64(Buffer.alloc(40, 2))}`,
      CHAT_AUTH_ACTIVE_KEY_ID: "k2",
      CHAT_AUTH_ISSUER: "issuer-x",
      CHAT_TOKEN_TTL_SECONDS: "600",
      CHAT_TOKEN_MAX_TTL_SECONDS: "7200",
      CHAT_PARTNER_CREDENTIALS: "p1:secret-one-0123456, p2:with:colons-012345",
      CHAT_MESSAGE_MAX_BYTES: "1000",
      CHAT_REQUESTS_PER_SECOND: "7",
      CHAT_REQUEST_BURST: "9",
      CHAT_FRAME_MAX_BYTES: "5000",
      CHAT_GROUP_MAX_MEMBERS: "50",
      CHAT_SEND_PER_SECOND: "1.5",
      CHAT_SEND_BURST: "3",
      CHAT_TYPING_PER_SECOND: "4",
      CHAT_TYPING_BURST: "6",
      CHAT_STREAMS_PER_DEVICE: "2",
      CHAT_STREAMS_PER_USER: "8",
      CHAT_PRESENCE_WATCH_MAX: "100",
      CHAT_OUTBOX_MAX_FRAMES: "64",
      CHAT_LAG_TIMEOUT_MS: "1234",
      CHAT_HTTP2_MAX_CONCURRENT_STREAMS: "10",
      CHAT_HTTP2_MAX_SESSION_MEMORY_MB: "4",
      CHAT_RECEIPT_FANOUT_MAX_MEMBERS: "32",
      CHAT_HEARTBEAT_INTERVAL_MS: "1000",
      CHAT_PRESENCE_TTL_MS: "3000",
      CHAT_TYPING_TTL_MS: "700",
      CHAT_SYNC_LIMIT: "77",
      CHAT_GAP_WAIT_MS: "20",
      CHAT_DRAIN_GRACE_MS: "900",
      CHAT_FANOUT_RETRY_MS: "4500",
      CHAT_SQLITE_SYNCHRONOUS: "normal",
      CHAT_METRICS_ENABLED: "off",
      CHAT_METRICS_HOST: "0.0.0.0",
      CHAT_METRICS_PORT: "9100",
      CHAT_PUSH_WEBHOOK_URL: "https://push.example/notify",
      CHAT_PUSH_WEBHOOK_SECRET: "push-secret-0123456789",
    });
    expect(input.host).toBe("0.0.0.0");
    expect(input.port).toBe(9090);
    expect(input.dataDir).toBe("/var/lib/chat");
    expect(input.devMode).toBe(true);
    expect(input.logLevel).toBe("debug");
    expect(input.corsOrigins).toEqual(["https://a.example", "https://b.example"]);
    expect(input.auth?.signingKeys?.map((k) => k.kid)).toEqual(["k1", "k2"]);
    expect(Buffer.from(input.auth!.signingKeys![0]!.secret).equals(secret32)).toBe(true);
    expect(input.auth?.signingKeys?.[1]?.secret.length).toBe(40);
    expect(input.auth).toMatchObject({
      activeKeyId: "k2",
      issuer: "issuer-x",
      tokenTtlSeconds: 600,
      maxTokenTtlSeconds: 7200,
    });
    expect(input.partners).toEqual([
      { key: "p1", secret: "secret-one-0123456" },
      { key: "p2", secret: "with:colons-012345" },
    ]);
    expect(input.limits).toEqual({
      requestsPerSecond: 7,
      requestBurst: 9,
      messageMaxBytes: 1000,
      frameMaxBytes: 5000,
      groupMaxMembers: 50,
      sendPerSecond: 1.5,
      sendBurst: 3,
      typingPerSecond: 4,
      typingBurst: 6,
      streamsPerDevice: 2,
      streamsPerUser: 8,
      presenceWatchMax: 100,
      outboxMaxFrames: 64,
      lagTimeoutMs: 1234,
      http2MaxConcurrentStreams: 10,
      http2MaxSessionMemoryMb: 4,
      receiptFanoutMaxMembers: 32,
    });
    expect(input.session).toEqual({
      heartbeatIntervalMs: 1000,
      presenceTtlMs: 3000,
      typingTtlMs: 700,
      syncLimit: 77,
      gapWaitMs: 20,
      drainGraceMs: 900,
      fanoutRetryMs: 4500,
    });
    expect(input.sqlite).toEqual({ synchronous: "NORMAL" });
    expect(input.metrics).toEqual({ enabled: false, host: "0.0.0.0", port: 9100 });
    expect(input.push).toEqual({
      webhookUrl: "https://push.example/notify",
      webhookSecret: "push-secret-0123456789",
    });

    // And the result is a valid config.
    const cfg = toConfig(input);
    expect(cfg.auth.activeKeyId).toBe("k2");
    expect(cfg.limits.sendPerSecond).toBe(1.5);
  });

  it("names the variable beside each field an error names, for operators who set variables", () => {
    expect(withVariables("logLevel must be one of a, b")).toBe(
      "logLevel (CHAT_LOG_LEVEL) must be one of a, b",
    );
    expect(withVariables("role core needs redis.url: a split shares soft state")).toBe(
      "role (CHAT_ROLE) core needs redis.url (CHAT_REDIS_URL): a split shares soft state",
    );
    expect(withVariables("limits.sendPerSecond must be a positive number")).toBe(
      "limits.sendPerSecond (CHAT_SEND_PER_SECOND) must be a positive number",
    );
    // One-word fields only as the first word: "host" in a sentence is English.
    expect(withVariables("cassandra.contactPoints are host or host:port")).toBe(
      "cassandra.contactPoints (CHAT_CASSANDRA_CONTACT_POINTS) are host or host:port",
    );
    expect(withVariables("core.secret must be at least 32 characters")).toBe(
      "core.secret (CHAT_INTERNAL_SECRET) must be at least 32 characters",
    );
    // Every field's error names a variable that readEnv reads.
    for (const [path, variable] of Object.entries(variableOf)) {
      expect(variable, path).toMatch(/^CHAT_[A-Z0-9_]+$/);
    }
    for (const [path, variable] of Object.entries(variableOf)) {
      if (path === "auth.signingKeys" || path === "partners") continue;
      // "1" reads as a number, a boolean, a string and a list alike.
      const value = path === "sqlite.synchronous" ? "NORMAL" : "1";
      const read = readEnv({ [variable]: value }) as Record<string, unknown>;
      const [section, key] = path.includes(".") ? path.split(".") : [undefined, path];
      const holder = (section ? read[section] : read) as Record<string, unknown>;
      expect(holder[key!], `${variable} sets ${path}`).toBeDefined();
    }
  });

  it("ignores unset, empty and foreign variables", () => {
    const input = readEnv({ CHAT_HOST: "", PORT: "1", HOST: "x", CHAT_PORTS: "5" });
    expect(input).toEqual({
      auth: {},
      limits: {},
      session: {},
      sqlite: {},
      metrics: {},
      push: {},
      redis: {},
      cassandra: {},
      pulsar: {},
      core: {},
    });
    // Nothing set means the defaults.
    expect(toConfig({ ...input, devMode: true }).port).toBe(8080);
  });

  it("reads how long an edge waits for a core's ping answer, and refuses a useless one", () => {
    expect(readEnv({ CHAT_CORE_PING_TIMEOUT_MS: "2500" }).core).toEqual({ pingTimeoutMs: 2500 });
    expect(toConfig({ devMode: true }).core.pingTimeoutMs).toBe(10_000);
    expect(() => toConfig({ devMode: true, core: { pingTimeoutMs: 50 } })).toThrow(
      /core.pingTimeoutMs/,
    );
  });

  it("parses booleans in their usual spellings", () => {
    for (const v of ["1", "true", "TRUE", "yes", "on"]) {
      expect(readEnv({ CHAT_DEV_MODE: v }).devMode).toBe(true);
    }
    for (const v of ["0", "false", "False", "no", "off"]) {
      expect(readEnv({ CHAT_DEV_MODE: v }).devMode).toBe(false);
    }
  });

  it.each([
    [{ CHAT_PORT: "eighty" }, /CHAT_PORT must be a number/],
    [{ CHAT_SEND_BURST: "lots" }, /CHAT_SEND_BURST must be a number/],
    [{ CHAT_GAP_WAIT_MS: "Infinity" }, /CHAT_GAP_WAIT_MS must be a number/],
    [{ CHAT_DEV_MODE: "maybe" }, /CHAT_DEV_MODE must be true or false/],
    [{ CHAT_AUTH_SIGNING_KEYS: "no-colon" }, /kid:base64secret/],
    [{ CHAT_AUTH_SIGNING_KEYS: `:${b64(secret32)}` }, /kid:base64secret/],
    [{ CHAT_PARTNER_CREDENTIALS: "keyonly" }, /key:secret/],
    [{ CHAT_PARTNER_CREDENTIALS: ":secret-0123456789" }, /key:secret/],
    [{ CHAT_SQLITE_SYNCHRONOUS: "OFF" }, /FULL or NORMAL/],
  ])("rejects %o", (env, message) => {
    expect(() => readEnv(env)).toThrow(ConfigError);
    expect(() => readEnv(env)).toThrow(message);
  });
});

describe("toConfig", () => {
  it("fills in defaults", () => {
    const cfg = toConfig({ devMode: true });
    expect(cfg).toMatchObject({
      host: "127.0.0.1",
      port: 8080,
      dataDir: "./data",
      devMode: true,
      logLevel: "info",
      partners: [],
      corsOrigins: [],
      sqlite: { synchronous: "FULL" },
    });
    expect(cfg.auth).toEqual({
      signingKeys: [],
      activeKeyId: "",
      issuer: "relaychat",
      tokenTtlSeconds: 3600,
      maxTokenTtlSeconds: 86_400,
    });
    expect(cfg.limits.messageMaxBytes).toBe(64 * 1024);
    expect(cfg.limits.frameMaxBytes).toBe(96 * 1024);
    expect(cfg.limits.groupMaxMembers).toBe(1024);
    expect(cfg.session.presenceTtlMs).toBeGreaterThan(cfg.session.heartbeatIntervalMs);
  });

  it("merges nested overrides without losing the other defaults", () => {
    const cfg = toConfig({ devMode: true, limits: { sendBurst: 7 }, session: { syncLimit: 9 } });
    expect(cfg.limits.sendBurst).toBe(7);
    expect(cfg.limits.sendPerSecond).toBe(20);
    expect(cfg.session.syncLimit).toBe(9);
    expect(cfg.session.gapWaitMs).toBe(250);
    // Defaults are not shared between configs.
    const other = toConfig({ devMode: true });
    expect(other.limits.sendBurst).toBe(40);
  });

  it("takes the first signing key as active unless one is named", () => {
    expect(toConfig(valid({ auth: { signingKeys: [key("a"), key("b")] } })).auth.activeKeyId).toBe(
      "a",
    );
    expect(
      toConfig(valid({ auth: { signingKeys: [key("a"), key("b")], activeKeyId: "b" } })).auth
        .activeKeyId,
    ).toBe("b");
  });

  it("validates the push gateway only when one is set", () => {
    expect(toConfig({ devMode: true }).push).toEqual({
      webhookUrl: "",
      webhookSecret: "",
      fcmCredentialsFile: "",
    });
    const ok = { webhookUrl: "https://push.example/n", webhookSecret: "0123456789abcdef" };
    expect(toConfig({ devMode: true, push: ok }).push).toEqual({ ...ok, fcmCredentialsFile: "" });
    expect(() =>
      toConfig({ devMode: true, push: { ...ok, fcmCredentialsFile: "/etc/chat/fcm.json" } }),
    ).toThrow(/one of push.webhookUrl and push.fcmCredentialsFile/);
    expect(readEnv({ CHAT_PUSH_FCM_CREDENTIALS_FILE: "/etc/chat/fcm.json" }).push).toEqual({
      fcmCredentialsFile: "/etc/chat/fcm.json",
    });
    expect(() => toConfig({ devMode: true, push: { ...ok, webhookUrl: "not a url" } })).toThrow(
      /not a URL/,
    );
    expect(() => toConfig({ devMode: true, push: { ...ok, webhookUrl: "ftp://x/y" } })).toThrow(
      /http\(s\)/,
    );
    expect(() => toConfig({ devMode: true, push: { ...ok, webhookSecret: "short" } })).toThrow(
      /at least 16/,
    );
  });

  it("puts soft state in Redis only when a redis:// URL is set", () => {
    expect(toConfig({ devMode: true }).redis).toEqual({ url: "", keyPrefix: "chat:" });
    expect(
      readEnv({ CHAT_REDIS_URL: "redis://10.0.0.5:6379/2", CHAT_REDIS_KEY_PREFIX: "eu1:" }).redis,
    ).toEqual({ url: "redis://10.0.0.5:6379/2", keyPrefix: "eu1:" });
    expect(toConfig({ devMode: true, redis: { url: "rediss://cache:6380" } }).redis).toEqual({
      url: "rediss://cache:6380",
      keyPrefix: "chat:",
    });
    expect(() => toConfig({ devMode: true, redis: { url: "http://127.0.0.1:6379" } })).toThrow(
      /redis:\/\/ or rediss:\/\//,
    );
    expect(() => toConfig({ devMode: true, redis: { url: "not a url" } })).toThrow(/not a URL/);
  });

  it("keeps events in Cassandra only when contact points are set, with a keyspace CQL accepts", () => {
    expect(toConfig({ devMode: true }).cassandra.contactPoints).toEqual([]);
    expect(
      readEnv({
        CHAT_CASSANDRA_CONTACT_POINTS: "10.0.0.7:9042, 10.0.0.8",
        CHAT_CASSANDRA_LOCAL_DC: "eu-west",
        CHAT_CASSANDRA_KEYSPACE: "chat_eu",
        CHAT_CASSANDRA_REPLICATION_FACTOR: "3",
      }).cassandra,
    ).toEqual({
      contactPoints: ["10.0.0.7:9042", "10.0.0.8"],
      localDataCenter: "eu-west",
      keyspace: "chat_eu",
      replicationFactor: 3,
    });
    const points = { contactPoints: ["127.0.0.1:9042"] };
    expect(toConfig({ devMode: true, cassandra: points }).cassandra).toEqual({
      ...points,
      localDataCenter: "datacenter1",
      keyspace: "relaychat",
      replicationFactor: 1,
    });
    expect(() =>
      toConfig({ devMode: true, cassandra: { ...points, keyspace: "chat; DROP" } }),
    ).toThrow(/keyspace/);
    expect(() =>
      toConfig({ devMode: true, cassandra: { ...points, replicationFactor: 0 } }),
    ).toThrow(/replicationFactor/);
    expect(() => toConfig({ devMode: true, cassandra: { contactPoints: ["a b:1"] } })).toThrow(
      /host:port/,
    );
  });

  it("keeps the log in Pulsar only when its web URL is set, on a persistent topic", () => {
    expect(toConfig({ devMode: true }).pulsar.webUrl).toBe("");
    expect(
      readEnv({
        CHAT_PULSAR_URL: "http://pulsar.internal:8080",
        CHAT_PULSAR_TOPIC: "persistent://chat/prod/core-1",
        CHAT_PULSAR_SUBSCRIPTION: "store-1",
      }).pulsar,
    ).toEqual({
      webUrl: "http://pulsar.internal:8080",
      topic: "persistent://chat/prod/core-1",
      subscription: "store-1",
    });
    const webUrl = "http://127.0.0.1:8080";
    expect(toConfig({ devMode: true, pulsar: { webUrl } }).pulsar).toEqual({
      webUrl,
      topic: "persistent://public/default/relaychat-events",
      subscription: "relaychat-store",
    });
    expect(() => toConfig({ devMode: true, pulsar: { webUrl: "pulsar://x:6650" } })).toThrow(
      /http/,
    );
    expect(() => toConfig({ devMode: true, pulsar: { webUrl: "not a url" } })).toThrow(/URL/);
    expect(() =>
      toConfig({ devMode: true, pulsar: { webUrl, topic: "non-persistent://a/b/c" } }),
    ).toThrow(/persistent/);
    expect(() => toConfig({ devMode: true, pulsar: { webUrl, subscription: "a/b" } })).toThrow(
      /subscription/,
    );
  });

  it("splits the services only with shared Redis, an internal secret and, on an edge, the core's URL", () => {
    const secret = "s".repeat(32);
    const redis = { url: "redis://127.0.0.1:6379" };
    expect(toConfig({ devMode: true }).role).toBe("all");
    expect(() => toConfig({ devMode: true, role: "router" as "core" })).toThrow(
      /role must be one of/,
    );
    expect(() => toConfig({ devMode: true, role: "core", core: { secret } })).toThrow(
      /needs redis.url/,
    );
    expect(() =>
      toConfig({ devMode: true, role: "core", redis, core: { secret: "short" } }),
    ).toThrow(/core.secret must be at least 32/);
    const core = toConfig({ devMode: true, role: "core", redis, core: { secret } });
    expect(core.core).toEqual({
      host: "127.0.0.1",
      port: 8081,
      urls: [],
      secret,
      pingTimeoutMs: 10_000,
    });
    expect(() => toConfig({ devMode: true, role: "edge", redis, core: { secret } })).toThrow(
      /core.urls is empty/,
    );
    expect(() =>
      toConfig({ devMode: true, role: "edge", redis, core: { secret, urls: ["not a url"] } }),
    ).toThrow(/not a URL/);
    expect(() =>
      toConfig({ devMode: true, role: "edge", redis, core: { secret, urls: ["redis://x:1"] } }),
    ).toThrow(/core.urls must be http/);
    const twice = ["http://core:8081", "http://core:8081"];
    expect(() =>
      toConfig({ devMode: true, role: "edge", redis, core: { secret, urls: twice } }),
    ).toThrow(/names a core twice/);
    expect(
      toConfig({ devMode: true, role: "edge", redis, core: { secret, urls: ["http://core:8081"] } })
        .core.urls,
    ).toEqual(["http://core:8081"]);
    expect(readEnv({ CHAT_CORE_URL: "http://c1:8081, http://c2:8081" }).core?.urls).toEqual([
      "http://c1:8081",
      "http://c2:8081",
    ]);
    expect(
      readEnv({
        CHAT_ROLE: "edge",
        CHAT_CORE_URL: "http://10.0.0.2:8081",
        CHAT_CORE_HOST: "0.0.0.0",
        CHAT_CORE_PORT: "9000",
        CHAT_INTERNAL_SECRET: secret,
      }),
    ).toMatchObject({
      role: "edge",
      core: { urls: ["http://10.0.0.2:8081"], host: "0.0.0.0", port: 9000, secret },
    });
  });

  it("refuses an FCM key file that is not a service account key, naming what is missing", () => {
    const dir = mkdtempSync(join(tmpdir(), "chat-fcm-config-"));
    try {
      const file = join(dir, "sa.json");
      expect(() => readFcmProjectId(file)).toThrow(ConfigError);
      writeFileSync(file, "{not json");
      expect(() => readFcmProjectId(file)).toThrow(/not a readable JSON file/);
      const key = {
        project_id: "p1",
        private_key: "-----BEGIN PRIVATE KEY-----",
        client_email: "",
      };
      writeFileSync(file, JSON.stringify(key));
      expect(() => readFcmProjectId(file)).toThrow(/no client_email/);
      writeFileSync(
        file,
        JSON.stringify({ ...key, client_email: "push@p1.iam.gserviceaccount.com" }),
      );
      expect(readFcmProjectId(file)).toBe("p1");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("requires a signing key outside dev mode", () => {
    configError({}, /no token signing key/);
    configError({ devMode: false }, /CHAT_AUTH_SIGNING_KEYS/);
    expect(toConfig(valid()).devMode).toBe(false);
  });

  it.each<[string, ConfigInput, RegExp]>([
    ["port above range", valid({ port: 70_000 }), /port must be 0-65535/],
    ["negative port", valid({ port: -1 }), /port must be 0-65535/],
    ["fractional port", valid({ port: 80.5 }), /port must be 0-65535/],
    ["zero limit", valid({ limits: { sendBurst: 0 } }), /limits.sendBurst must be positive/],
    ["NaN limit", valid({ limits: { outboxMaxFrames: Number.NaN } }), /limits.outboxMaxFrames/],
    [
      "negative session",
      valid({ session: { gapWaitMs: -5 } }),
      /session.gapWaitMs must be positive/,
    ],
    [
      "fractional time",
      valid({ session: { heartbeatIntervalMs: 2500.5 } }),
      /session.heartbeatIntervalMs must be a whole number/,
    ],
    [
      "time past what a timer holds",
      valid({ limits: { lagTimeoutMs: 2 ** 31 } }),
      /limits.lagTimeoutMs must be a whole number up to 2147483647/,
    ],
    [
      "fractional count",
      valid({ limits: { streamsPerUser: 1.5 } }),
      /limits.streamsPerUser must be a whole number/,
    ],
    [
      "zero token ttl",
      valid({ auth: { tokenTtlSeconds: 0 } }),
      /auth.tokenTtlSeconds must be positive/,
    ],
    [
      "negative token ttl",
      valid({ auth: { tokenTtlSeconds: -60 } }),
      /auth.tokenTtlSeconds must be positive/,
    ],
    [
      "fractional max token ttl",
      valid({ auth: { maxTokenTtlSeconds: 60.5 } }),
      /auth.maxTokenTtlSeconds must be a whole number/,
    ],
    ["unknown log level", valid({ logLevel: "verbose" }), /logLevel must be one of fatal, error/],
    ["tiny group", valid({ limits: { groupMaxMembers: 1 } }), /groupMaxMembers must be >= 2/],
    [
      "frame not above message",
      valid({ limits: { messageMaxBytes: 4096, frameMaxBytes: 5000 } }),
      /frameMaxBytes must exceed messageMaxBytes/,
    ],
    [
      "presence ttl not above heartbeat",
      valid({ session: { heartbeatIntervalMs: 1000, presenceTtlMs: 1000 } }),
      /presenceTtlMs must be longer/,
    ],
    ["empty kid", valid({ auth: { signingKeys: [key("")] } }), /signing key ids must not be empty/],
    [
      "short secret",
      valid({ auth: { signingKeys: [key("s", 31)] } }),
      /s must be at least 32 bytes/,
    ],
    [
      "unknown active key",
      valid({ auth: { signingKeys: [key("a")], activeKeyId: "zz" } }),
      /activeKeyId zz is not a configured key/,
    ],
    [
      "short partner secret",
      valid({ partners: [{ key: "p", secret: "too-short" }] }),
      /partner p secret must be >= 16/,
    ],
    [
      "ttl above max",
      valid({ auth: { tokenTtlSeconds: 100, maxTokenTtlSeconds: 50 } }),
      /tokenTtlSeconds must not exceed/,
    ],
  ])("rejects %s", (_, input, message) => {
    configError(input, message);
  });

  it("accepts the boundary values", () => {
    const cfg = toConfig(
      valid({
        port: 0,
        limits: { groupMaxMembers: 2, messageMaxBytes: 1000, frameMaxBytes: 2024 },
        session: { heartbeatIntervalMs: 1000, presenceTtlMs: 1001 },
        partners: [{ key: "p", secret: "exactly-16-chars" }],
        auth: { signingKeys: [key("k", 32)], tokenTtlSeconds: 60, maxTokenTtlSeconds: 60 },
      }),
    );
    expect(cfg.port).toBe(0);
    expect(cfg.limits.frameMaxBytes).toBe(2024);
    // Rates alone may be fractional.
    expect(toConfig(valid({ limits: { sendPerSecond: 0.5 } })).limits.sendPerSecond).toBe(0.5);
  });
});
