import { Code, ConnectError } from "@connectrpc/connect";
import type { Event } from "../gen/chat/v1/event_pb.js";

/** Invalid configuration; raised before anything starts. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/** The event's seq is not the conversation's next one (a hole or a reuse was prevented). */
export class SeqConflictError extends Error {
  override name = "SeqConflictError";
  constructor(
    readonly conversationId: string,
    readonly expected: bigint,
    readonly got: bigint,
  ) {
    super(`conversation ${conversationId}: expected seq ${expected}, got ${got}`);
  }
}

/** The (conversation, sender, client_msg_id) was used before; `original` is the first event. */
export class DuplicateEventError extends Error {
  override name = "DuplicateEventError";
  constructor(readonly original: Event) {
    super(`duplicate client_msg_id ${original.clientMsgId}`);
  }
}

/** A direct chat for the pair, or a group for the creator's request id, exists already. */
export class ConversationExistsError extends Error {
  override name = "ConversationExistsError";
  constructor(readonly conversationId: string) {
    super(`conversation ${conversationId} exists`);
  }
}

export class UnknownConversationError extends Error {
  override name = "UnknownConversationError";
  constructor(readonly conversationId: string) {
    super(`conversation ${conversationId} not found`);
  }
}

export class NotMemberError extends Error {
  override name = "NotMemberError";
  constructor(
    readonly conversationId: string,
    readonly userId: string,
  ) {
    super(`${userId} is not a member of ${conversationId}`);
  }
}

export class CursorRangeError extends Error {
  override name = "CursorRangeError";
}

export class UnknownUserError extends Error {
  override name = "UnknownUserError";
  constructor(readonly userIds: string[]) {
    super(`unknown user(s): ${userIds.join(", ")}`);
  }
}

export class DeviceStateError extends Error {
  override name = "DeviceStateError";
}

export class NotFoundError extends Error {
  override name = "NotFoundError";
}

/** The backend could not be reached or failed; the operation may be retried. */
export class BackendUnavailableError extends Error {
  override name = "BackendUnavailableError";
}

/**
 * The server is shutting down: what it ends for that is answered UNAVAILABLE,
 * so clients reconnect elsewhere. Expected, so not logged per call.
 */
export class ServerStoppingError extends Error {
  override name = "ServerStoppingError";
  constructor() {
    super("server is shutting down");
  }
}

const codes: [new (...args: never[]) => Error, Code][] = [
  [SeqConflictError, Code.Aborted],
  [DuplicateEventError, Code.AlreadyExists],
  [ConversationExistsError, Code.AlreadyExists],
  [UnknownConversationError, Code.NotFound],
  [NotMemberError, Code.PermissionDenied],
  [CursorRangeError, Code.InvalidArgument],
  [UnknownUserError, Code.NotFound],
  [DeviceStateError, Code.FailedPrecondition],
  [NotFoundError, Code.NotFound],
  [BackendUnavailableError, Code.Unavailable],
  [ServerStoppingError, Code.Unavailable],
];

/**
 * Converts anything thrown inside a handler into a ConnectError for the
 * boundary. Domain errors keep their message (it is written for clients);
 * unknown errors become INTERNAL with the detail only in `cause`.
 */
export function toConnectError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  for (const [type, code] of codes) {
    if (err instanceof type) return new ConnectError(err.message, code, undefined, undefined, err);
  }
  return new ConnectError("internal error", Code.Internal, undefined, undefined, err);
}

/**
 * Connect reports input it cannot read (a message that does not decode, a
 * body that does not decompress) as INTERNAL, the gRPC convention. Where the
 * input is the client's, that is the client's fault: INVALID_ARGUMENT with
 * `message`, the original in `cause`. Every other code passes through.
 */
export function asClientsFault(err: unknown, message: string): ConnectError {
  const ce = ConnectError.from(err);
  if (ce.code !== Code.Internal) return ce;
  return new ConnectError(message, Code.InvalidArgument, undefined, undefined, err);
}

/** Shorthand for the common boundary errors. */
export const fail = {
  invalid: (msg: string, cause?: unknown) =>
    new ConnectError(msg, Code.InvalidArgument, undefined, undefined, cause),
  unauthenticated: (msg: string, cause?: unknown) =>
    new ConnectError(msg, Code.Unauthenticated, undefined, undefined, cause),
  denied: (msg: string, cause?: unknown) =>
    new ConnectError(msg, Code.PermissionDenied, undefined, undefined, cause),
  notFound: (msg: string, cause?: unknown) =>
    new ConnectError(msg, Code.NotFound, undefined, undefined, cause),
  exhausted: (msg: string, cause?: unknown) =>
    new ConnectError(msg, Code.ResourceExhausted, undefined, undefined, cause),
  precondition: (msg: string, cause?: unknown) =>
    new ConnectError(msg, Code.FailedPrecondition, undefined, undefined, cause),
  unavailable: (msg: string, cause?: unknown) =>
    new ConnectError(msg, Code.Unavailable, undefined, undefined, cause),
};
