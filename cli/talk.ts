import { randomUUID } from "node:crypto";
import readline from "node:readline";
import { Code, ConnectError } from "@connectrpc/connect";
import { HistoryDirection, type ServerFrame } from "../gen/chat/v1/chat_service_pb.js";
import type { Event } from "../gen/chat/v1/event_pb.js";
import type { Account } from "./account.js";
import type { Print } from "./commands.js";
import { CursorFile } from "./cursors.js";
import { Directory, labelOf, resolveTarget } from "./directory.js";
import { codeName, eventLine, Notices } from "./format.js";
import { isTransient, Live } from "./live.js";

/** Typing is re-sent at most this often while keys are pressed. */
const typingEveryMs = 2000;
/** Tries per message before a transient failure is reported as final. */
const sendTries = 5;

interface Outgoing {
  clientMsgId: string;
  text: string;
  tries: number;
}

/**
 * Resolves the target; a peer without an account yet is waited for, so two
 * people can start `talk` in either order.
 */
async function openTarget(account: Account, target: string, status: Print): Promise<string> {
  for (let told = false; ; told = true) {
    try {
      return await resolveTarget(account, target);
    } catch (err) {
      if (!target.startsWith("@") || ConnectError.from(err).code !== Code.NotFound) throw err;
      const peer = target.slice(1);
      if (!told) {
        status(
          `${peer} has no account yet; waiting for them to log in (npm run chat -- login ${peer})`,
        );
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

/**
 * An interactive chat in one conversation: recent history, then live
 * events; each line read from stdin is sent. Resolves when stdin ends (after
 * every line was sent) or on Ctrl-C.
 */
export async function talk(account: Account, target: string, status: Print): Promise<void> {
  const me = account.login.userId;
  const conversationId = await openTarget(account, target, status);
  const conversation = await new Directory(account).get(conversationId);
  const label = labelOf(conversation, me);
  const peers = conversation.members.map((m) => m.userId).filter((u) => u !== me);
  const cursors = new CursorFile(account.home, me);
  const notices = new Notices(me);

  const tty = Boolean(process.stdin.isTTY && process.stdout.isTTY);
  let rl: readline.Interface | undefined;
  // Incoming lines are printed above the prompt without losing what the user is typing.
  const above = (write: (line: string) => void) => (line: string) => {
    if (!rl || !tty) {
      write(line);
      return;
    }
    readline.cursorTo(process.stdout, 0);
    readline.clearLine(process.stdout, 0);
    write(line);
    rl.prompt(true);
  };
  const print = above((line) => process.stdout.write(`${line}\n`));
  const note = above(status);

  const shown = new Set<bigint>();
  let newest = 0n;
  let readMarked = 0n;
  const show = (e: Event) => {
    if (e.conversationId !== conversationId || shown.has(e.seq)) return;
    shown.add(e.seq);
    if (e.seq > newest) newest = e.seq;
    notices.posted(e);
    print(eventLine(e));
    cursors.advance(conversationId, e.seq);
  };
  const markRead = () => {
    if (newest <= readMarked) return;
    if (live.send({ action: { case: "markRead", value: { conversationId, seq: newest } } })) {
      readMarked = newest;
    }
  };

  // One message in flight at a time keeps the user's order, retries included.
  const queue: Outgoing[] = [];
  let inflight: Outgoing | undefined;
  let retryTimer: NodeJS.Timeout | undefined;
  let inputEnded = false;
  let finish: () => void = () => undefined;
  const finished = new Promise<void>((resolve) => {
    finish = resolve;
  });
  const pump = () => {
    const next = queue[0];
    if (inflight || retryTimer || !next) return;
    const sent = live.send({
      frameId: next.clientMsgId,
      action: {
        case: "send",
        value: { conversationId, clientMsgId: next.clientMsgId, content: { text: next.text } },
      },
    });
    if (sent) inflight = next;
  };
  const settle = () => {
    queue.shift();
    inflight = undefined;
    if (inputEnded && queue.length === 0) finish();
    pump();
  };

  const onFrame = (f: ServerFrame) => {
    const c = f.frame;
    switch (c.case) {
      case "sync":
        if (c.value.conversationId !== conversationId) return;
        for (const e of c.value.events) show(e);
        markRead();
        return;
      case "syncComplete":
        note(
          `connected; ${peers.length ? `talking with ${peers.join(", ")}` : "no one else here"}`,
        );
        if (peers.length > 0) {
          live.send({ action: { case: "watchPresence", value: { userIds: peers } } });
        }
        pump();
        return;
      case "event":
        show(c.value);
        markRead();
        return;
      case "sendAck": {
        const e = c.value.event;
        if (!e) return;
        if (inflight && e.clientMsgId === inflight.clientMsgId) settle();
        show(e);
        markRead();
        return;
      }
      case "error": {
        const err = c.value;
        if (!inflight || err.clientMsgId !== inflight.clientMsgId) {
          note(`server refused a frame: [${codeName(err.code)}] ${err.message}`);
          return;
        }
        const failed = inflight;
        if (isTransient(err.code) && ++failed.tries < sendTries) {
          inflight = undefined;
          retryTimer = setTimeout(
            () => {
              retryTimer = undefined;
              pump();
            },
            500 * 2 ** failed.tries,
          );
          return;
        }
        print(`not sent: "${failed.text}": [${codeName(err.code)}] ${err.message}`);
        settle();
        return;
      }
      case "receipt": {
        if (c.value.conversationId !== conversationId) return;
        const line = notices.receipt(c.value);
        if (line) print(line);
        return;
      }
      case "typing": {
        if (c.value.conversationId !== conversationId) return;
        const line = notices.typingFrame(c.value);
        if (line) print(line);
        return;
      }
      case "presence": {
        if (!peers.includes(c.value.userId)) return;
        const line = notices.presenceFrame(c.value);
        if (line) print(line);
        return;
      }
      default:
    }
  };

  status(
    `talking in ${label} (${conversationId}); type and press Enter, Ctrl-D or Ctrl-C to leave`,
  );
  const recent = await account.chat.getHistory({
    conversationId,
    direction: HistoryDirection.BACKWARD,
    limit: 10,
  });
  for (const e of recent.events) show(e);
  if (recent.headSeq > newest) newest = recent.headSeq;

  const live = new Live({
    account,
    // Resume this conversation after what is on screen; others are not shown here.
    cursors: () => [{ conversationId, seq: newest }],
    // A stream that dropped may have lost the in-flight frame: send it again, same id.
    onOpen: () => {
      inflight = undefined;
      readMarked = 0n;
    },
    onFrame,
    status: note,
  });

  // Created only now: readline starts reading at once, and no line may come before its listener.
  rl = readline.createInterface({
    input: process.stdin,
    ...(tty ? { output: process.stdout } : {}),
    terminal: tty,
    prompt: "> ",
  });
  let typingSentAt = 0;
  rl.on("line", (line) => {
    if (tty) {
      // The typed line comes back as an event with its seq; drop the raw echo.
      readline.moveCursor(process.stdout, 0, -1);
      readline.clearLine(process.stdout, 0);
    }
    if (typingSentAt) {
      typingSentAt = 0;
      live.send({ action: { case: "setTyping", value: { conversationId, typing: false } } });
    }
    const text = line.trim();
    if (text) queue.push({ clientMsgId: randomUUID(), text, tries: 0 });
    pump();
    if (tty) rl?.prompt();
  });
  if (tty) {
    process.stdin.on("keypress", (_s: string, key: readline.Key | undefined) => {
      if (!key || key.ctrl || key.name === "return" || key.name === "enter") return;
      const now = Date.now();
      if (now - typingSentAt < typingEveryMs) return;
      if (live.send({ action: { case: "setTyping", value: { conversationId, typing: true } } })) {
        typingSentAt = now;
      }
    });
  }
  const quit = () => {
    if (queue.length > 0) note(`leaving with ${queue.length} unsent message(s)`);
    finish();
  };
  rl.on("close", () => {
    inputEnded = true;
    if (queue.length === 0) finish();
  });
  rl.on("SIGINT", quit);
  process.once("SIGINT", quit);
  process.once("SIGTERM", quit);
  if (tty) rl.prompt();

  const fatal = live.start().then(
    () => undefined,
    (err: unknown) => err,
  );
  const outcome = await Promise.race([finished.then(() => undefined), fatal]);
  clearTimeout(retryTimer);
  await live.stop();
  cursors.save();
  rl.close();
  if (outcome) throw outcome;
}
