/**
 * The error every configuration problem is reported with.
 *
 * @module
 */

/**
 * A configuration file or a command-line replica argument is wrong. The message is one line,
 * prefixed with `file:line:` when the problem is in a file, and never contains a secret.
 * The CLI prints it and exits with status 2.
 */
export class ConfigError extends Error {
  /** The config file, when the problem is in one. */
  readonly file?: string;
  /** The 1-based line in {@linkcode ConfigError.file}, when known. */
  readonly line?: number;

  /** Builds an error; `file` and `line` are prefixed to the message as `file:line: `. */
  constructor(
    message: string,
    location?: { file?: string; line?: number },
    options?: ErrorOptions,
  ) {
    const prefix = location?.file === undefined
      ? ""
      : location.line === undefined
      ? `${location.file}: `
      : `${location.file}:${location.line}: `;
    super(prefix + message, options);
    this.name = "ConfigError";
    this.file = location?.file;
    this.line = location?.line;
  }
}
