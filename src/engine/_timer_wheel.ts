/**
 * One timer for many deadlines: the safety-net polls of every open database of a store are
 * kept in slots of {@linkcode TimerWheel} granularity, and a single `setTimeout` is armed for
 * the earliest slot. A thousand databases then cost one timer, not a thousand, and the polls
 * that fall due together run together.
 *
 * @module
 */

/** Deadlines keyed by an object, run by one timer at a fixed granularity. */
export class TimerWheel<K extends object> {
  #tickMs: number;
  /** Slot number (due time ÷ tick) → the callbacks due in it. */
  #slots = new Map<number, Map<K, () => void>>();
  #slotOf = new Map<K, number>();
  #timer?: ReturnType<typeof setTimeout>;
  #armedSlot?: number;

  /** `tickMs`: how finely deadlines are kept; a callback runs at most this late. */
  constructor(tickMs = 50) {
    this.#tickMs = tickMs;
  }

  /** Deadlines pending. */
  get size(): number {
    return this.#slotOf.size;
  }

  /** Runs `run` in about `delayMs`, replacing what was scheduled for `key`. */
  schedule(key: K, delayMs: number, run: () => void): void {
    this.cancel(key);
    const slot = Math.ceil((performance.now() + Math.max(0, delayMs)) / this.#tickMs);
    let due = this.#slots.get(slot);
    if (!due) this.#slots.set(slot, due = new Map());
    due.set(key, run);
    this.#slotOf.set(key, slot);
    if (this.#armedSlot === undefined || slot < this.#armedSlot) this.#arm(slot);
  }

  /** Forgets what was scheduled for `key`. */
  cancel(key: K): void {
    const slot = this.#slotOf.get(key);
    if (slot === undefined) return;
    this.#slotOf.delete(key);
    const due = this.#slots.get(slot)!;
    due.delete(key);
    if (due.size === 0) this.#slots.delete(slot);
  }

  /** Forgets everything and stops the timer. */
  close(): void {
    clearTimeout(this.#timer);
    this.#timer = this.#armedSlot = undefined;
    this.#slots.clear();
    this.#slotOf.clear();
  }

  #arm(slot: number): void {
    clearTimeout(this.#timer);
    this.#armedSlot = slot;
    this.#timer = setTimeout(
      () => this.#fire(),
      Math.max(0, slot * this.#tickMs - performance.now()),
    );
  }

  #fire(): void {
    this.#timer = this.#armedSlot = undefined;
    const now = Math.floor(performance.now() / this.#tickMs);
    const ready: Array<() => void> = [];
    for (const [slot, due] of this.#slots) {
      if (slot > now) continue;
      this.#slots.delete(slot);
      for (const [key, run] of due) {
        this.#slotOf.delete(key);
        ready.push(run);
      }
    }
    // Armed before running: a callback may schedule again.
    let next: number | undefined;
    for (const slot of this.#slots.keys()) if (next === undefined || slot < next) next = slot;
    if (next !== undefined) this.#arm(next);
    for (const run of ready) run();
  }
}
