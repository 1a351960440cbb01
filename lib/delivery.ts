import type { ServerFrame } from "../gen/chat/v1/chat_service_pb.js";
import type { SoftState } from "./backends/soft-state.js";

/**
 * Sends one frame to the connected devices of the given users: one registry
 * lookup for all of them, then one bus message per edge that carries the
 * frame once plus the device ids. Resolves to the ids of the devices reached:
 * registered on an edge that took the message (one that died keeps its
 * registry entries until they expire, and its devices count as offline, so
 * push reaches them). `onlyDevices` narrows delivery to those device ids.
 */
export async function deliverToUsers(
  soft: Pick<SoftState, "registry" | "bus">,
  frame: ServerFrame,
  userIds: string[],
  onlyDevices?: Set<string>,
): Promise<Set<string>> {
  const locations = await soft.registry.locate(userIds);
  const byEdge = new Map<string, string[]>();
  for (const l of locations) {
    if (onlyDevices && !onlyDevices.has(l.deviceId)) continue;
    const list = byEdge.get(l.edgeId);
    if (list) list.push(l.deviceId);
    else byEdge.set(l.edgeId, [l.deviceId]);
  }
  const connected = new Set<string>();
  await Promise.all(
    [...byEdge].map(async ([edgeId, deviceIds]) => {
      // A literal, not create(): one per event and edge (see "The send path" in docs/ARCHITECTURE.md).
      const took = await soft.bus.publish(edgeId, {
        $typeName: "chat.internal.v1.EdgeMessage",
        kind: {
          case: "delivery",
          value: { $typeName: "chat.internal.v1.Delivery", deviceIds, frame },
        },
      });
      if (took) for (const d of deviceIds) connected.add(d);
    }),
  );
  return connected;
}
