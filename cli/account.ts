import {
  chmodSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import {
  type Client,
  Code,
  ConnectError,
  createClient,
  type Interceptor,
} from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ChatService } from "../gen/chat/v1/chat_service_pb.js";
import { DevService } from "../gen/chat/v1/dev_service_pb.js";

export const defaultServer = "http://127.0.0.1:8080";

/** What `login` saves to `<home>/<user>.json`. */
export interface SavedLogin {
  server: string;
  userId: string;
  deviceId: string;
  token: string;
  /** Lets other commands renew a dev token before it expires instead of failing. */
  expiresAtMs: number;
}

/** A CLI failure that is not a server error: printed as is, exit code 1. */
export class CliError extends Error {
  override name = "CliError";
}

export interface AccountOptions {
  home: string;
  server?: string | undefined;
  as?: string | undefined;
}

/** A logged-in user with a ChatService client whose token can be renewed in place. */
export interface Account {
  readonly server: string;
  readonly login: SavedLogin;
  readonly home: string;
  chat: Client<typeof ChatService>;
  /** Gets a fresh dev token (dev mode only); false when the server refuses. */
  renew(): Promise<boolean>;
}

const loginPath = (home: string, user: string) => join(home, `${user}.json`);

/** Issues a dev token through DevService and saves it. */
export async function devLogin(
  home: string,
  server: string,
  userName: string,
  deviceId = "",
): Promise<SavedLogin> {
  const dev = createClient(DevService, createGrpcTransport({ baseUrl: server }));
  let res: Awaited<ReturnType<typeof dev.issueDevToken>>;
  try {
    res = await dev.issueDevToken({ userName, deviceId });
  } catch (err) {
    const ce = ConnectError.from(err);
    if (ce.code === Code.Unimplemented || ce.code === Code.NotFound) {
      throw new ConnectError(
        `dev mode is off on ${server}: DevService is not served, so the CLI cannot log in by itself. ` +
          "Start the server with `npm start` (CHAT_DEV_MODE=true) for local trials.",
        ce.code,
      );
    }
    throw ce;
  }
  const saved: SavedLogin = {
    server,
    userId: res.userId,
    deviceId: res.deviceId,
    token: res.token,
    expiresAtMs: res.expiresAt ? timestampMs(res.expiresAt) : 0,
  };
  mkdirSync(home, { recursive: true, mode: 0o700 });
  const path = loginPath(home, res.userId);
  writeFileSync(path, `${JSON.stringify(saved, null, 2)}\n`, { mode: 0o600 });
  // writeFileSync keeps the mode of an existing file; a token must not stay readable by others.
  chmodSync(path, 0o600);
  return saved;
}

function readLogin(home: string, user: string): SavedLogin | undefined {
  const path = loginPath(home, user);
  if (!existsSync(path)) return undefined;
  const parsed = JSON.parse(readFileSync(path, "utf8")) as Partial<SavedLogin>;
  if (!parsed.server || !parsed.userId || !parsed.deviceId || !parsed.token) {
    throw new CliError(`${path} is not a saved login; run \`login ${user}\` again`);
  }
  return { expiresAtMs: 0, ...parsed } as SavedLogin;
}

/** Saved logins in the home directory (cursor files excluded). */
function savedUsers(home: string): string[] {
  if (!existsSync(home)) return [];
  return readdirSync(home)
    .filter((f) => f.endsWith(".json") && !f.endsWith(".cursors.json"))
    .map((f) => f.slice(0, -".json".length));
}

/**
 * The account a command runs as: `--as`, or the only saved login. Without a
 * usable saved login for that server it logs in through DevService.
 */
export async function openAccount(opts: AccountOptions): Promise<Account> {
  let user = opts.as;
  if (!user) {
    const saved = savedUsers(opts.home);
    if (saved.length !== 1) {
      throw new CliError(
        saved.length === 0
          ? "no saved login: run `login <user>` first or pass --as <user>"
          : `several saved logins (${saved.join(", ")}): choose one with --as <user>`,
      );
    }
    user = saved[0]!;
  }
  let login = readLogin(opts.home, user);
  const server = opts.server ?? login?.server ?? defaultServer;
  // A minute of slack so a long-running tail does not start with a dying token.
  const stale =
    !login ||
    login.server !== server ||
    (login.expiresAtMs > 0 && login.expiresAtMs < Date.now() + 60_000);
  if (stale) login = await devLogin(opts.home, server, user, login?.deviceId ?? "");
  const current = { login: login! };
  const renew = async () => {
    try {
      current.login = await devLogin(opts.home, server, user, current.login.deviceId);
      return true;
    } catch {
      return false;
    }
  };
  const bearer: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${current.login.token}`);
    return next(req);
  };
  // A refused token (expired, or the dev server's data was reset) is renewed
  // once for unary calls; streams renew in their reconnect loop.
  const renewing: Interceptor = (next) => async (req) => {
    try {
      return await next(req);
    } catch (err) {
      if (req.stream || ConnectError.from(err).code !== Code.Unauthenticated) throw err;
      if (!(await renew())) throw err;
      return next(req);
    }
  };
  const transport = createGrpcTransport({ baseUrl: server, interceptors: [renewing, bearer] });
  return {
    server,
    home: opts.home,
    get login() {
      return current.login;
    },
    chat: createClient(ChatService, transport),
    renew,
  };
}
