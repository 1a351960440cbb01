/**
 * Sets `key` as the most recently set entry of `map` and, past `max`
 * entries, deletes the least recently set one. For caches whose entries can
 * be read again from where they came from.
 */
export function setBounded<K, V>(map: Map<K, V>, key: K, value: V, max: number): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > max) map.delete(map.keys().next().value as K);
}
