/**
 * A lean XMPP client over plain TCP for the ejabberd benchmark target.
 *
 * It shares two cores with the server under test, so it does no real XML
 * parsing: a scanner tracks tag depth, cuts out each top-level element of the
 * stream as a string, and the few fields we need are read with indexOf.
 * That is enough because we control all traffic on these streams.
 */
import { connect, type Socket } from "node:net";

/** One logged-in XMPP session (SASL PLAIN, bound resource, stream management on). */
export interface XmppConn {
  /** Send a type=chat message with this body to a bare or full JID. */
  sendChat(to: string, body: string): void;
  /**
   * Join a MUC room (creating/unlocking it as owner if new) with history
   * maxstanzas=0; resolves when joined (self-presence with status 110 received).
   */
  joinRoom(roomJid: string, nick: string): Promise<void>;
  /** Send a type=groupchat message to a room this session has joined. */
  sendGroup(roomJid: string, body: string): void;
  /** Keepalive at the production interval: an SM `<r/>` (whitespace when SM is off). */
  heartbeat(): void;
  /** Graceful: </stream:stream> and wait for close. */
  close(): Promise<void>;
  /** Abrupt: destroy the socket. */
  drop(): void;
  /** True from login until the socket closes. */
  readonly alive: boolean;
  /** The full JID the server bound. */
  readonly jid: string;
}

/** Options for {@link connectXmpp}. */
export interface XmppConnectOptions {
  host: string;
  port: number;
  domain: string;
  user: string;
  password: string;
  resource: string;
  /** Source address, e.g. 127.0.0.7, to spread ephemeral ports. */
  localAddress?: string;
  /** type=chat/normal messages with a body (error bounces are not reported). */
  onChat?: (from: string, body: string) => void;
  /** groupchat messages with a body, including the room's echo of our own. */
  onGroup?: (room: string, fromNick: string, body: string) => void;
  /** Called once when the socket closes after login; err unless close() was asked for. */
  onClose?: (err?: Error) => void;
  /** Login timeout, default 20000. */
  timeoutMs?: number;
  /** Ask for a resumable SM session (XEP-0198 resume='true'); default false. */
  smResume?: boolean;
}

const NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_SM = "urn:xmpp:sm:3";
const MUC_JOIN_RETRIES = 20;

/** Escapes text content and attribute values (we always quote attributes with '). */
function esc(s: string): string {
  if (!/[&<>'"]/.test(s)) return s;
  return s
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/'/g, "&apos;")
    .replace(/"/g, "&quot;");
}

const ENTITY: Record<string, string> = {
  "&amp;": "&",
  "&lt;": "<",
  "&gt;": ">",
  "&apos;": "'",
  "&quot;": '"',
};

function unesc(s: string): string {
  if (s.indexOf("&") < 0) return s;
  return s.replace(/&(?:amp|lt|gt|apos|quot);/g, (m) => ENTITY[m]!);
}

/** Index of the '>' closing the tag that starts at `lt`, skipping quoted values; -1 if cut. */
function tagEnd(buf: string, lt: number): number {
  let quote = 0;
  for (let j = lt + 1; j < buf.length; j++) {
    const c = buf.charCodeAt(j);
    if (quote !== 0) {
      if (c === quote) quote = 0;
    } else if (c === 34 || c === 39) {
      quote = c;
    } else if (c === 62) {
      return j;
    }
  }
  return -1;
}

/** The element name of a start tag beginning at index 0. */
function elName(el: string): string {
  let i = 1;
  while (i < el.length) {
    const c = el.charCodeAt(i);
    if (c === 32 || c === 47 || c === 62 || c === 9 || c === 10 || c === 13) break;
    i++;
  }
  return el.slice(1, i);
}

/** An attribute of the element's start tag (the first tag in `el`), unescaped. */
function attr(el: string, name: string): string | undefined {
  const head = el.slice(0, tagEnd(el, 0) + 1);
  let from = 0;
  for (;;) {
    const i = head.indexOf(name, from);
    if (i < 0) return undefined;
    from = i + name.length;
    const before = head.charCodeAt(i - 1);
    if (before !== 32 && before !== 9 && before !== 10 && before !== 13) continue;
    let j = from;
    while (head.charCodeAt(j) === 32) j++;
    if (head.charCodeAt(j) !== 61) continue; // '='
    j++;
    while (head.charCodeAt(j) === 32) j++;
    const q = head[j];
    if (q !== "'" && q !== '"') continue;
    const end = head.indexOf(q, j + 1);
    if (end < 0) return undefined;
    return unesc(head.slice(j + 1, end));
  }
}

/** Text of the first <name>…</name> child, unescaped; undefined when absent or empty-tag. */
function childText(el: string, name: string): string | undefined {
  const open = el.indexOf(`<${name}`);
  if (open < 0) return undefined;
  const gt = tagEnd(el, open);
  if (gt < 0 || el.charCodeAt(gt - 1) === 47) return undefined;
  const close = el.indexOf(`</${name}>`, gt);
  if (close < 0) return undefined;
  return unesc(el.slice(gt + 1, close));
}

function bareOf(jid: string): string {
  const slash = jid.indexOf("/");
  return (slash < 0 ? jid : jid.slice(0, slash)).toLowerCase();
}

interface PendingJoin {
  nick: string;
  resolve: () => void;
  reject: (err: Error) => void;
  attempts: number;
}

type Phase = "auth" | "bind" | "presence" | "ready" | "closed";

/**
 * Connects, logs in (SASL PLAIN, bind, session if required, SM enable,
 * initial presence) and resolves once the session is fully ready.
 */
export function connectXmpp(opts: XmppConnectOptions): Promise<XmppConn> {
  return new Promise<XmppConn>((resolveLogin, rejectLogin) => {
    const sock: Socket = connect({
      host: opts.host,
      port: opts.port,
      noDelay: true,
      ...(opts.localAddress !== undefined ? { localAddress: opts.localAddress } : {}),
    });
    sock.setEncoding("utf8");

    let phase: Phase = "auth";
    let restarted = false;
    let jid = "";
    let selfJid = "";
    let smOn = false;
    let inbound = 0; // XEP-0198 h: stanzas handled since <enabled/>
    let closing = false;
    let closeNotified = false;
    let nextId = 0;
    const iqWaits = new Map<string, (el: string) => void>();
    const joins = new Map<string, PendingJoin>();

    // Scanner state: the unconsumed text, where scanning resumes, the tag depth
    // (1 = inside <stream:stream>) and where the current top-level element began.
    let buf = "";
    let pos = 0;
    let depth = 0;
    let elStart = -1;

    // Coalesce all writes made in one tick into one syscall.
    let corked = false;
    const uncork = (): void => {
      corked = false;
      sock.uncork();
    };
    const send = (data: string): void => {
      if (sock.destroyed) return;
      if (!corked) {
        corked = true;
        sock.cork();
        process.nextTick(uncork);
      }
      sock.write(data);
    };

    const timer = setTimeout(
      () => failLogin(new Error(`XMPP login timed out for ${opts.user}`)),
      opts.timeoutMs ?? 20_000,
    );

    function failLogin(err: Error): void {
      if (phase === "ready" || phase === "closed") return;
      phase = "closed";
      clearTimeout(timer);
      sock.destroy();
      rejectLogin(err);
    }

    function openStream(): void {
      send(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' " +
          `xmlns:stream='http://etherx.jabber.org/streams' to='${esc(opts.domain)}' ` +
          "version='1.0' xml:lang='en'>",
      );
    }

    function iq(type: "get" | "set", to: string | undefined, payload: string): Promise<string> {
      const id = `q${nextId++}`;
      const toAttr = to === undefined ? "" : ` to='${esc(to)}'`;
      send(`<iq type='${type}' id='${id}'${toAttr}>${payload}</iq>`);
      return new Promise((resolve) => iqWaits.set(id, resolve));
    }

    function onFeatures(el: string): void {
      if (!restarted) {
        if (el.indexOf(">PLAIN<") < 0) {
          failLogin(new Error("server does not offer SASL PLAIN"));
          return;
        }
        const token = Buffer.from(`\0${opts.user}\0${opts.password}`).toString("base64");
        send(`<auth xmlns='${NS_SASL}' mechanism='PLAIN'>${token}</auth>`);
        return;
      }
      phase = "bind";
      const smOffered = el.indexOf(`xmlns='${NS_SM}'`) >= 0 || el.indexOf(`xmlns="${NS_SM}"`) >= 0;
      const sessionAt = el.indexOf("<session");
      const sessionRequired = sessionAt >= 0 && el.indexOf("<optional", sessionAt) < 0;
      const bindBody =
        "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>" +
        `<resource>${esc(opts.resource)}</resource></bind>`;
      void iq("set", undefined, bindBody).then((res) => {
        if (attr(res, "type") !== "result") {
          failLogin(new Error(`bind failed for ${opts.user}: ${res.slice(0, 300)}`));
          return;
        }
        jid = childText(res, "jid") ?? `${opts.user}@${opts.domain}/${opts.resource}`;
        selfJid = jid.toLowerCase();
        const afterSession = (): void => {
          if (smOffered) {
            const resume = opts.smResume === true ? " resume='true'" : "";
            send(`<enable xmlns='${NS_SM}'${resume}/>`);
          } else {
            ready();
          }
        };
        if (sessionRequired) {
          void iq("set", undefined, "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/>").then(
            afterSession,
          );
        } else {
          afterSession();
        }
      });
    }

    // After SM: send initial presence and wait for the server to echo it back,
    // so that messages to our bare JID are routed to us (not bounced) from then on.
    function ready(): void {
      if (phase !== "bind") return;
      phase = "presence";
      send("<presence/>");
    }

    function onSelfPresence(el: string): void {
      if (attr(el, "type") !== undefined || (attr(el, "from") ?? "").toLowerCase() !== selfJid) {
        return;
      }
      phase = "ready";
      clearTimeout(timer);
      resolveLogin(conn);
    }

    function onMessage(el: string): void {
      const type = attr(el, "type");
      if (type === "error") return;
      const body = childText(el, "body");
      if (body === undefined) return;
      const from = attr(el, "from") ?? "";
      if (type === "groupchat") {
        if (opts.onGroup === undefined) return;
        const slash = from.indexOf("/");
        opts.onGroup(
          slash < 0 ? from : from.slice(0, slash),
          slash < 0 ? "" : from.slice(slash + 1),
          body,
        );
      } else if (opts.onChat !== undefined) {
        opts.onChat(from, body);
      }
    }

    function onPresence(el: string): void {
      if (joins.size === 0) return;
      const from = attr(el, "from");
      if (from === undefined) return;
      const room = bareOf(from);
      const join = joins.get(room);
      if (join === undefined) return;
      if (attr(el, "type") === "error") {
        // A concurrent joiner can hit the room while its creator still holds it locked.
        const retriable = el.indexOf("<item-not-found") >= 0 || el.indexOf("locked") >= 0;
        if (retriable && join.attempts < MUC_JOIN_RETRIES) {
          join.attempts++;
          setTimeout(() => sendJoin(room, join.nick), 100 * join.attempts);
          return;
        }
        joins.delete(room);
        join.reject(new Error(`join ${room} failed: ${el.slice(0, 300)}`));
        return;
      }
      if (el.indexOf("code='110'") < 0 && el.indexOf('code="110"') < 0) return;
      joins.delete(room);
      if (el.indexOf("code='201'") >= 0 || el.indexOf('code="201"') >= 0) {
        // We created the room: accept the default configuration (instant room) to unlock it.
        const form =
          "<query xmlns='http://jabber.org/protocol/muc#owner'>" +
          "<x xmlns='jabber:x:data' type='submit'/></query>";
        void iq("set", room, form).then((res) => {
          if (attr(res, "type") === "result") join.resolve();
          else join.reject(new Error(`unlock ${room} failed: ${res.slice(0, 300)}`));
        });
      } else {
        join.resolve();
      }
    }

    function onIq(el: string): void {
      const type = attr(el, "type");
      const id = attr(el, "id") ?? "";
      if (type === "result" || type === "error") {
        const wait = iqWaits.get(id);
        if (wait !== undefined) {
          iqWaits.delete(id);
          wait(el);
        }
        return;
      }
      const to = attr(el, "from");
      const toAttr = to === undefined ? "" : ` to='${esc(to)}'`;
      if (el.indexOf("urn:xmpp:ping") >= 0) {
        send(`<iq type='result' id='${esc(id)}'${toAttr}/>`);
      } else {
        send(
          `<iq type='error' id='${esc(id)}'${toAttr}><error type='cancel'>` +
            "<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
        );
      }
    }

    function onElement(el: string): void {
      const name = elName(el);
      switch (name) {
        case "message":
          if (smOn) inbound++;
          onMessage(el);
          return;
        case "presence":
          if (smOn) inbound++;
          if (phase === "presence") onSelfPresence(el);
          else onPresence(el);
          return;
        case "iq":
          if (smOn) inbound++;
          onIq(el);
          return;
        case "r":
          send(`<a xmlns='${NS_SM}' h='${inbound >>> 0}'/>`);
          return;
        case "a":
          return;
        case "enabled":
          smOn = true;
          inbound = 0;
          ready();
          return;
        case "failed":
          // SM refused: carry on without it rather than fail the login.
          ready();
          return;
        case "stream:features":
          onFeatures(el);
          return;
        case "success":
          // The server's new stream header follows; scan it from depth 0.
          restarted = true;
          depth = 0;
          openStream();
          return;
        case "failure":
          failLogin(new Error(`SASL failed for ${opts.user}: ${el.slice(0, 200)}`));
          return;
        case "stream:error": {
          const err = new Error(`stream error: ${el.slice(0, 300)}`);
          if (phase === "ready") {
            notifyClose(err);
            sock.destroy();
          } else {
            failLogin(err);
          }
          return;
        }
        default:
          return;
      }
    }

    function scan(): void {
      while (!sock.destroyed) {
        const lt = buf.indexOf("<", pos);
        if (lt < 0) {
          pos = buf.length;
          break;
        }
        const gt = tagEnd(buf, lt);
        if (gt < 0) {
          pos = lt;
          break;
        }
        pos = gt + 1;
        const c = buf.charCodeAt(lt + 1);
        if (c === 63 || c === 33) continue; // <?xml …?> or <!-- … -->
        if (c === 47) {
          depth--;
          if (depth === 1 && elStart >= 0) {
            const el = buf.slice(elStart, pos);
            elStart = -1;
            onElement(el);
          } else if (depth <= 0) {
            depth = 0;
            closing = true; // server ended the stream; answer and let the socket close
            sock.end("</stream:stream>");
          }
          continue;
        }
        if (depth === 0) {
          depth = 1; // <stream:stream …>
          continue;
        }
        const selfClosing = buf.charCodeAt(gt - 1) === 47;
        if (depth === 1) {
          if (selfClosing) onElement(buf.slice(lt, pos));
          else {
            elStart = lt;
            depth = 2;
          }
        } else if (!selfClosing) {
          depth++;
        }
      }
      // Drop consumed text; keep an element still being received.
      const keep = elStart >= 0 ? elStart : pos;
      if (keep > 0) {
        buf = buf.slice(keep);
        pos -= keep;
        if (elStart >= 0) elStart = 0;
      }
    }

    function notifyClose(err?: Error): void {
      if (closeNotified) return;
      closeNotified = true;
      if (opts.onClose !== undefined) opts.onClose(err);
    }

    sock.on("connect", openStream);
    sock.on("data", (chunk: string) => {
      buf += chunk;
      scan();
    });
    sock.on("error", (err) => {
      if (phase === "ready") {
        if (!closing) notifyClose(err);
      } else {
        failLogin(err);
      }
    });
    sock.on("close", () => {
      const wasReady = phase === "ready";
      failLogin(new Error(`connection closed during login of ${opts.user}`));
      phase = "closed";
      for (const [room, join] of joins) join.reject(new Error(`closed while joining ${room}`));
      joins.clear();
      if (wasReady) notifyClose(closing ? undefined : new Error("connection closed by server"));
    });

    function sendJoin(room: string, nick: string): void {
      send(
        `<presence to='${esc(room)}/${esc(nick)}'><x xmlns='http://jabber.org/protocol/muc'>` +
          "<history maxstanzas='0'/></x></presence>",
      );
    }

    const conn: XmppConn = {
      sendChat(to, body) {
        send(`<message to='${esc(to)}' type='chat'><body>${esc(body)}</body></message>`);
      },
      joinRoom(roomJid, nick) {
        const room = bareOf(roomJid);
        return new Promise<void>((resolve, reject) => {
          if (phase !== "ready") {
            reject(new Error("not connected"));
            return;
          }
          joins.set(room, { nick, resolve, reject, attempts: 0 });
          sendJoin(room, nick);
        });
      },
      sendGroup(roomJid, body) {
        send(`<message to='${esc(roomJid)}' type='groupchat'><body>${esc(body)}</body></message>`);
      },
      heartbeat() {
        send(smOn ? `<r xmlns='${NS_SM}'/>` : " ");
      },
      close() {
        return new Promise<void>((resolve) => {
          if (sock.destroyed) {
            resolve();
            return;
          }
          closing = true;
          const t = setTimeout(() => sock.destroy(), 5000);
          sock.once("close", () => {
            clearTimeout(t);
            resolve();
          });
          sock.end("</stream:stream>");
        });
      },
      drop() {
        closing = true;
        sock.destroy();
      },
      get alive() {
        return phase === "ready" && !sock.destroyed;
      },
      get jid() {
        return jid;
      },
    };
  });
}
