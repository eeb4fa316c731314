/**
 * S3 provider profiles: the handful of request-shaping settings S3-compatible providers
 * disagree on, with one set of defaults per provider and individual keys overriding them.
 *
 * | provider       | checksums      | sign payload | Content-MD5 | sign Accept-Encoding | other                  |
 * | -------------- | -------------- | ------------ | ----------- | -------------------- | ---------------------- |
 * | `aws`          | when-supported | yes          | yes         | yes                  |                        |
 * | `generic`      | when-required  | yes          | yes         | yes                  |                        |
 * | `r2`, `b2`, `hetzner`, `digitalocean`, `minio` | when-required | yes | yes | yes | path style for b2, minio |
 * | `tigris`       | when-required  | yes          | no          | yes                  | `X-Tigris-Consistent`  |
 * | `gcs`          | when-required  | yes          | yes         | no                   | single-object deletes  |
 *
 * Why each exists: the AWS SDK's default CRC trailers (aws-chunked) are rejected by R2, B2 and
 * most S3-compatibles (Litestream #918, #947); Hetzner and DigitalOcean need signed payloads
 * (#1059, #894); Tigris sheds load with HTTP 408 (#1433, retried for every provider) and
 * serves stale listings without its consistency header; GCS's XML API rewrites
 * `Accept-Encoding` in transit, so a signature covering it never verifies (#1394), and older
 * GCS endpoints answer the multi-object delete with NotImplemented.
 *
 * @module
 */

import { createHash } from "node:crypto";

/** Providers with a profile; `generic` is any other S3-compatible server. */
export type S3Provider =
  | "aws"
  | "r2"
  | "b2"
  | "hetzner"
  | "digitalocean"
  | "tigris"
  | "minio"
  | "gcs"
  | "generic";

/** Every provider name, in documentation order. */
export const S3_PROVIDERS: readonly S3Provider[] = [
  "aws",
  "r2",
  "b2",
  "hetzner",
  "digitalocean",
  "tigris",
  "minio",
  "gcs",
  "generic",
];

/**
 * When the AWS SDK adds CRC checksums to requests and validates them in responses:
 * `when-supported` (the SDK default, AWS) or `when-required` (only where the API demands one).
 */
export type ChecksumMode = "when-required" | "when-supported";

/** The profile settings a replica may set one by one (config keys in parentheses). */
export interface S3ProfileOptions {
  /** (`provider`) Default: detected from the endpoint's host, else `aws`/`generic`. */
  provider?: S3Provider;
  /** (`checksum-mode`) CRC checksum headers/trailers on requests and response validation. */
  checksumMode?: ChecksumMode;
  /** (`sign-payload`) Sign the body's SHA-256; false sends `UNSIGNED-PAYLOAD`. */
  signPayload?: boolean;
  /** (`require-content-md5`) Send Content-MD5 on DeleteObjects, as older S3 APIs demand. */
  requireContentMD5?: boolean;
  /** (`sign-accept-encoding`) Keep `Accept-Encoding` in the signed headers (false: drop the header). */
  signAcceptEncoding?: boolean;
  /** (`concurrency`) Parts of one multipart upload in flight at once. */
  concurrency?: number;
  /** (`tigris-consistent`) Send `X-Tigris-Consistent: true` (read-after-write across regions). */
  tigrisConsistent?: boolean;
}

/** A fully resolved profile: what the client actually does. */
export interface S3Profile {
  provider: S3Provider;
  /** Why this provider: named in the config, recognised from the endpoint, or the default. */
  providerSource: "config" | "endpoint" | "default";
  checksumMode: ChecksumMode;
  signPayload: boolean;
  requireContentMD5: boolean;
  signAcceptEncoding: boolean;
  concurrency: number;
  tigrisConsistent: boolean;
  /** Multi-object DeleteObjects (false: one DeleteObject per key). */
  batchDelete: boolean;
  /** Path-style addressing unless the replica says otherwise. */
  forcePathStyle: boolean;
}

type Defaults = Omit<S3Profile, "provider" | "providerSource" | "forcePathStyle"> & {
  /** Path style regardless of whether an endpoint is set (undefined: only with an endpoint). */
  pathStyle?: boolean;
};

const BASE: Defaults = {
  checksumMode: "when-required",
  signPayload: true,
  requireContentMD5: true,
  signAcceptEncoding: true,
  concurrency: 2,
  tigrisConsistent: false,
  batchDelete: true,
};

const DEFAULTS: Record<S3Provider, Defaults> = {
  aws: { ...BASE, checksumMode: "when-supported" },
  generic: BASE,
  r2: BASE,
  b2: { ...BASE, pathStyle: true },
  hetzner: BASE,
  digitalocean: BASE,
  minio: { ...BASE, pathStyle: true },
  tigris: { ...BASE, requireContentMD5: false, tigrisConsistent: true },
  gcs: { ...BASE, signAcceptEncoding: false, batchDelete: false, pathStyle: true },
};

/** GCS's S3-interoperable (XML API) endpoint, used for `gs://` replicas. */
export const GCS_ENDPOINT = "https://storage.googleapis.com";

/**
 * The provider an endpoint obviously belongs to, from its host name (the same rules as
 * Litestream's endpoint detection), or undefined. No endpoint means AWS.
 */
export function detectProvider(endpoint: string | undefined): S3Provider | undefined {
  if (endpoint === undefined) return "aws";
  let host: string;
  try {
    host = new URL(endpoint).hostname.toLowerCase().replace(/\.$/, "");
  } catch {
    return undefined;
  }
  if (/(^|\.)amazonaws\.com(\.cn)?$/.test(host)) return "aws";
  if (host.endsWith(".r2.cloudflarestorage.com")) return "r2";
  if (host.endsWith(".backblazeb2.com")) return "b2";
  if (host.endsWith(".your-objectstorage.com")) return "hetzner";
  if (host.endsWith(".digitaloceanspaces.com")) return "digitalocean";
  if (host === "fly.storage.tigris.dev" || host === "t3.storage.dev") return "tigris";
  if (isGCSHost(host)) return "gcs";
  return undefined;
}

/**
 * GCS XML API hosts: `storage.googleapis.com`, `us-central1-storage.googleapis.com`,
 * `storage.me-central2.rep.googleapis.com`, `storage.mtls.googleapis.com`; not a
 * virtual-hosted `bucket.storage.googleapis.com` nor a look-alike suffix.
 */
function isGCSHost(host: string): boolean {
  const labels = host.split(".");
  if (labels.length < 3 || labels.some((label) => label === "")) return false;
  if (labels.at(-2) !== "googleapis" || labels.at(-1) !== "com") return false;
  if (labels.length > 3 && labels[1].split("-").includes("storage")) return false;
  return labels[0].split("-").includes("storage");
}

/**
 * The profile a replica runs with: the provider's defaults (named, or detected from the
 * endpoint), each setting given in `options` overriding its default.
 * @throws {RangeError} for a concurrency below 1.
 */
export function resolveS3Profile(
  options: S3ProfileOptions & { endpoint?: string; forcePathStyle?: boolean },
): S3Profile {
  const detected = detectProvider(options.endpoint);
  const provider = options.provider ?? detected ?? "generic";
  const providerSource = options.provider !== undefined
    ? "config"
    : detected !== undefined && options.endpoint !== undefined
    ? "endpoint"
    : "default";
  const { pathStyle, ...defaults } = DEFAULTS[provider];
  const concurrency = options.concurrency ?? defaults.concurrency;
  if (!Number.isSafeInteger(concurrency) || concurrency < 1) {
    throw new RangeError(`S3 upload concurrency must be a whole number ≥ 1, got ${concurrency}`);
  }
  return {
    ...defaults,
    provider,
    providerSource,
    checksumMode: options.checksumMode ?? defaults.checksumMode,
    signPayload: options.signPayload ?? defaults.signPayload,
    requireContentMD5: options.requireContentMD5 ?? defaults.requireContentMD5,
    signAcceptEncoding: options.signAcceptEncoding ?? defaults.signAcceptEncoding,
    concurrency,
    tigrisConsistent: options.tigrisConsistent ?? defaults.tigrisConsistent,
    forcePathStyle: options.forcePathStyle ?? pathStyle ?? options.endpoint !== undefined,
  };
}

/** The profile as log fields (`provider`, `via`, then the settings), for the one log line. */
export function profileFields(profile: S3Profile): Record<string, string | number | boolean> {
  return {
    provider: profile.provider,
    via: profile.providerSource,
    "checksum-mode": profile.checksumMode,
    "sign-payload": profile.signPayload,
    "require-content-md5": profile.requireContentMD5,
    "sign-accept-encoding": profile.signAcceptEncoding,
    concurrency: profile.concurrency,
    ...(profile.tigrisConsistent ? { "tigris-consistent": true } : {}),
    ...(profile.batchDelete ? {} : { "batch-delete": false }),
  };
}

/** The part of the SDK client the profile hooks into. */
interface MiddlewareHost {
  middlewareStack: {
    add(middleware: unknown, options: object): void;
    addRelativeTo(middleware: unknown, options: object): void;
  };
}

interface HttpRequestLike {
  headers: Record<string, string>;
  body?: unknown;
}

/**
 * Installs the profile's request shaping on an SDK client: the Tigris header, Content-MD5 on
 * DeleteObjects, unsigned payloads, Accept-Encoding left out of the signature, and HTTP 408 /
 * `RequestCanceled` answers retried like any transient error.
 */
export function applyS3Profile(client: MiddlewareHost, profile: S3Profile): void {
  const stack = client.middlewareStack;
  stack.add(
    (next: (args: { request: unknown }) => Promise<unknown>, context: { commandName?: string }) =>
    (args: { request: unknown }) => {
      const request = args.request as HttpRequestLike;
      if (profile.tigrisConsistent) request.headers["x-tigris-consistent"] = "true";
      if (
        profile.requireContentMD5 && context.commandName === "DeleteObjectsCommand" &&
        (typeof request.body === "string" || request.body instanceof Uint8Array) &&
        !hasHeader(request, "content-md5")
      ) {
        request.headers["content-md5"] = createHash("md5").update(request.body).digest("base64");
      }
      return next(args);
    },
    { step: "build", priority: "low", name: "sluiceProfileHeaders" },
  );
  stack.addRelativeTo(
    (
      next: (args: { request: unknown }) => Promise<unknown>,
      context: { commandName?: string },
    ) =>
    (args: { request: unknown }) => {
      const request = args.request as HttpRequestLike;
      if (!profile.signAcceptEncoding) deleteHeader(request, "accept-encoding");
      if (
        profile.checksumMode === "when-required" &&
        context.commandName === "DeleteObjectsCommand" &&
        hasHeader(request, "content-md5")
      ) {
        // The SDK adds a CRC32 to DeleteObjects even when checksums are only "required"; the
        // Content-MD5 already satisfies the API, and stores that reject checksum headers (R2,
        // B2 at the time of Litestream #918/#947) then accept the request.
        for (const key of Object.keys(request.headers)) {
          const name = key.toLowerCase();
          if (name.startsWith("x-amz-checksum-") || name === "x-amz-sdk-checksum-algorithm") {
            delete request.headers[key];
          }
        }
      }
      if (!profile.signPayload && !hasHeader(request, "x-amz-content-sha256")) {
        request.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD";
      }
      return next(args);
    },
    {
      relation: "before",
      toMiddleware: "httpSigningMiddleware",
      name: "sluiceProfileSigning",
    },
  );
  stack.add(
    (next: (args: unknown) => Promise<unknown>) => async (args: unknown) => {
      try {
        return await next(args);
      } catch (err) {
        if (isLoadShedding(err)) {
          // The SDK's classification ignores 408; mark it transient so standard retry applies.
          (err as { $retryable?: { throttling: boolean } }).$retryable = { throttling: false };
        }
        throw err;
      }
    },
    { step: "deserialize", priority: "high", name: "sluiceRetry408" },
  );
}

/** HTTP 408 or Tigris' `RequestCanceled`: the server shed the request; trying again is safe. */
export function isLoadShedding(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
  return status === 408 || err.name === "RequestCanceled";
}

function hasHeader(request: HttpRequestLike, name: string): boolean {
  return Object.keys(request.headers).some((key) => key.toLowerCase() === name);
}

function deleteHeader(request: HttpRequestLike, name: string): void {
  for (const key of Object.keys(request.headers)) {
    if (key.toLowerCase() === name) delete request.headers[key];
  }
}
