/**
 * Replica locations: the `ReplicaSpec` every backend is built from, parsed from the URL forms
 * sluice accepts on the command line and in `url:` config keys, and formatted back without
 * secrets.
 *
 * @module
 */

import { isAbsolute, normalize, resolve } from "node:path";
import { ConfigError } from "./error.ts";
import { parseABSURL } from "./_abs.ts";
import {
  formatSFTPWebDAVLocation,
  parseSFTPURL,
  parseWebDAVURL,
  sftpWebDAVStore,
} from "./_sftp_webdav.ts";
import type { ReplicaSpec } from "../replica/mod.ts";
import { applyProfileQueryParam, gcsSpec, PROFILE_QUERY_PARAMS } from "./_s3_profile_keys.ts";

/** Where a replica lives: the contract of `src/replica/mod.ts`, re-exported for config users. */
export type { ReplicaSpec };

/** The accepted forms, quoted in every error about a replica URL. */
export const REPLICA_URL_FORMS =
  "file:///abs/dir, a plain path, s3://bucket/prefix?endpoint=…&region=…&force-path-style=true, gs://bucket/prefix, or abs://account@container/path";

/** Schemes Litestream supports that sluice does not. */
const OTHER_LITESTREAM_SCHEMES = new Set(["nats", "oss"]);

/** Options of {@linkcode parseReplicaURL}. */
export interface ParseReplicaURLOptions {
  /** Directory relative plain paths are resolved against. Default: the current directory. */
  baseDir?: string;
  /** `$HOME`, for `~/…` paths. Default: the HOME environment variable. */
  home?: string;
}

/** Whether `text` has a URL scheme (`name://`), as opposed to being a plain path. */
export function isURL(text: string): boolean {
  return /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(text);
}

/**
 * Parses a replica location: `file:///abs/dir`, a plain path (made absolute), or
 * `s3://bucket/prefix?endpoint=…&region=…&force-path-style=true` (Litestream's camelCase
 * `forcePathStyle` is accepted too). An S3 endpoint implies path-style addressing unless
 * `force-path-style=false`, as in Litestream.
 * @throws {ConfigError} naming the URL (credentials removed) and the accepted forms.
 */
export function parseReplicaURL(url: string, options: ParseReplicaURLOptions = {}): ReplicaSpec {
  if (url.trim() === "") {
    throw new ConfigError(`empty replica URL; use ${REPLICA_URL_FORMS}`);
  }
  if (!isURL(url)) {
    return { type: "file", path: resolveLocalPath(url, options) };
  }
  const shown = redactURL(url);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ConfigError(`invalid replica URL "${shown}"; use ${REPLICA_URL_FORMS}`);
  }
  // abs://ACCOUNT@container/path: the user part is Litestream's account name, not a secret.
  if (parsed.protocol.toLowerCase() === "abs:") return parseABSURL(parsed, shown);
  // sftp://user:password@host/path and webdav://user:password@host/path: Litestream's forms.
  if (parsed.protocol.toLowerCase() === "sftp:") return parseSFTPURL(parsed, shown);
  if (/^webdavs?:$/i.test(parsed.protocol)) return parseWebDAVURL(parsed, shown);
  if (parsed.username !== "" || parsed.password !== "") {
    throw new ConfigError(
      `replica URL "${shown}" must not contain credentials; use access-key-id and secret-access-key in the config or the AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY environment variables`,
    );
  }
  const scheme = parsed.protocol.slice(0, -1).toLowerCase();
  switch (scheme) {
    case "file":
      return parseFileURL(parsed, shown);
    case "gs":
      return gcsSpec(parseS3URL(parsed, shown) as Extract<ReplicaSpec, { type: "s3" }>);
    case "s3":
      return parseS3URL(parsed, shown);
    default:
      if (OTHER_LITESTREAM_SCHEMES.has(scheme)) {
        throw new ConfigError(
          `replica URL "${shown}": ${scheme} replicas are not supported by sluice; use ${REPLICA_URL_FORMS}`,
        );
      }
      throw new ConfigError(
        `replica URL "${shown}" has unknown scheme "${scheme}"; use ${REPLICA_URL_FORMS}`,
      );
  }
}

function parseFileURL(parsed: URL, shown: string): ReplicaSpec {
  if (parsed.host !== "" && parsed.host !== "localhost") {
    throw new ConfigError(
      `replica URL "${shown}": a file URL needs an absolute path and no host, e.g. file:///var/backups/app`,
    );
  }
  if (parsed.search !== "" || parsed.hash !== "") {
    throw new ConfigError(`replica URL "${shown}": a file URL takes no query or fragment`);
  }
  let path: string;
  try {
    path = decodeURIComponent(parsed.pathname);
  } catch {
    throw new ConfigError(`replica URL "${shown}": invalid percent-encoding in the path`);
  }
  if (path === "" || path === "/") {
    throw new ConfigError(`replica URL "${shown}": the replica cannot be the root directory`);
  }
  return { type: "file", path: trimTrailingSlash(normalize(path)) };
}

function parseS3URL(parsed: URL, shown: string): ReplicaSpec {
  const host = parsed.hostname;
  if (host === "") {
    throw new ConfigError(`replica URL "${shown}" names no bucket; use s3://bucket/prefix`);
  }
  if (parsed.port !== "") {
    throw new ConfigError(
      `replica URL "${shown}": a port belongs in the endpoint, e.g. s3://bucket/prefix?endpoint=http://127.0.0.1:9000`,
    );
  }
  const fromHost = parseS3Host(host);
  const spec: Extract<ReplicaSpec, { type: "s3" }> = {
    type: "s3",
    bucket: fromHost.bucket,
    path: cleanS3Path(decodeURIComponentSafe(parsed.pathname, shown)),
  };
  if (fromHost.region !== undefined) spec.region = fromHost.region;
  if (parsed.hash !== "") {
    throw new ConfigError(`replica URL "${shown}": fragments (#…) are not allowed`);
  }
  let forcePathStyle: boolean | undefined;
  const seen = new Set<string>();
  for (const [rawKey, value] of parsed.searchParams) {
    const key = QUERY_ALIASES[rawKey] ?? rawKey;
    if (seen.has(key)) {
      throw new ConfigError(`replica URL "${shown}": query parameter "${rawKey}" is given twice`);
    }
    seen.add(key);
    switch (key) {
      case "endpoint":
        spec.endpoint = normalizeEndpoint(value, `replica URL "${shown}"`);
        break;
      case "region":
        if (value === "") throw new ConfigError(`replica URL "${shown}": empty region`);
        spec.region = value;
        break;
      case "force-path-style":
        forcePathStyle = parseBoolParam(value, rawKey, shown);
        break;
      case "skip-verify":
        if (parseBoolParam(value, rawKey, shown)) {
          throw new ConfigError(
            `replica URL "${shown}": skip-verify=true is not supported by sluice; trust the endpoint's certificate instead (e.g. DENO_CERT)`,
          );
        }
        break;
      default:
        if (applyProfileQueryParam(spec, rawKey, value, `replica URL "${shown}"`)) break;
        throw new ConfigError(
          `replica URL "${shown}": unknown query parameter "${rawKey}"; accepted: endpoint, region, force-path-style, ${PROFILE_QUERY_PARAMS}`,
        );
    }
  }
  spec.forcePathStyle = forcePathStyle ?? spec.endpoint !== undefined;
  return spec;
}

const QUERY_ALIASES: Record<string, string> = {
  forcePathStyle: "force-path-style",
  skipVerify: "skip-verify",
};

function parseBoolParam(value: string, key: string, shown: string): boolean {
  if (value === "true") return true;
  if (value === "false") return false;
  throw new ConfigError(`replica URL "${shown}": ${key} must be true or false, got "${value}"`);
}

/** Splits AWS virtual-hosted names (`bucket.s3.amazonaws.com`, `bucket.s3.us-west-2.amazonaws.com`). */
function parseS3Host(host: string): { bucket: string; region?: string } {
  const aws = /^(.+)\.s3[.-]([a-z0-9-]+)\.amazonaws\.com$/.exec(host);
  if (aws !== null) return { bucket: aws[1], region: aws[2] };
  const global = /^(.+)\.s3\.amazonaws\.com$/.exec(host);
  if (global !== null) return { bucket: global[1] };
  return { bucket: host };
}

/**
 * Validates an S3 endpoint and gives it a scheme when it has none (`http://` for loopback
 * hosts, `https://` otherwise, as Litestream does).
 * @throws {ConfigError} prefixed with `where` when it is not an http(s) URL.
 */
export function normalizeEndpoint(value: string, where: string): string {
  if (value === "") throw new ConfigError(`${where}: empty endpoint`);
  let text = value;
  if (!isURL(text)) {
    const loopback = /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?(\/|$)/i.test(text);
    text = (loopback ? "http://" : "https://") + text;
  }
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ConfigError(
      `${where}: invalid endpoint "${redactURL(value)}"; use e.g. http://127.0.0.1:9000`,
    );
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new ConfigError(
      `${where}: endpoint "${redactURL(value)}" must be an http:// or https:// URL`,
    );
  }
  if (url.username !== "" || url.password !== "") {
    throw new ConfigError(`${where}: endpoint must not contain credentials`);
  }
  return text.replace(/\/+$/, "");
}

/** Normalizes an S3 key prefix: no leading or trailing slash, no empty or `.` segments. */
export function cleanS3Path(path: string): string {
  return path.split("/").filter((part) => part !== "" && part !== ".").join("/");
}

function decodeURIComponentSafe(text: string, shown: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw new ConfigError(`replica URL "${shown}": invalid percent-encoding in the path`);
  }
}

/** Makes a local path absolute: `~/` from `home`, relative ones against `baseDir`. */
export function resolveLocalPath(path: string, options: ParseReplicaURLOptions = {}): string {
  let text = path;
  if (text === "~" || text.startsWith("~/")) {
    const home = options.home ?? Deno.env.get("HOME");
    if (home === undefined || home === "") {
      throw new ConfigError(`cannot expand "~" in "${path}": HOME is not set`);
    }
    text = home + text.slice(1);
  } else if (text.startsWith("~")) {
    throw new ConfigError(`"${path}": only "~/" (the current user's home) can be expanded`);
  }
  const absolute = isAbsolute(text)
    ? normalize(text)
    : resolve(options.baseDir ?? Deno.cwd(), text);
  return trimTrailingSlash(absolute);
}

function trimTrailingSlash(path: string): string {
  return path.length > 1 ? path.replace(/\/+$/, "") : path;
}

/** Removes a password (and user) from a URL-looking string, for messages. */
export function redactURL(text: string): string {
  return text.replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/)[^/?#@]*@/, "$1[REDACTED]@");
}

/**
 * A human-readable location without secrets: `file:///abs/dir` or
 * `s3://bucket/prefix` plus the endpoint and region when set.
 */
export function formatReplicaLocation(spec: ReplicaSpec): string {
  if (spec.type === "file") return `file://${encodeURI(spec.path)}`;
  if (spec.type === "sftp" || spec.type === "webdav") return formatSFTPWebDAVLocation(spec);
  if (spec.type === "abs") {
    const account = spec.accountName ? `${spec.accountName}@` : "";
    const endpoint = spec.endpoint ? `?endpoint=${queryValue(spec.endpoint)}` : "";
    return `abs://${account}${spec.container}${spec.path ? `/${spec.path}` : ""}${endpoint}`;
  }
  const params: string[] = [];
  if (spec.endpoint !== undefined) params.push(`endpoint=${queryValue(spec.endpoint)}`);
  if (spec.region !== undefined) params.push(`region=${queryValue(spec.region)}`);
  const query = params.length > 0 ? `?${params.join("&")}` : "";
  const path = spec.path === "" ? "" : `/${spec.path}`;
  return `s3://${spec.bucket}${path}${query}`;
}

/**
 * A key that is equal for two specs exactly when they address the same storage location,
 * used to reject two databases replicating into one place.
 */
export function replicaLocationKey(spec: ReplicaSpec): string {
  if (spec.type === "file") return `file:${spec.path}`;
  if (spec.type === "sftp" || spec.type === "webdav") {
    return `${sftpWebDAVStore(spec)}:${spec.path}`;
  }
  if (spec.type === "abs") {
    return `abs:${spec.endpoint ?? spec.accountName}:${spec.container}:${spec.path}`;
  }
  return `s3:${spec.endpoint ?? "aws"}:${spec.bucket}:${spec.path}`;
}

/** Encodes a query value, keeping `:` and `/` readable (both are valid in a query). */
function queryValue(value: string): string {
  return encodeURIComponent(value).replace(/%3A/gi, ":").replace(/%2F/gi, "/");
}
