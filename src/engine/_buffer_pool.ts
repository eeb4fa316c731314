/**
 * A few byte buffers shared by every database's syncs, for the WAL reads of one sync each.
 *
 * A sync reads what was committed since the last one into a buffer sized to it (500 KB at 100
 * small commits a second under a 1 s interval). Allocated fresh each time, such a buffer is
 * zeroed and mapped page by page on first touch: page faults and `memset` were a fifth of the
 * main thread's time per sync (perf, issue 15). Buffers go back here when the sync is done and
 * the next sync of any database takes one again; at most {@linkcode MAX_POOLED} are kept, each
 * at most {@linkcode MAX_POOLED_BYTES} but one (see {@linkcode MAX_POOLED_LARGE_BYTES}), so a
 * thousand tenants hold no more than one busy one.
 *
 * @module
 */

/** How many free buffers are kept (concurrent syncs beyond this allocate their own). */
const MAX_POOLED = 4;
/** Buffers up to this size are pooled freely. */
const MAX_POOLED_BYTES = 2 << 20;
/**
 * One larger buffer, up to this size, is kept as well: a writer that commits megabytes per
 * sync interval needs one each time (issue 15), while a rare big sync pins no more than this.
 * Larger ones are left to the garbage collector.
 */
const MAX_POOLED_LARGE_BYTES = 17 << 20;

/** Lends byte buffers of at least a given size; see the module documentation. */
export class BufferPool {
  #free: Uint8Array[] = [];

  /**
   * A buffer of exactly `bytes` bytes (a view of a pooled one when one is large enough). Its
   * contents are whatever the last user left: the caller reads into it before looking.
   */
  take(bytes: number): Uint8Array {
    let best = -1;
    // A small request never takes the large one: the same sync may grow its read into it next.
    const most = bytes <= MAX_POOLED_BYTES ? MAX_POOLED_BYTES : Infinity;
    for (let i = 0; i < this.#free.length; i++) {
      const length = this.#free[i].byteLength;
      if (
        length >= bytes && length <= most && (best < 0 || length < this.#free[best].byteLength)
      ) best = i;
    }
    if (best < 0) return new Uint8Array(bytes);
    const [buffer] = this.#free.splice(best, 1);
    return buffer.subarray(0, bytes);
  }

  /** Gives back a buffer from {@linkcode take}; the caller must not use it afterwards. */
  give(view: Uint8Array): void {
    const whole = new Uint8Array(view.buffer, 0, view.buffer.byteLength);
    if (this.#free.some((b) => b.buffer === whole.buffer)) return;
    if (whole.byteLength > MAX_POOLED_BYTES) {
      // At most one large one: it replaces a smaller large one, never joins it.
      if (whole.byteLength > MAX_POOLED_LARGE_BYTES) return;
      const large = this.#free.findIndex((b) => b.byteLength > MAX_POOLED_BYTES);
      if (large >= 0) {
        if (this.#free[large].byteLength >= whole.byteLength) return;
        this.#free.splice(large, 1);
      }
    }
    if (this.#free.length >= MAX_POOLED) {
      // Keep the larger ones: a small request fits them, a large one does not fit a small one.
      let smallest = 0;
      for (let i = 1; i < this.#free.length; i++) {
        if (this.#free[i].byteLength < this.#free[smallest].byteLength) smallest = i;
      }
      if (this.#free[smallest].byteLength >= whole.byteLength) return;
      this.#free.splice(smallest, 1);
    }
    this.#free.push(whole);
  }
}
