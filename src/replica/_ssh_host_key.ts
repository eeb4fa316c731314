/**
 * SSH host-key checking for the SFTP replica: the server's key must be the configured
 * `host-key` (an authorized_keys line, Litestream's form, or a `SHA256:` fingerprint) or be
 * listed for the host in a known_hosts file (OpenSSH's format, hashed names included). An
 * unknown host is refused: nothing is trusted on first use.
 *
 * @module
 */

import { createHash, createHmac } from "node:crypto";
import { Buffer } from "node:buffer";

/** Where the expected host keys come from. */
export interface HostKeyPolicy {
  /** `ssh-ed25519 AAAA… [comment]` or `SHA256:<base64>`. */
  hostKey?: string;
  /** known_hosts files to look the host up in (missing files are skipped). */
  knownHosts: readonly string[];
  /** Whether `knownHosts` was configured (else it is the user's default files). */
  knownHostsConfigured: boolean;
}

/** The server's host key did not verify; the message says what to configure. */
export class HostKeyError extends Error {
  /** Builds the error with its one-line message. */
  constructor(message: string) {
    super(message);
    this.name = "HostKeyError";
  }
}

/** One expected key: its type and blob, or only a fingerprint. */
interface ExpectedKey {
  type?: string;
  blob?: Uint8Array;
  fingerprint?: string;
}

/** OpenSSH's fingerprint of a key blob: `SHA256:` and unpadded base64. */
export function fingerprint(blob: Uint8Array): string {
  return `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
}

/** The key type named inside a key blob (`ssh-ed25519`, `ssh-rsa`, `ecdsa-sha2-nistp256`). */
export function keyType(blob: Uint8Array): string {
  const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  if (blob.length < 4) return "unknown";
  const length = view.getUint32(0);
  return new TextDecoder().decode(blob.subarray(4, 4 + length));
}

/** How known_hosts names a host: `host` on port 22, `[host]:port` otherwise. */
export function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

/**
 * The host-key algorithms to offer, so the server presents a key we can check (OpenSSH does
 * the same): the types of the expected keys, or undefined to keep ssh2's defaults.
 */
export function preferredAlgorithms(expected: readonly ExpectedKey[]): string[] | undefined {
  const out: string[] = [];
  for (const key of expected) {
    if (key.type === undefined) return undefined; // a bare fingerprint: any type may match
    const algorithms = key.type === "ssh-rsa" ? ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] : [
      key.type,
    ];
    for (const a of algorithms) if (!out.includes(a)) out.push(a);
  }
  return out.length > 0 ? out : undefined;
}

/**
 * Reads the keys expected for `host:port`.
 * @throws {HostKeyError} when `hostKey` is malformed or a configured known_hosts is unreadable.
 */
export async function expectedKeys(
  policy: HostKeyPolicy,
  host: string,
  port: number,
): Promise<{ keys: ExpectedKey[]; revoked: Uint8Array[] }> {
  const keys: ExpectedKey[] = [];
  const revoked: Uint8Array[] = [];
  if (policy.hostKey !== undefined) keys.push(parseHostKeySetting(policy.hostKey));
  for (const file of policy.knownHosts) {
    let text: string;
    try {
      text = await Deno.readTextFile(file);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound && !policy.knownHostsConfigured) continue;
      throw new HostKeyError(
        `cannot read known-hosts file ${file}: ${err instanceof Error ? err.message : err}`,
      );
    }
    for (const entry of parseKnownHosts(text)) {
      if (!hostMatches(entry.patterns, host, port)) continue;
      if (entry.marker === "@revoked") revoked.push(entry.blob);
      else if (entry.marker === undefined) keys.push({ type: entry.type, blob: entry.blob });
    }
  }
  return { keys, revoked };
}

/**
 * Why the presented key is refused, or undefined when it is one of the expected keys.
 * The message is one line: the server's fingerprint and the setting that would accept it.
 */
export function checkHostKey(
  presented: Uint8Array,
  expected: { keys: readonly ExpectedKey[]; revoked: readonly Uint8Array[] },
  where: { host: string; port: number; policy: HostKeyPolicy },
): string | undefined {
  const print = fingerprint(presented);
  const type = keyType(presented);
  if (expected.revoked.some((blob) => equalBytes(blob, presented))) {
    return `the host key of ${
      hostPort(where)
    } (${type} ${print}) is marked @revoked in known-hosts`;
  }
  for (const key of expected.keys) {
    if (key.blob !== undefined && equalBytes(key.blob, presented)) return undefined;
    if (key.fingerprint !== undefined && key.fingerprint === print) return undefined;
  }
  const line = `${type} ${Buffer.from(presented).toString("base64")}`;
  const files = where.policy.knownHosts.join(", ");
  if (expected.keys.length > 0) {
    return `host key mismatch for ${hostPort(where)}: the server presented ${type} ${print}, ` +
      `which is not the configured ${
        where.policy.hostKey !== undefined ? "host-key" : "known-hosts"
      }` +
      ` entry (a changed server key, or someone in between); if the server's key really changed, ` +
      `set host-key: "${line}"`;
  }
  return `unknown host key for ${hostPort(where)}: the server presented ${type} ${print}, not ` +
    `found in ${files || "any known-hosts file"} and no host-key is set; if that is the ` +
    `server's key, set host-key: "${line}" in the replica config (or add ` +
    `"${knownHostsName(where.host, where.port)} ${line}" to the known-hosts file)`;
}

function hostPort(where: { host: string; port: number }): string {
  return knownHostsName(where.host, where.port);
}

function parseHostKeySetting(text: string): ExpectedKey {
  const trimmed = text.trim();
  if (/^SHA256:[A-Za-z0-9+/]{43}=?$/.test(trimmed)) {
    return { fingerprint: trimmed.replace(/=$/, "") };
  }
  const [type, base64] = trimmed.split(/\s+/);
  const blob = base64 === undefined ? undefined : decodeBase64(base64);
  if (type === undefined || blob === undefined || keyType(blob) !== type) {
    throw new HostKeyError(
      `host-key must be the server's public key as in known_hosts or authorized_keys ` +
        `("ssh-ed25519 AAAA…", see ssh-keyscan) or its SHA256: fingerprint`,
    );
  }
  return { type, blob };
}

interface KnownHostsEntry {
  marker?: string;
  patterns: string;
  type: string;
  blob: Uint8Array;
}

function parseKnownHosts(text: string): KnownHostsEntry[] {
  const entries: KnownHostsEntry[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const fields = line.split(/\s+/);
    const marker = fields[0].startsWith("@") ? fields.shift() : undefined;
    const [patterns, type, base64] = fields;
    const blob = base64 === undefined ? undefined : decodeBase64(base64);
    if (patterns === undefined || type === undefined || blob === undefined) continue;
    entries.push({ marker, patterns, type, blob });
  }
  return entries;
}

/** OpenSSH's host matching: comma-separated globs, `!` negations, hashed `|1|salt|hash`. */
function hostMatches(patterns: string, host: string, port: number): boolean {
  const name = knownHostsName(host, port);
  if (patterns.startsWith("|1|")) {
    const [, , salt, hash] = patterns.split("|");
    if (salt === undefined || hash === undefined) return false;
    const digest = createHmac("sha1", Buffer.from(salt, "base64")).update(name).digest("base64");
    return digest === hash;
  }
  let matched = false;
  for (const pattern of patterns.split(",")) {
    const negated = pattern.startsWith("!");
    const glob = negated ? pattern.slice(1) : pattern;
    if (globMatches(glob.toLowerCase(), name.toLowerCase())) {
      if (negated) return false;
      matched = true;
    }
  }
  return matched;
}

function globMatches(glob: string, text: string): boolean {
  const source = glob.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(
    /\?/g,
    ".",
  );
  return new RegExp(`^${source}$`).test(text);
}

function decodeBase64(text: string): Uint8Array | undefined {
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(text)) return undefined;
  return new Uint8Array(Buffer.from(text, "base64"));
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}
