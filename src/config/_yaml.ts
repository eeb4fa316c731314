/**
 * Typed reading of a parsed YAML document with a `file:line:` on every complaint.
 *
 * @module
 */

import {
  type Document,
  isAlias,
  isMap,
  isScalar,
  isSeq,
  type LineCounter,
  type Node,
  type Scalar,
  type YAMLMap,
  type YAMLSeq,
} from "yaml";
import { ConfigError } from "./error.ts";
import { closestMatch } from "./_suggest.ts";
import { parseDuration } from "./duration.ts";

/** Keys whose values are never shown in messages. */
export const SECRET_KEYS: ReadonlySet<string> = new Set([
  "access-key-id",
  "secret-access-key",
  "account-key",
  "sas-token",
  "password",
  "webdav-password",
]);

/** What a key means in one mapping. */
export interface KeyRules {
  /** Keys sluice understands here. */
  known: readonly string[];
  /** Litestream keys sluice accepts and ignores (they only tune behaviour sluice chooses itself). */
  ignored?: readonly string[];
  /** Litestream keys sluice does not implement, with the value that is harmless to accept. */
  unsupported?: Readonly<Record<string, boolean | null>>;
  /** Keys that belong in another mapping: key → where it belongs. */
  elsewhere?: Readonly<Record<string, string>>;
}

/** The document plus what messages need to point at lines. */
export class Source {
  constructor(
    readonly file: string,
    readonly doc: Document.Parsed,
    readonly lines: LineCounter,
  ) {}

  /** 1-based line where `node` starts. */
  lineOf(node: Node | null | undefined): number | undefined {
    const offset = node?.range?.[0];
    return offset === undefined ? undefined : this.lines.linePos(offset).line;
  }

  /** Throws a ConfigError at `node`'s line. */
  fail(node: Node | null | undefined, message: string): never {
    throw new ConfigError(message, { file: this.file, line: this.lineOf(node) });
  }

  /** Follows an alias (`*name`) to the node it refers to. */
  resolve(node: unknown): Node | null {
    if (node === null || node === undefined) return null;
    if (isAlias(node)) return (node.resolve(this.doc) as Node | undefined) ?? null;
    return node as Node;
  }
}

/** Describes what a node holds, for "expected X, got Y" (values of secret keys are hidden). */
export function describe(node: Node | null, secret = false): string {
  if (node === null) return "nothing";
  if (isMap(node)) return "a mapping";
  if (isSeq(node)) return "a list";
  if (isScalar(node)) {
    const value = node.value;
    if (value === null) return "nothing";
    if (secret) return `a ${typeof value}`;
    if (typeof value === "string") {
      const shown = value.length > 60 ? `${value.slice(0, 57)}...` : value;
      return JSON.stringify(shown);
    }
    return String(node.source ?? value);
  }
  return "something else";
}

interface Entry {
  key: Scalar;
  value: Node | null;
}

/** One YAML mapping, with unknown keys already rejected. */
export class MapReader {
  readonly entries = new Map<string, Entry>();

  /**
   * Checks every key of `node` against `rules`.
   * @throws {ConfigError} on an unknown, duplicate, unsupported or misplaced key.
   */
  constructor(
    readonly src: Source,
    readonly node: YAMLMap,
    /** Dotted location for messages, e.g. `dbs[0].replica`; "" at the top level. */
    readonly where: string,
    rules: KeyRules,
  ) {
    for (const pair of node.items) {
      const keyNode = src.resolve(pair.key);
      if (!isScalar(keyNode) || typeof keyNode.value !== "string") {
        src.fail(keyNode, `${this.#in()}: keys must be plain names, got ${describe(keyNode)}`);
      }
      const key = keyNode.value;
      const value = src.resolve(pair.value);
      if (this.entries.has(key)) src.fail(keyNode, `duplicate key "${key}" ${this.#in()}`);
      if (rules.known.includes(key) || rules.ignored?.includes(key)) {
        this.entries.set(key, { key: keyNode, value });
        continue;
      }
      if (rules.unsupported !== undefined && Object.hasOwn(rules.unsupported, key)) {
        const harmless = rules.unsupported[key];
        const isHarmless = isScalar(value) && harmless !== null && value.value === harmless;
        if (value === null || isHarmless) continue;
        src.fail(
          keyNode,
          `${this.#path(key)}: Litestream's "${key}" is not supported by sluice; remove it`,
        );
      }
      const home = rules.elsewhere?.[key];
      if (home !== undefined) {
        src.fail(keyNode, `key "${key}" does not belong ${this.#in()}; put it in ${home}`);
      }
      const suggestion = closestMatch(key, rules.known);
      const hint = suggestion === undefined ? "" : ` (did you mean "${suggestion}"?)`;
      src.fail(keyNode, `unknown key "${key}" ${this.#in()}${hint}`);
    }
  }

  #in(): string {
    return this.where === "" ? "at the top level" : `in ${this.where}`;
  }

  #path(key: string): string {
    return this.where === "" ? key : `${this.where}.${key}`;
  }

  /** Whether `key` is present with a non-null value. */
  has(key: string): boolean {
    const value = this.entries.get(key)?.value;
    return value !== undefined && value !== null &&
      !(isScalar(value) && value.value === null);
  }

  /** The value node of `key`, or the key node when the value is empty; for line numbers. */
  nodeOf(key: string): Node | null {
    const entry = this.entries.get(key);
    return entry?.value ?? entry?.key ?? this.node;
  }

  /** Line of `key` (or of the mapping when absent). */
  lineOf(key: string): number | undefined {
    return this.src.lineOf(this.entries.get(key)?.key ?? this.node);
  }

  /** Throws a ConfigError at `key`'s line, prefixed with its dotted path. */
  fail(key: string, message: string): never {
    return this.src.fail(this.nodeOf(key), `${this.#path(key)}: ${message}`);
  }

  #scalar(key: string, expected: string): Scalar | undefined {
    if (!this.has(key)) return undefined;
    const node = this.entries.get(key)!.value!;
    if (!isScalar(node)) this.fail(key, `expected ${expected}, got ${describe(node)}`);
    return node;
  }

  /**
   * A string; numbers and booleans are taken as written (`bucket: 2024`, a numeric secret);
   * undefined when absent or empty (`key:` or `key: ~`).
   */
  string(key: string): string | undefined {
    const node = this.#scalar(key, "a string");
    if (node === undefined) return undefined;
    if (typeof node.value === "number" || typeof node.value === "boolean") {
      return node.source ?? String(node.value);
    }
    if (typeof node.value !== "string") {
      this.fail(key, `expected a string, got ${describe(node, SECRET_KEYS.has(key))}`);
    }
    if (node.value.trim() === "") this.fail(key, "must not be empty");
    return node.value;
  }

  /** A string that must be one of `choices` (compared case-insensitively). */
  choice<T extends string>(key: string, choices: readonly T[]): T | undefined {
    const text = this.string(key);
    if (text === undefined) return undefined;
    const found = choices.find((choice) => choice === text.toLowerCase());
    if (found === undefined) {
      this.fail(key, `expected one of ${choices.join(", ")}, got ${JSON.stringify(text)}`);
    }
    return found;
  }

  /** `true` or `false`. */
  bool(key: string): boolean | undefined {
    const node = this.#scalar(key, "true or false");
    if (node === undefined) return undefined;
    if (typeof node.value !== "boolean") {
      this.fail(key, `expected true or false, got ${describe(node)}`);
    }
    return node.value;
  }

  /** An integer ≥ `min`. */
  integer(key: string, min: number): number | undefined {
    const node = this.#scalar(key, "a whole number");
    if (node === undefined) return undefined;
    const value = node.value;
    if (typeof value !== "number" || !Number.isSafeInteger(value)) {
      this.fail(key, `expected a whole number, got ${describe(node)}`);
    }
    if (value < min) this.fail(key, `must be at least ${min}, got ${value}`);
    return value;
  }

  /**
   * A Go-syntax duration in ms. `allowZero` accepts `0`/`0s` (e.g. "disabled"); negative
   * durations are always rejected.
   */
  duration(key: string, allowZero = false): number | undefined {
    const node = this.#scalar(key, "a duration");
    if (node === undefined) return undefined;
    const example = `such as "30s", "5m" or "1h30m"`;
    let ms: number;
    if (node.value === 0) {
      ms = 0;
    } else if (typeof node.value === "number") {
      this.fail(key, `duration ${node.source ?? node.value} needs a unit, ${example}`);
    } else if (typeof node.value !== "string") {
      this.fail(key, `expected a duration ${example}, got ${describe(node)}`);
    } else {
      try {
        ms = parseDuration(node.value);
      } catch {
        this.fail(key, `expected a duration ${example}, got ${describe(node)}`);
      }
    }
    if (ms < 0) this.fail(key, `must not be negative, got ${describe(node)}`);
    if (ms === 0 && !allowZero) this.fail(key, `must be greater than 0, got ${describe(node)}`);
    return ms;
  }

  /**
   * A byte size as Litestream writes it (go-humanize): a number of bytes, or a number with a
   * unit, SI (`5MB` = 5,000,000) or IEC (`5MiB` = 5,242,880), case-insensitive.
   */
  byteSize(key: string, min: number): number | undefined {
    const node = this.#scalar(key, "a size");
    if (node === undefined) return undefined;
    const example = `such as "5MiB" or "16MB"`;
    let bytes: number;
    if (typeof node.value === "number") {
      bytes = node.value;
    } else if (typeof node.value === "string") {
      const match = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$/i.exec(node.value);
      if (match === null) this.fail(key, `expected a size ${example}, got ${describe(node)}`);
      const unit = (match[2] ?? "b").toLowerCase().replace(/b$/, "");
      const power = unit === "" ? 0 : "kmgt".indexOf(unit[0]) + 1;
      bytes = Number(match[1]) * (unit.endsWith("i") ? 1024 : 1000) ** power;
    } else {
      this.fail(key, `expected a size ${example}, got ${describe(node)}`);
    }
    if (!Number.isSafeInteger(Math.floor(bytes))) this.fail(key, `size out of range`);
    bytes = Math.floor(bytes);
    if (bytes < min) this.fail(key, `must be at least ${min} bytes, got ${bytes}`);
    return bytes;
  }

  /** A nested mapping, checked against `rules`; undefined when absent or empty. */
  map(key: string, rules: KeyRules, where = this.#path(key)): MapReader | undefined {
    if (!this.has(key)) return undefined;
    const node = this.entries.get(key)!.value!;
    if (!isMap(node)) this.fail(key, `expected a mapping, got ${describe(node)}`);
    return new MapReader(this.src, node, where, rules);
  }

  /** A list's item nodes (aliases resolved); undefined when absent or empty. */
  list(key: string, expected: string): { node: YAMLSeq; items: (Node | null)[] } | undefined {
    if (!this.has(key)) return undefined;
    const node = this.entries.get(key)!.value!;
    if (!isSeq(node)) this.fail(key, `expected ${expected}, got ${describe(node)}`);
    return { node, items: node.items.map((item) => this.src.resolve(item)) };
  }
}
