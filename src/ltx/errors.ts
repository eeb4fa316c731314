/**
 * Errors of the LTX layer. Every message names the file (or stream) it is about.
 *
 * @module
 */

/** Base class of every LTX error; the message names the file and, where possible, the fix. */
export class LTXError extends Error {
  /** Builds an error with a message that already names the file. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "LTXError";
  }
}

/** Malformed bytes, or a rule of the format (FORMAT.md §1) that the data violates. */
export class LTXFormatError extends LTXError {
  /** Builds an error with a message that already names the file. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "LTXFormatError";
  }
}

/** The file checksum, or a rolling database checksum (FORMAT.md §1.8, §1.9), does not match. */
export class LTXChecksumError extends LTXError {
  /** Builds an error with a message that already names the file. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "LTXChecksumError";
  }
}
