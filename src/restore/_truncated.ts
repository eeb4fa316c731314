/**
 * The error of a replica file that ends early, in a file that imports nothing, so that the
 * direct-restore worker (`_direct_worker.ts`) throws it too without loading the replica package.
 *
 * @module
 */

/** A replica file ended before its listed size. */
export class TruncatedFileError extends Error {
  /** Builds an error naming the file and both sizes. */
  constructor(name: string, read: number, expected: number) {
    super(
      `${name}: read ${read} of ${expected} bytes before the stream ended; ` +
        `the replica file is truncated or was replaced while restoring`,
    );
    this.name = "TruncatedFileError";
  }
}
