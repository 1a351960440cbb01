/**
 * Runs tasks one at a time per key, in call order; tasks under different
 * keys run concurrently. Used to serialize everything that must see a
 * conversation's state in order (authorize, allocate seq, enqueue).
 */
export function createKeyedQueue() {
  const tails = new Map<string, Promise<unknown>>();
  return {
    run<T>(key: string, task: () => Promise<T>): Promise<T> {
      const prev = tails.get(key) ?? Promise.resolve();
      const result = prev.then(task, task);
      const tail = result.then(
        () => undefined,
        () => undefined,
      );
      tails.set(key, tail);
      void tail.then(() => {
        if (tails.get(key) === tail) tails.delete(key);
      });
      return result;
    },
    /** Resolves once every task queued so far has settled. */
    async idle(): Promise<void> {
      await Promise.all([...tails.values()]);
    },
    get size() {
      return tails.size;
    },
  };
}
