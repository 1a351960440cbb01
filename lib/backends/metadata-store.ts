import type { ConversationKind, Role } from "../../gen/chat/v1/event_pb.js";
import type { DevicePlatform } from "../../gen/chat/v1/model_pb.js";

export interface UserRecord {
  userId: string;
  displayName: string;
  createdAtMs: number;
  updatedAtMs: number;
}

export interface DeviceRecord {
  deviceId: string;
  userId: string;
  platform: DevicePlatform;
  displayName: string;
  pushToken: string;
  createdAtMs: number;
  lastActiveAtMs: number;
  /** 0 while the device is live. */
  revokedAtMs: number;
}

export interface ConversationRecord {
  conversationId: string;
  kind: ConversationKind;
  title: string;
  createdBy: string;
  createdAtMs: number;
  headSeq: bigint;
  lastActivityMs: number;
  memberCount: number;
}

export interface MemberRecord {
  conversationId: string;
  userId: string;
  role: Role;
  joinedSeq: bigint;
  joinedAtMs: number;
  /** Seq of the event that removed the user; undefined while a member. */
  leftSeq: bigint | undefined;
  deliveredSeq: bigint;
  readSeq: bigint;
  receiptUpdatedAtMs: number;
}

/** A conversation of a user as sync needs it. */
export interface SyncState {
  conversationId: string;
  joinedSeq: bigint;
  leftSeq: bigint | undefined;
  headSeq: bigint;
  lastActivityMs: number;
  /** The device's delivered cursor, if it ever acknowledged one. */
  deviceCursor: bigint | undefined;
}

/**
 * Users, devices, conversations, memberships and receipt cursors.
 * Conversation and membership rows are projections of committed events
 * (see EventStore.commit); everything else is written here directly.
 *
 * Implementations: SQLite (embedded) and Cassandra.
 */
/** A conversation in a user's list, with the user's membership. */
export interface UserConversation {
  conversation: ConversationRecord;
  member: MemberRecord;
}

export interface MetadataStore {
  /** Creates or updates a user; with createOnly an existing user is left as is. */
  putUser(
    userId: string,
    displayName: string,
    createOnly: boolean,
  ): Promise<{ user: UserRecord; created: boolean }>;
  getUsers(userIds: string[]): Promise<UserRecord[]>;

  /**
   * Registers the device on first use. Throws DeviceStateError when it is
   * revoked or belongs to another user.
   */
  ensureDevice(userId: string, deviceId: string, platform: DevicePlatform): Promise<DeviceRecord>;
  /**
   * Sets the device's platform, name and push token. A push token belongs to
   * one device: registering it here clears it from any other device, of any
   * user (an app install that signs in as someone else keeps its token).
   */
  updateDevice(
    userId: string,
    deviceId: string,
    patch: { platform: DevicePlatform; displayName: string; pushToken: string },
  ): Promise<DeviceRecord>;
  getDevice(deviceId: string): Promise<DeviceRecord | undefined>;
  listDevices(userId: string): Promise<DeviceRecord[]>;
  /** Revokes permanently and clears the push token. Idempotent. */
  revokeDevice(userId: string, deviceId: string): Promise<DeviceRecord>;
  /**
   * Clears the device's push token if it is still `pushToken` (the push
   * service called it stale; a token registered since is kept). True when cleared.
   */
  forgetPushToken(deviceId: string, pushToken: string): Promise<boolean>;
  /** Live devices with push tokens of the given users. */
  pushTargets(userIds: string[]): Promise<DeviceRecord[]>;

  getConversation(conversationId: string): Promise<ConversationRecord | undefined>;
  findDirect(userA: string, userB: string): Promise<string | undefined>;
  findGroupRequest(creatorUserId: string, clientRequestId: string): Promise<string | undefined>;
  /** The user's membership row, also after they left (leftSeq set). */
  getMember(conversationId: string, userId: string): Promise<MemberRecord | undefined>;
  /** Current members. */
  listMembers(conversationId: string): Promise<MemberRecord[]>;
  /**
   * A page of the user's current conversations, most recently active first:
   * `below` holds at most `limit` after the keyset position `after`. Activity
   * moves a conversation ahead of a position already passed, so `rev` says
   * when the page was read; given back in `after`, the next read also
   * returns in `moved` the conversations that became active (or the user's)
   * since and now sort at or ahead of the position, newest first: at most
   * `limit`, the earliest moves first, and then `rev` is the last of those,
   * so the rest come with the read after.
   */
  listUserConversations(
    userId: string,
    limit: number,
    after?: { lastActivityMs: number; conversationId: string; rev?: bigint },
  ): Promise<{ moved: UserConversation[]; below: UserConversation[]; rev: bigint }>;
  /** Every conversation the user is in, or left, with the device's cursor. */
  syncStates(userId: string, deviceId: string): Promise<SyncState[]>;
  /**
   * Moves cursors forward only (read implies delivered); also moves the
   * device's cursor. Returns the new row and whether the user's cursors moved.
   * A former member may still acknowledge up to its removal (leftSeq): that
   * moves only the device's cursor. Beyond it, and for users who never were
   * members, throws NotMemberError and changes nothing.
   */
  advanceReceipt(
    userId: string,
    deviceId: string,
    conversationId: string,
    deliveredSeq: bigint,
    readSeq: bigint,
  ): Promise<{ member: MemberRecord; changed: boolean }>;
  /** Which candidates share at least one current conversation with the user. */
  sharedPeers(userId: string, candidates: string[]): Promise<string[]>;
  close(): Promise<void>;
}
