import { ConfigError } from "./errors.js";

/** A signing key for user tokens. `kid` travels in the JWT header so keys can rotate. */
export interface SigningKey {
  kid: string;
  secret: Uint8Array;
}

/** Credentials of one partner backend for the server-to-server API. */
export interface PartnerCredential {
  key: string;
  secret: string;
}

export interface Limits {
  /** Max UTF-8 bytes of a message text. */
  messageMaxBytes: number;
  /** Max encoded size of one request message or stream frame. */
  frameMaxBytes: number;
  groupMaxMembers: number;
  /** Calls (unary, stream opens, Session frames but sends and typing) per user per second, and the burst above it. */
  requestsPerSecond: number;
  requestBurst: number;
  /** Sustained events per user per second (messages, edits, deletes, reactions), and the burst above it. */
  sendPerSecond: number;
  sendBurst: number;
  typingPerSecond: number;
  typingBurst: number;
  streamsPerDevice: number;
  streamsPerUser: number;
  /** Users one device may watch for presence. */
  presenceWatchMax: number;
  /** Frames queued for one slow stream before it is shed and caught up from the store. */
  outboxMaxFrames: number;
  /** How long a stream may stay behind before it is ended with RESOURCE_EXHAUSTED. */
  lagTimeoutMs: number;
  http2MaxConcurrentStreams: number;
  http2MaxSessionMemoryMb: number;
  /** Groups larger than this get read/delivered receipts only on the reader's own devices. */
  receiptFanoutMaxMembers: number;
}

export interface Config {
  host: string;
  port: number;
  dataDir: string;
  /** Enables DevService (tokens for any user name, no credentials). Never on a reachable server. */
  devMode: boolean;
  logLevel: string;
  auth: {
    /** Empty in dev mode means "create and keep a dev key in dataDir". */
    signingKeys: SigningKey[];
    activeKeyId: string;
    issuer: string;
    tokenTtlSeconds: number;
    maxTokenTtlSeconds: number;
  };
  partners: PartnerCredential[];
  limits: Limits;
  session: {
    heartbeatIntervalMs: number;
    presenceTtlMs: number;
    typingTtlMs: number;
    /** Most events per conversation in one sync batch; older ones are marked as a gap. */
    syncLimit: number;
    /** How long an out-of-order event waits for the missing ones before they are read from the store. */
    gapWaitMs: number;
    /**
     * On shutdown, how long connections get to finish (answers read, GOAWAY
     * seen, hung up) before what is left is closed on.
     */
    drainGraceMs: number;
    /**
     * How long fan-out of a durable event is retried while the soft state
     * fails (Redis away); later events of its conversation wait behind it.
     * After that, live streams find the event by its gap or on reconnect.
     */
    fanoutRetryMs: number;
  };
  sqlite: { synchronous: "FULL" | "NORMAL" };
  corsOrigins: string[];
  /** Prometheus metrics on their own listener; keep it off the public network. */
  metrics: { enabled: boolean; host: string; port: number };
  /**
   * Push for devices without a live session: a gateway (webhookUrl) or FCM
   * (a service account key file); off when both are empty.
   */
  push: { webhookUrl: string; webhookSecret: string; fcmCredentialsFile: string };
  /**
   * Soft state (registry, bus, presence, seq counters, rate limits) in Redis
   * when `url` is set, in memory otherwise. Keys and channels start with `keyPrefix`.
   */
  redis: { url: string; keyPrefix: string };
  /**
   * Events and metadata in Cassandra when `contactPoints` (host:port) are
   * set, in SQLite under dataDir otherwise. The keyspace is created on first
   * start with SimpleStrategy and `replicationFactor`; create it yourself for
   * NetworkTopologyStrategy.
   */
  cassandra: {
    contactPoints: string[];
    localDataCenter: string;
    keyspace: string;
    replicationFactor: number;
  };
  /**
   * The message log in Apache Pulsar when `webUrl` (the broker's web
   * service, http(s)://host:port, which serves its WebSocket API) is set, in
   * process otherwise. Each core needs a topic of its own: it writes and
   * consumes it alone (an Exclusive subscription named `subscription`).
   */
  pulsar: { webUrl: string; topic: string; subscription: string };
  /**
   * Which services this process runs: "all" (the embedded default), or one
   * side of the split: "core" (router and store, serving them to edges on its
   * internal listener) or "edge" (client sessions, calling the cores at
   * `core.urls`). A split needs soft state in Redis, shared by every process.
   */
  role: "all" | "core" | "edge";
  /**
   * The core's internal listener (host and port, for role "core"), where
   * edges reach the cores (urls, for role "edge"), and the secret every
   * internal call carries (both sides). With several cores each conversation
   * belongs to one of them (lib/core-shards.ts); they need the store in
   * Cassandra. An edge pings a core's connection while calls wait on it, and
   * drops it (the calls fail UNAVAILABLE) when a ping goes unanswered for
   * `pingTimeoutMs`: a core that stopped without closing its sockets.
   */
  core: { host: string; port: number; urls: string[]; secret: string; pingTimeoutMs: number };
}

type DeepPartial<T> = {
  [K in keyof T]?: T[K] extends Uint8Array
    ? T[K]
    : T[K] extends (infer U)[]
      ? U[]
      : T[K] extends object
        ? DeepPartial<T[K]>
        : T[K];
};

/** What `toConfig` accepts: any subset of Config, as plain values. */
export type ConfigInput = DeepPartial<Config>;

const defaults: Config = {
  host: "127.0.0.1",
  port: 8080,
  dataDir: "./data",
  devMode: false,
  logLevel: "info",
  auth: {
    signingKeys: [],
    activeKeyId: "",
    issuer: "relaychat",
    tokenTtlSeconds: 3600,
    maxTokenTtlSeconds: 86_400,
  },
  partners: [],
  limits: {
    messageMaxBytes: 64 * 1024,
    requestsPerSecond: 100,
    requestBurst: 200,
    frameMaxBytes: 96 * 1024,
    groupMaxMembers: 1024,
    sendPerSecond: 20,
    sendBurst: 40,
    typingPerSecond: 2,
    typingBurst: 5,
    streamsPerDevice: 4,
    streamsPerUser: 16,
    presenceWatchMax: 512,
    outboxMaxFrames: 1024,
    lagTimeoutMs: 30_000,
    http2MaxConcurrentStreams: 128,
    http2MaxSessionMemoryMb: 16,
    receiptFanoutMaxMembers: 128,
  },
  session: {
    heartbeatIntervalMs: 25_000,
    presenceTtlMs: 60_000,
    typingTtlMs: 5_000,
    syncLimit: 500,
    gapWaitMs: 250,
    drainGraceMs: 5_000,
    fanoutRetryMs: 30_000,
  },
  sqlite: { synchronous: "FULL" },
  corsOrigins: [],
  metrics: { enabled: true, host: "127.0.0.1", port: 9464 },
  push: { webhookUrl: "", webhookSecret: "", fcmCredentialsFile: "" },
  redis: { url: "", keyPrefix: "chat:" },
  cassandra: {
    contactPoints: [],
    localDataCenter: "datacenter1",
    keyspace: "relaychat",
    replicationFactor: 1,
  },
  pulsar: {
    webUrl: "",
    topic: "persistent://public/default/relaychat-events",
    subscription: "relaychat-store",
  },
  role: "all",
  core: { host: "127.0.0.1", port: 8081, urls: [], secret: "", pingTimeoutMs: 10_000 },
};

const prefix = "CHAT_";

/** Variables (after the CHAT_ prefix) that set one field each: its path and how it is read. */
const variables: [path: string, name: string, kind: "get" | "num" | "bool" | "list"][] = [
  ["host", "HOST", "get"],
  ["port", "PORT", "num"],
  ["dataDir", "DATA_DIR", "get"],
  ["devMode", "DEV_MODE", "bool"],
  ["logLevel", "LOG_LEVEL", "get"],
  ["corsOrigins", "CORS_ORIGINS", "list"],
  ["auth.activeKeyId", "AUTH_ACTIVE_KEY_ID", "get"],
  ["auth.issuer", "AUTH_ISSUER", "get"],
  ["auth.tokenTtlSeconds", "TOKEN_TTL_SECONDS", "num"],
  ["auth.maxTokenTtlSeconds", "TOKEN_MAX_TTL_SECONDS", "num"],
  ["session.heartbeatIntervalMs", "HEARTBEAT_INTERVAL_MS", "num"],
  ["session.presenceTtlMs", "PRESENCE_TTL_MS", "num"],
  ["session.typingTtlMs", "TYPING_TTL_MS", "num"],
  ["session.syncLimit", "SYNC_LIMIT", "num"],
  ["session.gapWaitMs", "GAP_WAIT_MS", "num"],
  ["session.drainGraceMs", "DRAIN_GRACE_MS", "num"],
  ["session.fanoutRetryMs", "FANOUT_RETRY_MS", "num"],
  ["metrics.enabled", "METRICS_ENABLED", "bool"],
  ["metrics.host", "METRICS_HOST", "get"],
  ["metrics.port", "METRICS_PORT", "num"],
  ["push.webhookUrl", "PUSH_WEBHOOK_URL", "get"],
  ["push.webhookSecret", "PUSH_WEBHOOK_SECRET", "get"],
  ["push.fcmCredentialsFile", "PUSH_FCM_CREDENTIALS_FILE", "get"],
  ["redis.url", "REDIS_URL", "get"],
  ["redis.keyPrefix", "REDIS_KEY_PREFIX", "get"],
  ["cassandra.contactPoints", "CASSANDRA_CONTACT_POINTS", "list"],
  ["cassandra.localDataCenter", "CASSANDRA_LOCAL_DC", "get"],
  ["cassandra.keyspace", "CASSANDRA_KEYSPACE", "get"],
  ["cassandra.replicationFactor", "CASSANDRA_REPLICATION_FACTOR", "num"],
  ["pulsar.webUrl", "PULSAR_URL", "get"],
  ["pulsar.topic", "PULSAR_TOPIC", "get"],
  ["pulsar.subscription", "PULSAR_SUBSCRIPTION", "get"],
  ["role", "ROLE", "get"],
  ["core.host", "CORE_HOST", "get"],
  ["core.port", "CORE_PORT", "num"],
  ["core.urls", "CORE_URL", "list"],
  ["core.secret", "INTERNAL_SECRET", "get"],
  ["core.pingTimeoutMs", "CORE_PING_TIMEOUT_MS", "num"],
];

/** The limits' variables, by field. */
const limitEnv: Record<keyof Limits, string> = {
  messageMaxBytes: "MESSAGE_MAX_BYTES",
  requestsPerSecond: "REQUESTS_PER_SECOND",
  requestBurst: "REQUEST_BURST",
  frameMaxBytes: "FRAME_MAX_BYTES",
  groupMaxMembers: "GROUP_MAX_MEMBERS",
  sendPerSecond: "SEND_PER_SECOND",
  sendBurst: "SEND_BURST",
  typingPerSecond: "TYPING_PER_SECOND",
  typingBurst: "TYPING_BURST",
  streamsPerDevice: "STREAMS_PER_DEVICE",
  streamsPerUser: "STREAMS_PER_USER",
  presenceWatchMax: "PRESENCE_WATCH_MAX",
  outboxMaxFrames: "OUTBOX_MAX_FRAMES",
  lagTimeoutMs: "LAG_TIMEOUT_MS",
  http2MaxConcurrentStreams: "HTTP2_MAX_CONCURRENT_STREAMS",
  http2MaxSessionMemoryMb: "HTTP2_MAX_SESSION_MEMORY_MB",
  receiptFanoutMaxMembers: "RECEIPT_FANOUT_MAX_MEMBERS",
};

/** The variable that sets a field, by its path in Config ("cassandra.keyspace"). */
export const variableOf: Record<string, string> = Object.fromEntries([
  ...variables.map(([path, name]) => [path, `${prefix}${name}`]),
  ...Object.entries(limitEnv).map(([key, name]) => [`limits.${key}`, `${prefix}${name}`]),
  ["auth.signingKeys", `${prefix}AUTH_SIGNING_KEYS`],
  ["partners", `${prefix}PARTNER_CREDENTIALS`],
  ["sqlite.synchronous", `${prefix}SQLITE_SYNCHRONOUS`],
]);

/**
 * A configuration error as an operator who set variables reads it: each
 * field it names is followed by its variable, "logLevel (CHAT_LOG_LEVEL)".
 * Fields with a dot are named anywhere; one-word fields ("host", "role")
 * only as the message's first word, where they cannot be plain English.
 */
export function withVariables(message: string): string {
  const paths = Object.keys(variableOf).sort((a, b) => b.length - a.length);
  const dotted = paths.filter((p) => p.includes(".")).map((p) => p.replace(/[.]/g, "\\."));
  const anywhere = new RegExp(`(?<![\\w.])(${dotted.join("|")})(?![\\w.(])`, "g");
  const first = /^(\w+)(?![\w.(])/.exec(message)?.[1];
  const annotate = (path: string) => `${path} (${variableOf[path]})`;
  const lead = first && !first.includes(".") && variableOf[first] ? annotate(first) : first;
  const rest = message.slice(first?.length ?? 0).replace(anywhere, annotate);
  return `${lead ?? ""}${rest}`;
}

/**
 * Reads CHAT_* environment variables into a ConfigInput. This is the only
 * place that reads process.env; everything else takes a Config.
 */
export function readEnv(env: NodeJS.ProcessEnv = process.env): ConfigInput {
  const get = (name: string): string | undefined => {
    const v = env[prefix + name]?.trim();
    return v === undefined || v === "" ? undefined : v;
  };
  const num = (name: string): number | undefined => {
    const v = get(name);
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isFinite(n)) throw new ConfigError(`${prefix}${name} must be a number`);
    return n;
  };
  const bool = (name: string): boolean | undefined => {
    const v = get(name);
    if (v === undefined) return undefined;
    if (/^(1|true|yes|on)$/i.test(v)) return true;
    if (/^(0|false|no|off)$/i.test(v)) return false;
    throw new ConfigError(`${prefix}${name} must be true or false`);
  };
  const list = (name: string): string[] | undefined =>
    get(name)
      ?.split(",")
      .map((s) => s.trim())
      .filter(Boolean);

  const input: ConfigInput = {
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
  };
  const keys = list("AUTH_SIGNING_KEYS");
  if (keys) {
    input.auth!.signingKeys = keys.map((entry) => {
      const i = entry.indexOf(":");
      if (i <= 0) throw new ConfigError(`${prefix}AUTH_SIGNING_KEYS entries are kid:base64secret`);
      return { kid: entry.slice(0, i), secret: Buffer.from(entry.slice(i + 1), "base64") };
    });
  }
  const partners = list("PARTNER_CREDENTIALS");
  if (partners) {
    input.partners = partners.map((entry) => {
      const i = entry.indexOf(":");
      if (i <= 0) throw new ConfigError(`${prefix}PARTNER_CREDENTIALS entries are key:secret`);
      return { key: entry.slice(0, i), secret: entry.slice(i + 1) };
    });
  }

  for (const [key, name] of Object.entries(limitEnv) as [keyof Limits, string][]) {
    assign(input.limits!, key, num(name));
  }
  for (const [path, name, kind] of variables) {
    const value = { get, num, bool, list }[kind](name);
    if (value === undefined) continue;
    const [section, key] = path.includes(".") ? path.split(".") : [undefined, path];
    const target = (section ? (input as Record<string, object>)[section] : input) as Record<
      string,
      unknown
    >;
    target[key!] = value;
  }
  const sync = get("SQLITE_SYNCHRONOUS");
  if (sync !== undefined) {
    const upper = sync.toUpperCase();
    if (upper !== "FULL" && upper !== "NORMAL") {
      throw new ConfigError(`${prefix}SQLITE_SYNCHRONOUS must be FULL or NORMAL`);
    }
    input.sqlite!.synchronous = upper;
  }
  return input;
}

function assign<T extends object, K extends keyof T>(target: T, key: K, value: T[K] | undefined) {
  if (value !== undefined) target[key] = value;
}

/**
 * Validates a ConfigInput and fills in defaults. Throws ConfigError naming the
 * first bad setting. Outside dev mode a signing key is required.
 */
export function toConfig(input: ConfigInput = {}): Config {
  const cfg: Config = {
    ...defaults,
    ...pick(input, ["host", "port", "dataDir", "devMode", "logLevel", "role"]),
    auth: { ...defaults.auth, ...(input.auth as Partial<Config["auth"]>) },
    partners: (input.partners ?? defaults.partners) as PartnerCredential[],
    limits: { ...defaults.limits, ...(input.limits as Partial<Limits>) },
    session: { ...defaults.session, ...(input.session as Partial<Config["session"]>) },
    sqlite: { ...defaults.sqlite, ...(input.sqlite as Partial<Config["sqlite"]>) },
    corsOrigins: (input.corsOrigins ?? defaults.corsOrigins) as string[],
    metrics: { ...defaults.metrics, ...(input.metrics as Partial<Config["metrics"]>) },
    push: { ...defaults.push, ...(input.push as Partial<Config["push"]>) },
    redis: { ...defaults.redis, ...(input.redis as Partial<Config["redis"]>) },
    cassandra: { ...defaults.cassandra, ...(input.cassandra as Partial<Config["cassandra"]>) },
    pulsar: { ...defaults.pulsar, ...(input.pulsar as Partial<Config["pulsar"]>) },
    core: { ...defaults.core, ...(input.core as Partial<Config["core"]>) },
  };
  for (const [name, port] of [
    ["port", cfg.port],
    ["metrics.port", cfg.metrics.port],
    ["core.port", cfg.core.port],
  ] as const) {
    if (!Number.isInteger(port) || port < 0 || port > 65_535) {
      throw new ConfigError(`${name} must be 0-65535`);
    }
  }
  if (!Number.isInteger(cfg.core.pingTimeoutMs) || cfg.core.pingTimeoutMs < 100) {
    throw new ConfigError("core.pingTimeoutMs must be a whole number of at least 100");
  }
  for (const [k, v] of Object.entries(cfg.limits)) {
    if (!Number.isFinite(v) || v <= 0) throw new ConfigError(`limits.${k} must be positive`);
    // Rates may be fractional (one every two seconds); counts, sizes and times may not.
    if (!k.endsWith("PerSecond")) wholeNumber(`limits.${k}`, v);
  }
  for (const [k, v] of Object.entries(cfg.session)) {
    if (!Number.isFinite(v) || v <= 0) throw new ConfigError(`session.${k} must be positive`);
    wholeNumber(`session.${k}`, v);
  }
  for (const k of ["tokenTtlSeconds", "maxTokenTtlSeconds"] as const) {
    const v = cfg.auth[k];
    if (!Number.isFinite(v) || v <= 0) throw new ConfigError(`auth.${k} must be positive`);
    wholeNumber(`auth.${k}`, v);
  }
  if (cfg.limits.groupMaxMembers < 2) throw new ConfigError("limits.groupMaxMembers must be >= 2");
  if (cfg.limits.frameMaxBytes < cfg.limits.messageMaxBytes + 1024) {
    throw new ConfigError("limits.frameMaxBytes must exceed messageMaxBytes by at least 1 KiB");
  }
  if (cfg.session.presenceTtlMs <= cfg.session.heartbeatIntervalMs) {
    throw new ConfigError("session.presenceTtlMs must be longer than heartbeatIntervalMs");
  }
  if (!logLevels.includes(cfg.logLevel)) {
    throw new ConfigError(`logLevel must be one of ${logLevels.join(", ")}`);
  }
  const { auth } = cfg;
  for (const key of auth.signingKeys) {
    if (!key.kid) throw new ConfigError("signing key ids must not be empty");
    if (key.secret.length < 32) {
      throw new ConfigError(`signing key ${key.kid} must be at least 32 bytes`);
    }
  }
  if (auth.signingKeys.length > 0) {
    if (!auth.activeKeyId) auth.activeKeyId = auth.signingKeys[0]!.kid;
    if (!auth.signingKeys.some((k) => k.kid === auth.activeKeyId)) {
      throw new ConfigError(`auth.activeKeyId ${auth.activeKeyId} is not a configured key`);
    }
  } else if (!cfg.devMode) {
    throw new ConfigError(
      "no token signing key: set CHAT_AUTH_SIGNING_KEYS (kid:base64secret) or run with CHAT_DEV_MODE=true",
    );
  }
  for (const p of cfg.partners) {
    if (p.secret.length < 16) throw new ConfigError(`partner ${p.key} secret must be >= 16 chars`);
  }
  if (cfg.push.webhookUrl) {
    let url: URL;
    try {
      url = new URL(cfg.push.webhookUrl);
    } catch {
      throw new ConfigError("push.webhookUrl is not a URL");
    }
    if (url.protocol !== "https:" && url.protocol !== "http:") {
      throw new ConfigError("push.webhookUrl must be http(s)");
    }
    if (cfg.push.webhookSecret.length < 16) {
      throw new ConfigError("push.webhookSecret must be at least 16 characters");
    }
  }
  if (cfg.redis.url) {
    let url: URL;
    try {
      url = new URL(cfg.redis.url);
    } catch {
      throw new ConfigError("redis.url is not a URL");
    }
    if (url.protocol !== "redis:" && url.protocol !== "rediss:") {
      throw new ConfigError("redis.url must be redis:// or rediss://");
    }
  }
  if (cfg.cassandra.contactPoints.length > 0) {
    for (const point of cfg.cassandra.contactPoints) {
      if (!/^[^\s:]+(:\d{1,5})?$/.test(point)) {
        throw new ConfigError("cassandra.contactPoints are host or host:port");
      }
    }
    if (!/^[a-z][a-z0-9_]{0,47}$/.test(cfg.cassandra.keyspace)) {
      throw new ConfigError("cassandra.keyspace must be lower case letters, digits and _");
    }
    const rf = cfg.cassandra.replicationFactor;
    if (!Number.isInteger(rf) || rf < 1) {
      throw new ConfigError("cassandra.replicationFactor must be a positive integer");
    }
    if (!cfg.cassandra.localDataCenter) throw new ConfigError("cassandra.localDataCenter is empty");
  }
  if (cfg.pulsar.webUrl) {
    let url: URL;
    try {
      url = new URL(cfg.pulsar.webUrl);
    } catch {
      throw new ConfigError("pulsar.webUrl is not a URL");
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new ConfigError("pulsar.webUrl must be http:// or https://");
    }
    if (!/^persistent:\/\/[^/\s]+\/[^/\s]+\/[^/\s]+$/.test(cfg.pulsar.topic)) {
      throw new ConfigError("pulsar.topic must be persistent://tenant/namespace/topic");
    }
    if (!/^[\w.-]{1,128}$/.test(cfg.pulsar.subscription)) {
      throw new ConfigError("pulsar.subscription must be 1-128 letters, digits, _ . or -");
    }
  }
  if (!roles.includes(cfg.role)) throw new ConfigError(`role must be one of ${roles.join(", ")}`);
  if (cfg.role !== "all") {
    if (!cfg.redis.url) {
      throw new ConfigError(`role ${cfg.role} needs redis.url: a split shares soft state in Redis`);
    }
    if (cfg.core.secret.length < 32) {
      throw new ConfigError(
        "core.secret must be at least 32 characters when the services are split",
      );
    }
  }
  if (cfg.role === "edge") {
    if (cfg.core.urls.length === 0) {
      throw new ConfigError("core.urls is empty (role edge calls the cores there)");
    }
    for (const u of cfg.core.urls) {
      let url: URL;
      try {
        url = new URL(u);
      } catch {
        throw new ConfigError("core.urls holds something that is not a URL");
      }
      if (url.protocol !== "http:" && url.protocol !== "https:") {
        throw new ConfigError("core.urls must be http(s)");
      }
    }
    if (new Set(cfg.core.urls).size !== cfg.core.urls.length) {
      throw new ConfigError("core.urls names a core twice");
    }
  }
  if (cfg.push.webhookUrl && cfg.push.fcmCredentialsFile) {
    throw new ConfigError("set one of push.webhookUrl and push.fcmCredentialsFile, not both");
  }
  if (auth.tokenTtlSeconds > auth.maxTokenTtlSeconds) {
    throw new ConfigError("auth.tokenTtlSeconds must not exceed maxTokenTtlSeconds");
  }
  return cfg;
}

/** pino's levels, and silent. */
const logLevels = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];
const roles: Config["role"][] = ["all", "core", "edge"];

/**
 * Timers take at most 2^31 - 1 ms (a longer one fires at once), and the
 * times that go on the wire are uint32 fields; everything counted is whole.
 */
const maxWhole = 2 ** 31 - 1;
function wholeNumber(name: string, v: number) {
  if (!Number.isInteger(v) || v > maxWhole) {
    throw new ConfigError(`${name} must be a whole number up to ${maxWhole}`);
  }
}

function pick<T extends object, K extends keyof T>(obj: T, keys: K[]): Partial<Pick<T, K>> {
  const out: Partial<Pick<T, K>> = {};
  for (const k of keys) if (obj[k] !== undefined) out[k] = obj[k];
  return out;
}
