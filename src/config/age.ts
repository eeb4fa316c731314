/**
 * age keys in the config (`age:` of a replica, Litestream v0.3's keys) and on the command line
 * (`--age-identity FILE`): reading identity files and checking every key with the
 * `age-encryption` package itself, at start, so a key that does not parse is a configuration
 * error (exit 2) and never a silent fallback to plaintext. Key values never appear in messages.
 *
 * @module
 */

import { ConfigError } from "./error.ts";

/** One key as written in the config, with where it was written. */
export interface AgeKeySource {
  /** The key text. */
  value: string;
  /** Dotted location for messages, e.g. `dbs[0].replica.age.recipients[1]`. */
  where: string;
  /** Config file and line, when the key came from one. */
  file?: string;
  line?: number;
}

/** An identity file named in the config (`age.identity-files`) or on the command line. */
export interface AgeIdentityFile {
  /** Absolute path. */
  path: string;
  /** Where it was named, for messages (config file and line), when in a config. */
  file?: string;
  line?: number;
}

/** What {@linkcode checkAgeKeys} checks and completes for one replica. */
export interface PendingAgeKeys {
  recipients: AgeKeySource[];
  identities: AgeKeySource[];
  identityFiles: AgeIdentityFile[];
  /** The spec's keys (the inline ones already), completed with the identities of the files. */
  target: { recipients: string[]; identities: string[] };
}

/**
 * The identities in an age identity file's text (`age-keygen` output): one per line, `#`
 * comments and blank lines skipped. Lines are checked by {@linkcode checkAgeKeys}.
 */
export function identityLines(text: string, where: string, file?: string): AgeKeySource[] {
  const keys: AgeKeySource[] = [];
  text.replace(/^\uFEFF/, "").split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    keys.push({ value: line, where, file, line: i + 1 });
  });
  return keys;
}

/**
 * Reads identity files: each must exist and hold at least one identity.
 * @throws {ConfigError} naming the file (and where it was named), never its contents.
 */
export async function readIdentityFiles(
  files: readonly AgeIdentityFile[],
): Promise<AgeKeySource[]> {
  const keys: AgeKeySource[] = [];
  for (const named of files) {
    const location = named.file === undefined ? undefined : { file: named.file, line: named.line };
    let text: string;
    try {
      text = await Deno.readTextFile(named.path);
    } catch (err) {
      const why = err instanceof Deno.errors.NotFound
        ? "does not exist"
        : err instanceof Deno.errors.PermissionDenied
        ? "is not readable (permission denied)"
        : `cannot be read (${(err as Error).name})`;
      throw new ConfigError(`age identity file ${named.path} ${why}`, location);
    }
    const found = identityLines(text, `age identity file ${named.path}`, named.path);
    if (found.length === 0) {
      throw new ConfigError(
        `age identity file ${named.path} holds no identity (expected AGE-SECRET-KEY-1… lines, e.g. from age-keygen)`,
        location,
      );
    }
    keys.push(...found);
  }
  return keys;
}

/**
 * Reads the identity files and parses every recipient and identity with `age-encryption`
 * (loaded here only, so configs without `age:` never load it); fills `target` of each entry.
 * @throws {ConfigError} `file:line:` naming the key's place, never its value.
 */
export async function checkAgeKeys(pending: readonly PendingAgeKeys[]): Promise<void> {
  if (pending.length === 0) return;
  const age = await import("age-encryption");
  for (const entry of pending) {
    const fromFiles = await readIdentityFiles(entry.identityFiles);
    for (const key of entry.recipients) {
      try {
        new age.Encrypter().addRecipient(key.value);
      } catch {
        throw keyError(key, "is not a valid age recipient (expected age1… from age-keygen -y)");
      }
    }
    for (const key of [...entry.identities, ...fromFiles]) {
      try {
        new age.Decrypter().addIdentity(key.value);
      } catch {
        throw keyError(
          key,
          "is not a valid age identity (expected AGE-SECRET-KEY-1… from age-keygen)",
        );
      }
    }
    entry.target.identities.push(...fromFiles.map((key) => key.value));
  }
}

function keyError(key: AgeKeySource, problem: string): ConfigError {
  const location = key.file === undefined ? undefined : { file: key.file, line: key.line };
  return new ConfigError(`${key.where} ${problem}`, location);
}

/**
 * The identities of `--age-identity FILE` arguments, checked.
 * @throws {ConfigError} for a missing, empty or malformed file (exit 2).
 */
export async function identitiesFromFiles(paths: readonly string[]): Promise<string[]> {
  const target = { recipients: [], identities: [] as string[] };
  await checkAgeKeys([{
    recipients: [],
    identities: [],
    identityFiles: paths.map((path) => ({ path })),
    target,
  }]);
  return target.identities;
}
