import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { newId } from "../../lib/ids.js";
import {
  checkClientKey,
  checkConversationId,
  checkEmoji,
  checkExternalId,
  checkName,
  checkText,
  checkUserIds,
  pageSize,
  utf8Length,
} from "../../lib/validate.js";

/** Runs `fn` and returns the ConnectError code it threw (undefined when it did not throw). */
const codeOf = (fn: () => unknown): Code | undefined => {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConnectError);
    return (err as ConnectError).code;
  }
  return undefined;
};

const invalid = (fn: () => unknown) => expect(codeOf(fn)).toBe(Code.InvalidArgument);

describe("checkExternalId", () => {
  it.each(["a", "user_1", "ann@example.com", "tenant:42", "a.b-c", "x".repeat(128)])(
    "accepts %s",
    (id) => {
      expect(checkExternalId("user_id", id)).toBe(id);
    },
  );

  it.each(["", "x".repeat(129), "has space", "ünïcode", "slash/y", "semi;colon", "tab\t", "#"])(
    "rejects %j",
    (id) => {
      invalid(() => checkExternalId("user_id", id));
    },
  );

  it("names the field in the message", () => {
    expect(() => checkExternalId("peer_user_id", "")).toThrow(/peer_user_id/);
  });
});

describe("checkConversationId", () => {
  it("accepts server-minted conversation ids", () => {
    const id = newId("c_");
    expect(checkConversationId(id)).toBe(id);
  });

  it.each([
    ["another kind", () => newId("e_")],
    ["upper case", () => newId("c_").toUpperCase()],
    ["too short", () => newId("c_").slice(0, -1)],
    ["too long", () => `${newId("c_")}0`],
    ["empty", () => ""],
    ["a partner-style id", () => "general"],
  ])("rejects %s", (_, make) => {
    invalid(() => checkConversationId(make()));
  });

  it("names a custom field", () => {
    expect(() => checkConversationId("x", "target_id")).toThrow(/target_id/);
  });
});

describe("checkClientKey", () => {
  it("allows empty keys only when optional", () => {
    expect(checkClientKey("client_msg_id", "", false)).toBe("");
    invalid(() => checkClientKey("client_msg_id", "", true));
  });

  it("accepts up to 64 characters of the key alphabet", () => {
    expect(checkClientKey("k", "a".repeat(64), true)).toHaveLength(64);
    expect(checkClientKey("k", "uuid:1234-ab_cd.ef", true)).toBe("uuid:1234-ab_cd.ef");
    invalid(() => checkClientKey("k", "a".repeat(65), true));
    invalid(() => checkClientKey("k", "with@at", false));
    invalid(() => checkClientKey("k", "with space", false));
  });
});

describe("utf8Length", () => {
  const samples = [
    "",
    "ascii",
    "é",
    "日本語",
    "👍",
    "a👍b",
    "👨‍👩‍👧‍👦",
    "mixed é 日 👍 text",
    // Past the short-string fast path.
    "é".repeat(100),
    "👍".repeat(60),
    "x".repeat(1000),
  ];
  it.each(samples)("counts %j like Buffer.byteLength", (s) => {
    expect(utf8Length(s)).toBe(Buffer.byteLength(s, "utf8"));
  });
});

describe("checkText", () => {
  const opts = { min: 1, maxBytes: 10 };

  it("accepts well-formed text within the byte limit", () => {
    expect(checkText("text", "hello", opts)).toBe("hello");
    // Five two-byte characters are exactly ten bytes.
    expect(checkText("text", "ééééé", opts)).toBe("ééééé");
    // Two four-byte emoji plus two bytes.
    expect(checkText("text", "👍👍ab", opts)).toBe("👍👍ab");
  });

  it("counts bytes, not characters", () => {
    invalid(() => checkText("text", "éééééé", opts));
    invalid(() => checkText("text", "日本語日", opts));
    invalid(() => checkText("text", "👍👍abc", opts));
    expect(() => checkText("text", "x".repeat(11), opts)).toThrow(/exceeds 10 bytes/);
  });

  it("rejects lone surrogates, which are not encodable as UTF-8", () => {
    expect(() => checkText("text", "a\ud800b", opts)).toThrow(/not valid UTF-8/);
    invalid(() => checkText("text", "\udc00", opts));
    invalid(() => checkText("text", "ok\ud83d", opts));
  });

  it("rejects NUL", () => {
    expect(() => checkText("text", "a\u0000b", opts)).toThrow(/NUL/);
  });

  it("enforces the minimum length", () => {
    expect(() => checkText("text", "", opts)).toThrow(/text is required/);
    expect(checkText("text", "", { min: 0, maxBytes: 10 })).toBe("");
  });
});

describe("checkName", () => {
  it("trims and returns the name", () => {
    expect(checkName("title", "  Team  ", 10)).toBe("Team");
  });

  it("counts characters as code points", () => {
    expect(checkName("title", "👍".repeat(5), 5)).toBe("👍".repeat(5));
    invalid(() => checkName("title", "👍".repeat(6), 5));
    expect(() => checkName("title", "abcdef", 5)).toThrow(/exceeds 5 characters/);
  });

  it("rejects blank names, control characters and lone surrogates", () => {
    expect(() => checkName("title", "   ", 10)).toThrow(/title is required/);
    invalid(() => checkName("title", "", 10));
    invalid(() => checkName("title", "a\u0007b", 10));
    invalid(() => checkName("title", "line\nbreak", 10));
    invalid(() => checkName("title", "a\ud800", 10));
  });
});

describe("checkEmoji", () => {
  it.each(["👍", "❤️", "👨‍👩‍👧‍👦", "🇩🇪", ":+1:", "a"])("accepts %s", (e) => {
    expect(checkEmoji(e)).toBe(e);
  });

  it.each(["", "a b", "👍 ", "\t", "\u0000", "\ud83d", "👍".repeat(9)])("rejects %j", (e) => {
    invalid(() => checkEmoji(e));
  });
});

describe("checkUserIds", () => {
  it("validates and deduplicates, keeping first-seen order", () => {
    expect(checkUserIds("member_user_ids", ["b", "a", "b", "c", "a"], 10)).toEqual(["b", "a", "c"]);
  });

  it("refuses too many entries with RESOURCE_EXHAUSTED", () => {
    expect(codeOf(() => checkUserIds("ids", ["a", "b", "c"], 2))).toBe(Code.ResourceExhausted);
  });

  it("refuses a bad id with INVALID_ARGUMENT", () => {
    invalid(() => checkUserIds("ids", ["ok", "not ok"], 10));
  });
});

describe("pageSize", () => {
  it("maps 0 to the default, keeps values up to the max, refuses more", () => {
    expect(pageSize("page_size", 0, 50, 200)).toBe(50);
    expect(pageSize("page_size", 1, 50, 200)).toBe(1);
    expect(pageSize("page_size", 200, 50, 200)).toBe(200);
    expect(() => pageSize("page_size", 201, 50, 200)).toThrow(/page_size must be at most 200/);
    invalid(() => pageSize("page_size", 201, 50, 200));
  });
});
