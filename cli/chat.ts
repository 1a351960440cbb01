import { parseArgs } from "node:util";
import { ConnectError } from "@connectrpc/connect";
import { CliError, defaultServer, devLogin, openAccount } from "./account.js";
import * as commands from "./commands.js";
import { tail } from "./tail.js";
import { talk } from "./talk.js";

const usage = `usage: npm run chat -- <command> [flags]

commands:
  login <user> [--device <id>]   get a dev token (dev mode servers only) and save it
  whoami                         show the saved login in use
  conversations                  list conversations with unread counts
  dm <user>                      get or create the direct chat with a user; prints its id
  group <title> <user...>        create a group; prints its id
  send <target> <text...>        send a message; target is a conversation id or @user
  history <target> [--limit n]   show the newest events (default 20)
  read <target>                  mark everything read
  members <target>               list members and roles
  tail                           follow every conversation live (Ctrl-C to stop)
  talk <target>                  chat interactively in one conversation

flags:
  --server <url>   server address (default ${defaultServer}, or the saved login's)
  --as <user>      which saved login to use (logs in by itself on dev mode servers)
  --home <dir>     where logins and cursors are kept (default ./data/cli)
`;

const out = (line: string) => process.stdout.write(`${line}\n`);
const note = (line: string) => process.stderr.write(`${line}\n`);

function fail(message: string): never {
  throw new CliError(message);
}

/** Positional arguments each command needs, and how to name them in an error. */
const arity: Record<string, [number, string]> = {
  login: [1, "a user name"],
  whoami: [0, ""],
  conversations: [0, ""],
  dm: [1, "a user"],
  group: [2, "a title and at least one user"],
  send: [2, "a target and a text"],
  history: [1, "a target"],
  read: [1, "a target"],
  members: [1, "a target"],
  tail: [0, ""],
  talk: [1, "a target"],
};

async function main(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      server: { type: "string" },
      as: { type: "string" },
      home: { type: "string", default: "./data/cli" },
      device: { type: "string" },
      limit: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  const [command, ...args] = positionals;
  if (!command || values.help) {
    out(usage);
    return;
  }
  const home = values.home;
  const wants = arity[command];
  if (!wants) fail(`unknown command "${command}"\n\n${usage}`);
  if (args.length < wants[0]) fail(`${command} needs ${wants[1]}\n\n${usage}`);

  if (command === "login") {
    const saved = await devLogin(home, values.server ?? defaultServer, args[0]!, values.device);
    out(`logged in as ${saved.userId} (device ${saved.deviceId}) on ${saved.server}`);
    return;
  }
  if (values.device !== undefined) fail("--device applies to login only");
  const limit = Number(values.limit ?? "20");
  if (!Number.isInteger(limit) || limit < 1 || limit > 500) fail("--limit must be 1-500");

  const account = await openAccount({ home, server: values.server, as: values.as });
  switch (command) {
    case "whoami":
      return commands.whoami(account, out);
    case "conversations":
      return commands.conversations(account, out);
    case "dm":
      return commands.dm(account, out, args[0]!);
    case "group":
      return commands.group(account, out, args[0]!, args.slice(1));
    case "send":
      return commands.send(account, out, args[0]!, args.slice(1).join(" "));
    case "history":
      return commands.history(account, out, args[0]!, limit);
    case "read":
      return commands.read(account, out, args[0]!);
    case "members":
      return commands.members(account, out, args[0]!);
    case "tail": {
      const t = tail(account, out, note);
      const stopped = new Promise<void>((resolve) => {
        process.once("SIGINT", resolve);
        process.once("SIGTERM", resolve);
      });
      await Promise.race([t.done, stopped]).finally(() => t.stop());
      return;
    }
    case "talk":
      return talk(account, args[0]!, note);
  }
}

try {
  await main(process.argv.slice(2));
  process.exit(0);
} catch (err) {
  if (err instanceof ConnectError || err instanceof CliError) note(`error: ${err.message}`);
  else if (
    err instanceof TypeError &&
    "code" in err &&
    String(err.code).startsWith("ERR_PARSE_ARGS")
  ) {
    note(`error: ${err.message}\n\n${usage}`);
  } else note(`error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exit(1);
}
