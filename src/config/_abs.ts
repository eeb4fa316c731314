/**
 * Azure Blob Storage replica settings, with Litestream's names: the `abs://[account@]container/
 * path` URL and the keys `account-name`, `account-key`, `sas-token`, `bucket` (the container),
 * `path` and `endpoint`, so a Litestream config moves over unchanged.
 *
 * @module
 */

import { ConfigError } from "./error.ts";
import type { MapReader } from "./_yaml.ts";
import type { ReplicaSpec } from "../replica/mod.ts";
import { cleanS3Path, normalizeEndpoint } from "./replica_url.ts";

/** The Azure case of {@linkcode ReplicaSpec}. */
export type ABSReplicaSpec = Extract<ReplicaSpec, { type: "abs" }>;

/** Keys only an abs replica takes. */
export const ABS_ONLY_KEYS = ["account-name", "account-key", "sas-token"] as const;
/** S3 keys an abs replica rejects. */
const NOT_ABS_KEYS = [
  "region",
  "force-path-style",
  "access-key-id",
  "secret-access-key",
  "part-size",
];

/**
 * Parses `abs://[account@]container/path[?endpoint=URL]`. The user part is the account name (not
 * a secret); a password is refused.
 * @throws {ConfigError} naming the URL and the fix.
 */
export function parseABSURL(parsed: URL, shown: string): ABSReplicaSpec {
  if (parsed.password !== "") {
    throw new ConfigError(
      `replica URL "${shown}" must not contain a key; use account-key or sas-token in the config or LITESTREAM_AZURE_ACCOUNT_KEY`,
    );
  }
  if (parsed.hostname === "") {
    throw new ConfigError(
      `replica URL "${shown}" names no container; use abs://account@container/path`,
    );
  }
  if (parsed.port !== "" || parsed.hash !== "") {
    throw new ConfigError(
      `replica URL "${shown}": use abs://account@container/path (an endpoint goes in ?endpoint=)`,
    );
  }
  let path: string;
  try {
    path = decodeURIComponent(parsed.pathname);
  } catch {
    throw new ConfigError(`replica URL "${shown}": invalid percent-encoding in the path`);
  }
  const spec: ABSReplicaSpec = { type: "abs", container: parsed.hostname, path: cleanS3Path(path) };
  if (parsed.username !== "") spec.accountName = decodeURIComponent(parsed.username);
  for (const [key, value] of parsed.searchParams) {
    if (key !== "endpoint" || spec.endpoint !== undefined) {
      throw new ConfigError(
        `replica URL "${shown}": unknown or repeated query parameter "${key}"; accepted: endpoint`,
      );
    }
    spec.endpoint = normalizeEndpoint(value, `replica URL "${shown}"`);
  }
  return spec;
}

/**
 * The abs spec from config keys without a url: `bucket` is the container (required).
 * @throws {ConfigError} (file:line) when `bucket` is missing.
 */
export function absSpecFromKeys(
  replica: MapReader,
  from: (key: string) => MapReader,
  path: string | undefined,
): ABSReplicaSpec {
  const container = from("bucket").string("bucket");
  if (container === undefined) {
    return replica.src.fail(
      replica.node,
      `${replica.where}: an abs replica needs bucket (the container) or url: abs://account@container/path`,
    );
  }
  return { type: "abs", container, path: cleanS3Path(path ?? "") };
}

/**
 * Applies `account-name`, `account-key`, `sas-token` and `endpoint` (the replica's own key, then
 * the url's value, then the top-level default) and refuses S3-only keys.
 * @throws {ConfigError} (file:line) for an S3-only key or an invalid endpoint.
 */
export function applyABSSettings(
  replica: MapReader,
  from: (key: string) => MapReader,
  spec: ABSReplicaSpec,
): void {
  for (const key of NOT_ABS_KEYS) {
    if (replica.has(key)) replica.fail(key, "only applies to s3 replicas");
  }
  const accountName = from("account-name").string("account-name");
  if (accountName !== undefined && (replica.has("account-name") || !spec.accountName)) {
    spec.accountName = accountName;
  }
  const accountKey = from("account-key").string("account-key");
  if (accountKey !== undefined) spec.accountKey = accountKey;
  const sasToken = from("sas-token").string("sas-token");
  if (sasToken !== undefined) spec.sasToken = sasToken;
  const endpointFrom = replica.has("endpoint") || spec.endpoint === undefined
    ? from("endpoint")
    : undefined;
  const endpoint = endpointFrom?.string("endpoint");
  if (endpointFrom !== undefined && endpoint !== undefined) {
    try {
      spec.endpoint = normalizeEndpoint(endpoint, "endpoint");
    } catch (err) {
      endpointFrom.fail("endpoint", (err as Error).message.replace(/^endpoint: /, ""));
    }
  }
  if (spec.accountName === undefined && spec.endpoint === undefined) {
    replica.src.fail(
      replica.node,
      `${replica.where}: an abs replica needs account-name (or url: abs://ACCOUNT@container/path) or an endpoint`,
    );
  }
}

/** Refuses abs-only keys on another backend's replica. */
export function refuseABSKeys(replica: MapReader): void {
  for (const key of ABS_ONLY_KEYS) {
    if (replica.has(key)) replica.fail(key, "only applies to abs replicas");
  }
}
