/**
 * SFTP and WebDAV replica settings, with Litestream's names so a Litestream config moves over
 * unchanged: `sftp://user[:password]@host[:port]/path` with the keys `host`, `user`,
 * `password`, `path`, `key-path`, `host-key` (and `concurrent-writes`, accepted and ignored);
 * `webdav://[user[:password]@]host[:port]/path` (`webdavs://` for HTTPS) with `webdav-url`,
 * `webdav-username`, `webdav-password`, `path`. sluice adds `known-hosts` (a known_hosts file).
 *
 * Unlike Litestream, an SFTP replica always checks the server's host key: without `host-key`
 * or `known-hosts`, the key must be in `~/.ssh/known_hosts`, and an unknown server is refused
 * with the line to add.
 *
 * @module
 */

import { posix } from "node:path";
import { ConfigError } from "./error.ts";
import type { MapReader } from "./_yaml.ts";
import type { ReplicaSpec } from "../replica/mod.ts";

/** The SFTP case of {@linkcode ReplicaSpec}. */
export type SFTPReplicaSpec = Extract<ReplicaSpec, { type: "sftp" }>;
/** The WebDAV case of {@linkcode ReplicaSpec}. */
export type WebDAVReplicaSpec = Extract<ReplicaSpec, { type: "webdav" }>;

/** Keys only an sftp replica takes. */
export const SFTP_KEYS = [
  "host",
  "user",
  "password",
  "key-path",
  "host-key",
  "known-hosts",
  "concurrent-writes",
] as const;
/** Keys only a webdav replica takes. */
export const WEBDAV_KEYS = ["webdav-url", "webdav-username", "webdav-password"] as const;
/** Both, for the key rules (they may be given at the top level as defaults, as in Litestream). */
export const SFTP_WEBDAV_KEYS = [...SFTP_KEYS, ...WEBDAV_KEYS] as const;

/** Query parameters an sftp URL accepts (sluice's; Litestream's URL has none). */
const SFTP_QUERY = ["host-key", "known-hosts", "key-path"];

/**
 * Parses `sftp://user[:password]@host[:port]/path[?host-key=…&known-hosts=…&key-path=…]`.
 * @throws {ConfigError} when the host or user is missing.
 */
export function parseSFTPURL(parsed: URL, shown: string): SFTPReplicaSpec {
  if (parsed.hostname === "") {
    throw new ConfigError(`replica URL "${shown}" names no host; use sftp://user@host/path`);
  }
  if (parsed.username === "") {
    throw new ConfigError(`replica URL "${shown}" names no user; use sftp://user@host/path`);
  }
  if (parsed.hash !== "") {
    throw new ConfigError(`replica URL "${shown}": fragments (#…) are not allowed`);
  }
  const spec: SFTPReplicaSpec = {
    type: "sftp",
    host: parsed.host,
    user: decode(parsed.username, shown),
    path: decode(parsed.pathname, shown),
  };
  if (parsed.password !== "") spec.password = decode(parsed.password, shown);
  for (const [key, value] of parsed.searchParams) {
    if (!SFTP_QUERY.includes(key) || value === "") {
      throw new ConfigError(
        `replica URL "${shown}": unknown or empty query parameter "${key}"; accepted: ${
          SFTP_QUERY.join(", ")
        }`,
      );
    }
    if (key === "host-key") spec.hostKey = value;
    if (key === "known-hosts") spec.knownHosts = value;
    if (key === "key-path") spec.keyPath = value;
  }
  return spec;
}

/**
 * Parses `webdav://[user[:password]@]host[:port]/path` (plain HTTP) or `webdavs://…` (HTTPS),
 * as Litestream does: the server's URL is the scheme and host, the URL path is the replica path.
 * @throws {ConfigError} when the host is missing.
 */
export function parseWebDAVURL(parsed: URL, shown: string): WebDAVReplicaSpec {
  if (parsed.hostname === "") {
    throw new ConfigError(`replica URL "${shown}" names no host; use webdav://host/path`);
  }
  if (parsed.search !== "" || parsed.hash !== "") {
    throw new ConfigError(`replica URL "${shown}": a webdav URL takes no query or fragment`);
  }
  const http = parsed.protocol.toLowerCase() === "webdavs:" ? "https" : "http";
  const spec: WebDAVReplicaSpec = {
    type: "webdav",
    url: `${http}://${parsed.host}`,
    path: cleanDavPath(decode(parsed.pathname, shown)),
  };
  if (parsed.username !== "") spec.username = decode(parsed.username, shown);
  if (parsed.password !== "") spec.password = decode(parsed.password, shown);
  return spec;
}

/**
 * The sftp spec from keys without a url: `host` and `user` are required (Litestream's rule).
 * @throws {ConfigError} (file:line) naming the missing key.
 */
export function sftpSpecFromKeys(
  replica: MapReader,
  from: (key: string) => MapReader,
  path: string | undefined,
): SFTPReplicaSpec {
  const host = from("host").string("host");
  const user = from("user").string("user");
  if (host === undefined || user === undefined) {
    return replica.src.fail(
      replica.node,
      `${replica.where}: an sftp replica needs ${
        host === undefined ? "host" : "user"
      } (or url: sftp://user@host/path)`,
    );
  }
  return { type: "sftp", host, user, path: path ?? "" };
}

/**
 * The webdav spec from keys without a url: `webdav-url` is required.
 * @throws {ConfigError} (file:line) when it is missing or not http(s).
 */
export function webdavSpecFromKeys(
  replica: MapReader,
  from: (key: string) => MapReader,
  path: string | undefined,
): WebDAVReplicaSpec {
  const url = from("webdav-url").string("webdav-url");
  if (url === undefined) {
    return replica.src.fail(
      replica.node,
      `${replica.where}: a webdav replica needs webdav-url (or url: webdav://host/path)`,
    );
  }
  if (!/^https?:\/\/[^/]/i.test(url)) {
    from("webdav-url").fail("webdav-url", "must be an http:// or https:// URL");
  }
  return { type: "webdav", url, path: cleanDavPath(path ?? "") };
}

/**
 * Applies the sftp or webdav keys to `spec` (the replica's own key, then the url's part, then
 * the top-level default, as Litestream), and refuses the other backend's keys.
 * @throws {ConfigError} (file:line) for a key that does not apply or conflicts with the url.
 */
export function applySFTPWebDAVSettings(
  replica: MapReader,
  from: (key: string) => MapReader,
  spec: SFTPReplicaSpec | WebDAVReplicaSpec,
  hasURL: boolean,
  resolveLocal: (path: string) => string,
): void {
  const foreign = spec.type === "sftp" ? WEBDAV_KEYS : SFTP_KEYS;
  for (const key of foreign) {
    if (replica.has(key)) {
      replica.fail(key, `only applies to ${spec.type === "sftp" ? "webdav" : "sftp"} replicas`);
    }
  }
  if (spec.type === "sftp") {
    if (hasURL && replica.has("host")) {
      replica.fail("host", "set either url or host, not both (the url already names the host)");
    }
    const user = replica.string("user");
    if (user !== undefined) spec.user = user;
    const password = replica.has("password")
      ? replica.string("password")
      : spec.password === undefined
      ? from("password").string("password")
      : undefined;
    if (password !== undefined) spec.password = password;
    const keyPath = from("key-path").string("key-path");
    if (keyPath !== undefined && (replica.has("key-path") || spec.keyPath === undefined)) {
      spec.keyPath = keyPath;
    }
    if (spec.keyPath !== undefined) {
      spec.keyPath = localPath(replica, "key-path", spec.keyPath, resolveLocal);
    }
    const hostKey = replica.string("host-key") ??
      (spec.hostKey === undefined ? from("host-key").string("host-key") : undefined);
    if (hostKey !== undefined) spec.hostKey = hostKey;
    const knownHosts = replica.string("known-hosts") ??
      (spec.knownHosts === undefined ? from("known-hosts").string("known-hosts") : undefined);
    if (knownHosts !== undefined) spec.knownHosts = knownHosts;
    if (spec.knownHosts !== undefined) {
      spec.knownHosts = localPath(replica, "known-hosts", spec.knownHosts, resolveLocal);
    }
    // Litestream's switch for its Go client's pipelined writes; sluice always pipelines.
    from("concurrent-writes").bool("concurrent-writes");
    return;
  }
  if (hasURL && replica.has("webdav-url")) {
    replica.fail("webdav-url", "set either url or webdav-url, not both");
  }
  const username = replica.string("webdav-username") ??
    (spec.username === undefined ? from("webdav-username").string("webdav-username") : undefined);
  if (username !== undefined) spec.username = username;
  const password = replica.string("webdav-password") ??
    (spec.password === undefined ? from("webdav-password").string("webdav-password") : undefined);
  if (password !== undefined) spec.password = password;
}

/** Refuses sftp and webdav keys on a replica of another type. */
export function refuseSFTPWebDAVKeys(replica: MapReader, type: string): void {
  for (const key of SFTP_KEYS) {
    if (type !== "sftp" && replica.has(key)) replica.fail(key, "only applies to sftp replicas");
  }
  for (const key of WEBDAV_KEYS) {
    if (type !== "webdav" && replica.has(key)) replica.fail(key, "only applies to webdav replicas");
  }
}

/** `sftp://user@host[:port]/path` or `webdav[s]://host/path`, without secrets. */
export function formatSFTPWebDAVLocation(spec: SFTPReplicaSpec | WebDAVReplicaSpec): string {
  if (spec.type === "sftp") {
    const path = spec.path.startsWith("/") ? spec.path : `/${spec.path}`;
    return `sftp://${encodeURIComponent(spec.user)}@${spec.host}${path}`;
  }
  const base = spec.url.replace(/^http(s?):\/\/(?:[^/@]*@)?/i, "webdav$1://").replace(/\/+$/, "");
  return `${base}${spec.path ? `/${spec.path}` : ""}`;
}

/** The storage a location lives in (server and login), for overlap checks. */
export function sftpWebDAVStore(spec: SFTPReplicaSpec | WebDAVReplicaSpec): string {
  if (spec.type === "sftp") return `sftp:${spec.user}@${spec.host}`;
  return `webdav:${spec.url.replace(/\/+$/, "")}`;
}

/** The replica path of a database of a dir entry: `<path>/<rel>`. */
export function sftpWebDAVChildPath(
  spec: SFTPReplicaSpec | WebDAVReplicaSpec,
  rel: string,
): string {
  if (spec.type === "sftp") return posix.join(spec.path || ".", rel);
  return cleanDavPath(`${spec.path}/${rel}`);
}

/** A local file setting made absolute (relative to the config file, `~/` expanded). */
function localPath(
  replica: MapReader,
  key: string,
  path: string,
  resolveLocal: (path: string) => string,
): string {
  try {
    return resolveLocal(path);
  } catch (err) {
    return replica.fail(key, (err as Error).message);
  }
}

function cleanDavPath(path: string): string {
  return path.split("/").filter((part) => part !== "" && part !== ".").join("/");
}

function decode(text: string, shown: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw new ConfigError(`replica URL "${shown}": invalid percent-encoding`);
  }
}
