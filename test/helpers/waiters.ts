/**
 * Waits for conditions on state that changes by events: `until(pred)`
 * resolves once `pred` holds, checked now and at every `poke()` the code that
 * changes the state makes; it rejects after `timeoutMs`, naming `what`.
 */
export function createWaiters() {
  const waiters = new Set<() => void>();
  return {
    poke() {
      for (const w of [...waiters]) w();
    },
    until(pred: () => boolean, timeoutMs = 5000, what = "condition"): Promise<void> {
      return new Promise<void>((resolve, reject) => {
        if (pred()) return resolve();
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`timed out waiting for ${what}`));
        }, timeoutMs);
        const check = () => {
          if (!pred()) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve();
        };
        waiters.add(check);
      });
    },
  };
}
