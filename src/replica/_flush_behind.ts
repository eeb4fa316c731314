/**
 * Write-behind for large sequential files: once enough bytes are written, their flush to disk
 * starts in the background while the writer goes on, so the final fsync only waits for the
 * tail. For a snapshot or restore of a large database that final wait is otherwise about a
 * third of the run (measured: 1.2 s of 2.6 s for 367 MB).
 *
 * @module
 */

/** Bytes written between two background flushes. */
const DEFAULT_THRESHOLD = 32 * 1024 * 1024;

/** Starts `fdatasync` every `threshold` bytes, one at a time, keeping any error for the end. */
export class FlushBehind {
  #file: Deno.FsFile;
  #threshold: number;
  #since = 0;
  #inFlight?: Promise<void>;
  #error?: unknown;

  /** Watches writes to `file`; nothing happens until {@linkcode FlushBehind.wrote}. */
  constructor(file: Deno.FsFile, threshold: number = DEFAULT_THRESHOLD) {
    this.#file = file;
    this.#threshold = threshold;
  }

  /** Records `bytes` more written; may start a background flush. */
  wrote(bytes: number): void {
    this.#since += bytes;
    if (this.#since < this.#threshold || this.#inFlight) return;
    this.#since = 0;
    this.#inFlight = this.#file.syncData()
      .catch((err) => {
        // Linux may report a write-back error to one fsync only: keep it for the final one.
        this.#error ??= err;
      })
      .finally(() => this.#inFlight = undefined);
  }

  /**
   * Waits for a flush in flight; call it before the final fsync and before closing the file.
   * @throws the error a background flush met.
   */
  async settle(): Promise<void> {
    await this.#inFlight;
    if (this.#error !== undefined) throw this.#error;
  }
}
