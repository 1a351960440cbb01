/**
 * An async iterable the producer pushes into: the request side of a client
 * stream. Iteration waits while it is empty and ends after `end()`; pushes
 * after `end()` are ignored. Single consumer.
 */
export class Pushable<T> implements AsyncIterable<T> {
  private readonly queue: T[] = [];
  private wake: (() => void) | undefined;
  private done = false;

  push(item: T) {
    if (this.done) return;
    this.queue.push(item);
    this.notify();
  }

  end() {
    this.done = true;
    this.notify();
  }

  private notify() {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    for (;;) {
      if (this.queue.length > 0) {
        yield this.queue.shift() as T;
        continue;
      }
      if (this.done) return;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
  }
}
