/**
 * Reading a replica's `age:` mapping (Litestream v0.3's `recipients` and `identities`, plus
 * sluice's `identity-files`) into its spec, and remembering what {@linkcode checkAgeKeys}
 * must still check once the whole file is read (the package is loaded asynchronously).
 *
 * @module
 */

import { isScalar, type Node } from "yaml";
import type { Config } from "./types.ts";
import type { ReplicaSpec } from "./replica_url.ts";
import { resolveLocalPath } from "./replica_url.ts";
import type { MapReader, Source } from "./_yaml.ts";
import { ConfigError } from "./error.ts";
import { type AgeKeySource, identityLines, type PendingAgeKeys } from "./age.ts";

const AGE_RULES = { known: ["recipients", "identities", "identity-files"] };

const bySource = new WeakMap<Source, PendingAgeKeys[]>();
const byConfig = new WeakMap<Config, PendingAgeKeys[]>();

/**
 * Reads `replica.age` (when present) into `spec.age`; identities from files and the package's
 * own parse follow in {@linkcode pendingAgeKeys}' check.
 * @throws {ConfigError} `file:line:` for a malformed mapping, a key that is not a string, an
 * empty `age:`, or recipients without any identity (compaction reads the replica's files).
 */
export function readAgeKeys(
  replica: MapReader,
  spec: ReplicaSpec,
  paths: { baseDir: string; home: string },
): void {
  const age = replica.map("age", AGE_RULES);
  if (age === undefined) return;
  const strings = (key: string): AgeKeySource[] => {
    const list = age.list(key, `a list of ${key}`);
    if (list === undefined) return [];
    return list.items.flatMap((item, i) => {
      const where = `${age.where}.${key}[${i}]`;
      const text = stringValue(item);
      if (text === undefined) {
        return age.src.fail(item ?? list.node, `${where}: expected a non-empty string`);
      }
      const line = age.src.lineOf(item);
      // A multi-line value (an identity file pasted in) holds one key per line.
      return identityLines(text, where).map((key) => ({
        ...key,
        file: age.src.file,
        line,
      }));
    });
  };
  const recipients = strings("recipients");
  const identities = strings("identities");
  const identityFiles = (age.list("identity-files", "a list of paths")?.items ?? []).map(
    (item, i) => {
      const where = `${age.where}.identity-files[${i}]`;
      const text = stringValue(item);
      if (text === undefined) return age.src.fail(item, `${where}: expected a path`);
      return {
        path: resolveLocalPath(text, paths),
        file: age.src.file,
        line: age.src.lineOf(item),
      };
    },
  );
  const fail = (problem: string): never => {
    throw new ConfigError(`${age.where}: ${problem}`, {
      file: replica.src.file,
      line: replica.lineOf("age"),
    });
  };
  if (recipients.length === 0 && identities.length === 0 && identityFiles.length === 0) {
    fail("needs recipients (to write) and/or identities or identity-files (to read)");
  }
  if (recipients.length > 0 && identities.length === 0 && identityFiles.length === 0) {
    fail(
      "recipients without an identity: compaction reads the replica's files, so a replicating " +
        "host needs the identity too; add age.identities or age.identity-files",
    );
  }
  // Inline keys are usable at once; identity files are read and every key parsed at load.
  const target = {
    recipients: recipients.map((key) => key.value),
    identities: identities.map((key) => key.value),
  };
  spec.age = target;
  const pending = bySource.get(replica.src) ?? [];
  pending.push({ recipients, identities, identityFiles, target });
  bySource.set(replica.src, pending);
}

/** A non-empty string scalar's value, or undefined. */
function stringValue(item: Node | null): string | undefined {
  if (!isScalar(item) || typeof item.value !== "string" || item.value.trim() === "") {
    return undefined;
  }
  return item.value;
}

/** Hands the keys read from `src` over to `config` (call once the file is read). */
export function adoptPendingAgeKeys(src: Source, config: Config): void {
  const pending = bySource.get(src);
  if (pending !== undefined) byConfig.set(config, pending);
}

/** What must still be checked (and read from identity files) for `config`'s `age:` keys. */
export function pendingAgeKeys(config: Config): PendingAgeKeys[] {
  return byConfig.get(config) ?? [];
}
