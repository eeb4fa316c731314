/**
 * The S3 provider-profile settings in replica URLs and config files (`provider`,
 * `checksum-mode`, `sign-payload`, `require-content-md5`, `sign-accept-encoding`,
 * `concurrency`, `tigris-consistent`), and `gs://` locations (GCS through its
 * S3-interoperable endpoint). Litestream's names are accepted as Litestream spells them,
 * camelCase URL parameters included.
 *
 * @module
 */

import { ConfigError } from "./error.ts";
import type { MapReader } from "./_yaml.ts";
import {
  type ChecksumMode,
  GCS_ENDPOINT,
  type ReplicaSpec,
  S3_PROVIDERS,
  type S3Provider,
} from "../replica/mod.ts";

type S3ReplicaSpec = Extract<ReplicaSpec, { type: "s3" }>;

/** Config keys of the profile settings (S3 replicas only). */
export const S3_PROFILE_KEYS = [
  "provider",
  "checksum-mode",
  "sign-payload",
  "require-content-md5",
  "sign-accept-encoding",
  "concurrency",
  "tigris-consistent",
] as const;

type ProfileKey = typeof S3_PROFILE_KEYS[number];

const QUERY_ALIASES: Record<string, ProfileKey | "part-size"> = {
  signPayload: "sign-payload",
  requireContentMD5: "require-content-md5",
  signAcceptEncoding: "sign-accept-encoding",
  checksumMode: "checksum-mode",
  tigrisConsistent: "tigris-consistent",
  partSize: "part-size",
};

const CHECKSUM_MODES: readonly ChecksumMode[] = ["when-required", "when-supported"];

/**
 * Applies one profile query parameter of an `s3://` or `gs://` URL to `spec`; false when
 * `rawKey` is not one (the caller reports it as unknown).
 * @throws {ConfigError} for an invalid value, prefixed with `where`.
 */
export function applyProfileQueryParam(
  spec: S3ReplicaSpec,
  rawKey: string,
  value: string,
  where: string,
): boolean {
  const key = QUERY_ALIASES[rawKey] ?? rawKey;
  const bool = () => {
    if (value === "true") return true;
    if (value === "false") return false;
    throw new ConfigError(`${where}: ${rawKey} must be true or false, got "${value}"`);
  };
  switch (key) {
    case "provider":
      spec.provider = providerValue(value, `${where}: ${rawKey}`);
      return true;
    case "checksum-mode":
      spec.checksumMode = checksumValue(value, `${where}: ${rawKey}`);
      return true;
    case "sign-payload":
      spec.signPayload = bool();
      return true;
    case "require-content-md5":
      spec.requireContentMD5 = bool();
      return true;
    case "sign-accept-encoding":
      spec.signAcceptEncoding = bool();
      return true;
    case "tigris-consistent":
      spec.tigrisConsistent = bool();
      return true;
    case "concurrency":
      spec.concurrency = positiveInteger(value, `${where}: ${rawKey}`);
      return true;
    case "part-size": {
      const bytes = positiveInteger(value, `${where}: ${rawKey}`);
      if (bytes < 5 * 1024 * 1024) {
        throw new ConfigError(`${where}: ${rawKey} must be at least 5242880 (5 MiB)`);
      }
      spec.partSize = bytes;
      return true;
    }
    default:
      return false;
  }
}

/** The query parameters {@linkcode applyProfileQueryParam} accepts, for error messages. */
export const PROFILE_QUERY_PARAMS = "provider, checksum-mode, sign-payload, " +
  "require-content-md5, sign-accept-encoding, part-size, concurrency, tigris-consistent";

/**
 * Reads the profile keys of one S3 replica into `spec`: the replica's own key, else the URL's
 * value (already in `spec`), else the top-level default.
 * @throws {ConfigError} (through the readers) with `file:line:` for an invalid value.
 */
export function readProfileKeys(
  replica: MapReader,
  top: MapReader,
  spec: S3ReplicaSpec,
  urlParams: URLSearchParams | undefined,
): void {
  const inURL = (key: ProfileKey) =>
    urlParams !== undefined &&
    [...urlParams.keys()].some((raw) => (QUERY_ALIASES[raw] ?? raw) === key);
  const from = (key: ProfileKey): MapReader | undefined =>
    replica.has(key) ? replica : inURL(key) ? undefined : top;
  const provider = from("provider")?.choice<S3Provider>("provider", S3_PROVIDERS);
  if (provider !== undefined) spec.provider = provider;
  const checksum = from("checksum-mode")?.choice<ChecksumMode>("checksum-mode", CHECKSUM_MODES);
  if (checksum !== undefined) spec.checksumMode = checksum;
  const signPayload = from("sign-payload")?.bool("sign-payload");
  if (signPayload !== undefined) spec.signPayload = signPayload;
  const md5 = from("require-content-md5")?.bool("require-content-md5");
  if (md5 !== undefined) spec.requireContentMD5 = md5;
  const acceptEncoding = from("sign-accept-encoding")?.bool("sign-accept-encoding");
  if (acceptEncoding !== undefined) spec.signAcceptEncoding = acceptEncoding;
  const concurrency = from("concurrency")?.integer("concurrency", 1);
  if (concurrency !== undefined) spec.concurrency = concurrency;
  const tigris = from("tigris-consistent")?.bool("tigris-consistent");
  if (tigris !== undefined) spec.tigrisConsistent = tigris;
}

/**
 * Turns a spec parsed from `gs://bucket/path` (or `type: gs`) into GCS through its
 * S3-interoperable XML endpoint: provider `gcs`, endpoint storage.googleapis.com unless one
 * is given, path-style addressing.
 */
export function gcsSpec(spec: S3ReplicaSpec): S3ReplicaSpec {
  const endpoint = spec.endpoint ?? GCS_ENDPOINT;
  return { ...spec, provider: spec.provider ?? "gcs", endpoint, forcePathStyle: true };
}

function providerValue(value: string, where: string): S3Provider {
  if ((S3_PROVIDERS as readonly string[]).includes(value)) return value as S3Provider;
  throw new ConfigError(`${where} must be one of ${S3_PROVIDERS.join(", ")}, got "${value}"`);
}

function checksumValue(value: string, where: string): ChecksumMode {
  if ((CHECKSUM_MODES as readonly string[]).includes(value)) return value as ChecksumMode;
  throw new ConfigError(`${where} must be when-required or when-supported, got "${value}"`);
}

function positiveInteger(value: string, where: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < 1) {
    throw new ConfigError(`${where} must be a whole number ≥ 1, got "${value}"`);
  }
  return n;
}
