import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { EventSchema } from "../../gen/chat/v1/event_pb.js";
import { TokenError } from "../../lib/auth/tokens.js";
import {
  BackendUnavailableError,
  ConfigError,
  ConversationExistsError,
  CursorRangeError,
  DeviceStateError,
  DuplicateEventError,
  fail,
  NotFoundError,
  NotMemberError,
  SeqConflictError,
  ServerStoppingError,
  toConnectError,
  UnknownConversationError,
  UnknownUserError,
} from "../../lib/errors.js";

describe("toConnectError", () => {
  const original = create(EventSchema, { conversationId: "c", seq: 2n, clientMsgId: "k1" });
  it.each<[string, Error, Code]>([
    ["SeqConflictError", new SeqConflictError("c", 3n, 5n), Code.Aborted],
    ["DuplicateEventError", new DuplicateEventError(original), Code.AlreadyExists],
    ["ConversationExistsError", new ConversationExistsError("c"), Code.AlreadyExists],
    ["UnknownConversationError", new UnknownConversationError("c"), Code.NotFound],
    ["NotMemberError", new NotMemberError("c", "ann"), Code.PermissionDenied],
    ["CursorRangeError", new CursorRangeError("seq beyond head"), Code.InvalidArgument],
    ["UnknownUserError", new UnknownUserError(["x", "y"]), Code.NotFound],
    ["DeviceStateError", new DeviceStateError("device is revoked"), Code.FailedPrecondition],
    ["NotFoundError", new NotFoundError("device not found"), Code.NotFound],
    ["BackendUnavailableError", new BackendUnavailableError("log closed"), Code.Unavailable],
    ["ServerStoppingError", new ServerStoppingError(), Code.Unavailable],
  ])("maps %s to its code, keeping the message and the cause", (_, err, code) => {
    const ce = toConnectError(err);
    expect(ce).toBeInstanceOf(ConnectError);
    expect(ce.code).toBe(code);
    expect(ce.rawMessage).toBe(err.message);
    expect(ce.cause).toBe(err);
  });

  it("writes domain messages for clients", () => {
    expect(toConnectError(new SeqConflictError("c1", 3n, 5n)).rawMessage).toBe(
      "conversation c1: expected seq 3, got 5",
    );
    expect(toConnectError(new DuplicateEventError(original)).rawMessage).toBe(
      "duplicate client_msg_id k1",
    );
    expect(toConnectError(new UnknownUserError(["x", "y"])).rawMessage).toBe(
      "unknown user(s): x, y",
    );
    expect(toConnectError(new NotMemberError("c1", "ann")).rawMessage).toBe(
      "ann is not a member of c1",
    );
  });

  it("passes ConnectErrors through unchanged", () => {
    const ce = fail.denied("nope");
    expect(toConnectError(ce)).toBe(ce);
  });

  it.each<[string, unknown]>([
    ["Error", new Error("SQLITE_CORRUPT at /secret/path/chat.db")],
    ["TypeError", new TypeError("cannot read properties of undefined (reading 'token')")],
    ["ConfigError", new ConfigError("secret config detail")],
    ["TokenError", new TokenError("secret token detail")],
    ["string", "a thrown string with detail"],
    ["undefined", undefined],
  ])("turns an unknown %s into INTERNAL without leaking its message", (_, err) => {
    const ce = toConnectError(err);
    expect(ce.code).toBe(Code.Internal);
    expect(ce.rawMessage).toBe("internal error");
    expect(ce.message).not.toMatch(/secret|SQLITE|token|detail/);
    expect(ce.cause).toBe(err);
  });
});

describe("fail", () => {
  it.each<[keyof typeof fail, Code]>([
    ["invalid", Code.InvalidArgument],
    ["unauthenticated", Code.Unauthenticated],
    ["denied", Code.PermissionDenied],
    ["notFound", Code.NotFound],
    ["exhausted", Code.ResourceExhausted],
    ["precondition", Code.FailedPrecondition],
    ["unavailable", Code.Unavailable],
  ])("%s gives %s", (name, code) => {
    const cause = new Error("why");
    const ce = fail[name]("message for client", cause);
    expect(ce.code).toBe(code);
    expect(ce.rawMessage).toBe("message for client");
    expect(ce.cause).toBe(cause);
  });
});
