/**
 * A replica in an S3 bucket (AWS or any S3-compatible server), in Litestream's layout
 * `<path>/<level as %04x>/<min>-<max>.ltx` with the creation time in the
 * `x-amz-meta-litestream-timestamp` metadata (FORMAT.md §2.3).
 *
 * Request economy matters (requests cost money and an idle database must cost nothing): no
 * HEAD before PUT, no listing unless asked, one PUT per small file. Every HTTP request,
 * retries included, is counted in {@linkcode S3ReplicaClient.requestCount}.
 *
 * @module
 */

import type {
  GetObjectCommandOutput,
  ListObjectsV2CommandOutput,
  S3Client,
  S3ClientConfig,
} from "@aws-sdk/client-s3";
import { loadS3SDK, type S3SDK } from "./_s3_sdk.ts";
import { posix } from "node:path";
import {
  type LeaseStore,
  type ListOptions,
  type LTXFileId,
  type LTXFileInfo,
  NotFoundError,
  type OpenOptions,
  type ReplicaClient,
  ReplicaError,
} from "./client.ts";
import {
  assertFileId,
  assertLevel,
  assertRange,
  ltxFilename,
  objectLevelPrefix,
  parseLTXFilename,
} from "./_names.ts";
import { formatTXID } from "../ltx/mod.ts";
import { formatRFC3339Nano, parseRFC3339 } from "./_timestamp.ts";
import { type RangeBody, resumableStream } from "./_resumable_stream.ts";
import { s3LeaseStore } from "./_s3_lease.ts";
import {
  applyS3Profile,
  GCS_ENDPOINT,
  profileFields,
  resolveS3Profile,
  type S3Profile,
  type S3ProfileOptions,
} from "./_s3_profile.ts";

/** S3's minimum multipart part size, also the default threshold between PUT and multipart. */
export const MIN_PART_SIZE = 5 * 1024 * 1024;
/** S3's limit of keys per DeleteObjects request. */
const DELETE_BATCH_SIZE = 1000;
/** HeadObject requests kept in flight when a listing reads metadata. */
const HEAD_CONCURRENCY = 8;
/** The user metadata key Litestream stores the LTX header timestamp under. */
export const TIMESTAMP_METADATA_KEY = "litestream-timestamp";

/** Single DeleteObject requests kept in flight where DeleteObjects is not available (GCS). */
const DELETE_CONCURRENCY = 8;

/**
 * Where and how to reach one S3 replica. The {@linkcode S3ProfileOptions} (provider,
 * checksum mode, payload signing, concurrency, …) shape the requests; see `_s3_profile.ts`.
 */
export interface S3Spec extends S3ProfileOptions {
  /** Bucket name. sluice never creates buckets. */
  bucket: string;
  /** Key prefix; cleaned like Go's `path.Clean`, leading `/` stripped. */
  path: string;
  /** Region. Default: the SDK chain (AWS_REGION, profile), else `us-east-1`. */
  region?: string;
  /** Endpoint URL of an S3-compatible server. Default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, AWS. */
  endpoint?: string;
  /** Path-style addressing. Default: true for a non-AWS endpoint, false for AWS. */
  forcePathStyle?: boolean;
  /** Static credentials; when absent the SDK's default chain is used (env, profiles, …). */
  accessKeyId?: string;
  /** Secret for {@linkcode S3Spec.accessKeyId}. Never logged or shown in errors. */
  secretAccessKey?: string;
  /** Optional session token for temporary static credentials. */
  sessionToken?: string;
  /** Bodies above this size are sent as multipart uploads of this part size. Default 5 MiB (minimum). */
  partSize?: number;
  /** HTTP attempts per request (SDK standard retry: backoff with jitter). Default 5. */
  maxAttempts?: number;
  /** Times a broken download is resumed without progress. Default 3. */
  readRetries?: number;
  /** Base of the resume backoff, `readRetryDelayMs × 2ⁿ`. Default 250. */
  readRetryDelayMs?: number;
}

/**
 * Reads and writes LTX files in one bucket under one prefix.
 *
 * Writes below the part size are a single PutObject; larger streams go through a multipart
 * upload that is aborted on failure, so a failed write never leaves a visible object.
 * Downloads resume at their byte offset when a connection drops mid-body.
 */
export class S3ReplicaClient implements ReplicaClient {
  /** Always `"s3"`. */
  readonly type = "s3";
  /** `s3://bucket/path` (never credentials or endpoint userinfo). */
  readonly location: string;
  /** The bucket. */
  readonly bucket: string;
  /** The cleaned key prefix without trailing slash; `""` for the bucket root. */
  readonly path: string;
  /** The endpoint for messages (userinfo removed), or `"AWS S3"`. */
  readonly endpointLabel: string;
  /** The provider profile in effect (named, detected from the endpoint, or the default). */
  readonly profile: S3Profile;

  readonly #config: S3ClientConfig;
  #client?: Promise<{ client: S3Client; sdk: S3SDK }>;
  readonly #partSize: number;
  readonly #readRetries: number;
  readonly #readRetryDelayMs: number;
  #requestCount = 0;
  #closed = false;
  #batchDelete: boolean;

  /**
   * Creates the SDK client; no request is made until the first operation.
   * @throws {RangeError} for an empty bucket, a part size below 5 MiB or a concurrency below 1.
   */
  constructor(spec: S3Spec) {
    if (!spec.bucket) throw new RangeError("S3 replica needs a bucket name");
    this.#partSize = spec.partSize ?? MIN_PART_SIZE;
    if (!Number.isSafeInteger(this.#partSize) || this.#partSize < MIN_PART_SIZE) {
      throw new RangeError(`S3 part size ${spec.partSize} is below the 5 MiB minimum`);
    }
    this.#readRetries = spec.readRetries ?? 3;
    this.#readRetryDelayMs = spec.readRetryDelayMs ?? 250;
    this.bucket = spec.bucket;
    this.path = cleanPath(spec.path);

    const endpoint = spec.endpoint ??
      (spec.provider === "gcs" ? GCS_ENDPOINT : undefined) ??
      envValue("AWS_ENDPOINT_URL_S3") ?? envValue("AWS_ENDPOINT_URL");
    const custom = endpoint !== undefined && !isAWSEndpoint(endpoint);
    this.endpointLabel = endpoint === undefined ? "AWS S3" : redactEndpoint(endpoint);
    this.profile = resolveS3Profile({
      ...spec,
      endpoint: custom ? endpoint : undefined,
      forcePathStyle: spec.forcePathStyle,
    });
    this.#batchDelete = this.profile.batchDelete;
    const scheme = this.profile.provider === "gcs" ? "gs" : "s3";
    this.location = `${scheme}://${this.bucket}${this.path ? `/${this.path}` : ""}`;

    // Checksums: the SDK's default CRC headers and aws-chunked trailers are AWS's; most
    // S3-compatible servers reject them, so other profiles send them only where required.
    const checksums = this.profile.checksumMode === "when-supported"
      ? "WHEN_SUPPORTED"
      : "WHEN_REQUIRED";
    const config: S3ClientConfig = {
      region: spec.region ?? (this.profile.provider === "gcs" ? "auto" : defaultRegion()),
      endpoint,
      forcePathStyle: this.profile.forcePathStyle,
      followRegionRedirects: !custom,
      maxAttempts: spec.maxAttempts ?? 5,
      retryMode: "standard",
      requestHandler: { connectionTimeout: 10_000, requestTimeout: 120_000 },
      requestChecksumCalculation: checksums,
      responseChecksumValidation: checksums,
    };
    if (spec.accessKeyId !== undefined || spec.secretAccessKey !== undefined) {
      config.credentials = {
        accessKeyId: spec.accessKeyId ?? "",
        secretAccessKey: spec.secretAccessKey ?? "",
        sessionToken: spec.sessionToken,
      };
    }
    this.#config = config;
  }

  /** The SDK client, created (and the SDK loaded) on the first request. */
  #sdk(): Promise<{ client: S3Client; sdk: S3SDK }> {
    this.#client ??= loadS3SDK().then((sdk) => {
      const client = new sdk.S3Client(this.#config);
      applyS3Profile(client, this.profile);
      // Innermost step, so it runs once per HTTP attempt (retries included).
      client.middlewareStack.add((next) => (args) => {
        this.#requestCount++;
        return next(args);
      }, { step: "deserialize", name: "sluiceRequestCounter", priority: "low" });
      if (this.#closed) client.destroy();
      return { client, sdk };
    });
    return this.#client;
  }

  /**
   * The SDK client (with this replica's profile installed) and the SDK module, for the probes
   * of `sluice doctor` that the {@linkcode ReplicaClient} interface cannot express (HeadBucket,
   * conditional writes, checksum headers, multipart limits). Loads the SDK on first use.
   */
  sdkClient(): Promise<{ client: S3Client; sdk: S3SDK }> {
    return this.#sdk();
  }

  /** Bodies above this many bytes are multipart uploads of parts this size. */
  get partSize(): number {
    return this.#partSize;
  }

  /** HTTP requests sent so far by this client, retries and multipart parts included. */
  get requestCount(): number {
    return this.#requestCount;
  }

  /** The key prefix of one level, ending in `/`. */
  levelPrefix(level: number): string {
    return objectLevelPrefix(this.path, level);
  }

  /** The object key of one LTX file. */
  objectKey(file: LTXFileId): string {
    return this.levelPrefix(file.level) + ltxFilename(file.minTXID, file.maxTXID);
  }

  /**
   * Lists one level (paginated ListObjectsV2; lexical key order is numeric order for the fixed
   * width names). With `useMetadata`, each object's `litestream-timestamp` is read with a
   * HeadObject; otherwise `createdAt` is LastModified.
   * @throws {ReplicaError} when the bucket is missing or listing fails.
   */
  async *ltxFiles(level: number, options: ListOptions = {}): AsyncIterable<LTXFileInfo> {
    assertLevel(level);
    const prefix = this.levelPrefix(level);
    const seekTXID = options.seekTXID ?? 0;
    // Keys of files with minTXID < seek sort before `<prefix><seek hex>`; let S3 skip them.
    let startAfter = seekTXID > 0 ? prefix + formatTXID(seekTXID) : undefined;
    let token: string | undefined;
    do {
      let page: ListObjectsV2CommandOutput;
      try {
        const { client, sdk } = await this.#sdk();
        page = await client.send(
          new sdk.ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: prefix,
            ContinuationToken: token,
            StartAfter: token ? undefined : startAfter,
          }),
        );
      } catch (err) {
        throw this.#error(`list ${prefix}`, err);
      }
      const infos: LTXFileInfo[] = [];
      for (const object of page.Contents ?? []) {
        if (object.Key === undefined) continue;
        const parsed = parseLTXFilename(object.Key.slice(prefix.length));
        if (!parsed || parsed.minTXID < seekTXID) continue;
        infos.push({
          level,
          ...parsed,
          size: object.Size ?? 0,
          createdAt: object.LastModified ?? new Date(0),
        });
      }
      if (options.useMetadata) {
        yield* (await this.#withMetadataTimestamps(infos));
      } else {
        yield* infos;
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
      startAfter = undefined;
    } while (token);
  }

  /**
   * Streams one object, or a byte range of it, with a ranged GetObject. If the connection
   * drops or the body ends before its Content-Length, the rest is fetched with a new ranged
   * read from the byte reached (If-Match on the ETag, so a replaced object is not spliced).
   * @throws {NotFoundError} when the object does not exist.
   * @throws {ReplicaError} when the bucket is missing or the request fails.
   */
  async openLTXFile(
    file: LTXFileId,
    options: OpenOptions = {},
  ): Promise<ReadableStream<Uint8Array>> {
    assertFileId(file);
    const offset = options.offset ?? 0;
    assertRange(offset, options.length);
    const key = this.objectKey(file);
    if (options.length === 0) return emptyStream();
    const end = options.length === undefined ? undefined : offset + options.length - 1;
    let first: GetObjectCommandOutput;
    try {
      first = await this.#getObject(key, offset, end, undefined);
    } catch (err) {
      if (httpStatus(err) === 416) return emptyStream(); // offset at or past the end
      throw this.#error(`read ${key}`, err);
    }
    const etag = first.ETag;
    return resumableStream(
      bodyOf(first),
      async (received) => {
        try {
          return bodyOf(await this.#getObject(key, offset + received, end, etag));
        } catch (err) {
          throw this.#error(`resume reading ${key}`, err);
        }
      },
      {
        retries: this.#readRetries,
        baseDelayMs: this.#readRetryDelayMs,
        isPermanent: (err) => err instanceof NotFoundError || isPreconditionFailed(err),
        wrapError: (message, cause) =>
          cause instanceof NotFoundError
            ? cause
            : new ReplicaError(`s3 replica ${this.location}: read ${key}: ${message}`, { cause }),
      },
    );
  }

  /**
   * Uploads one file with `x-amz-meta-litestream-timestamp` set to `timestamp`. Up to the part
   * size it is one PutObject; beyond it a multipart upload, aborted on any failure. A body
   * stream is cancelled when the upload fails, so its producer sees the failure.
   * @throws {ReplicaError} when the bucket is missing, the body errors or the upload fails.
   */
  async writeLTXFile(
    file: LTXFileId,
    body: Uint8Array | ReadableStream<Uint8Array>,
    timestamp: number,
  ): Promise<LTXFileInfo> {
    assertFileId(file);
    if (!Number.isFinite(timestamp)) throw new RangeError(`invalid LTX timestamp ${timestamp}`);
    const key = this.objectKey(file);
    const metadata = { [TIMESTAMP_METADATA_KEY]: formatRFC3339Nano(timestamp) };
    const info = (size: number): LTXFileInfo => ({
      level: file.level,
      minTXID: file.minTXID,
      maxTXID: file.maxTXID,
      size,
      createdAt: new Date(timestamp),
    });

    let bytes: Uint8Array | undefined;
    let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
    let head: Uint8Array[] = [];
    if (body instanceof Uint8Array) {
      if (body.length <= this.#partSize) bytes = body;
      else head = [body];
    } else {
      reader = body.getReader();
      try {
        const buffered = await readAtLeast(reader, this.#partSize + 1);
        if (buffered.done) bytes = concat(buffered.chunks);
        else head = buffered.chunks;
      } catch (err) {
        await reader.cancel(err).catch(() => {});
        throw this.#error(`write ${key}: reading the body`, err);
      }
    }

    if (bytes !== undefined) {
      try {
        const { client, sdk } = await this.#sdk();
        await client.send(
          new sdk.PutObjectCommand({
            Bucket: this.bucket,
            Key: key,
            Body: bytes,
            ContentLength: bytes.length,
            Metadata: metadata,
          }),
        );
      } catch (err) {
        throw this.#error(`write ${key}`, err);
      }
      return info(bytes.length);
    }

    let size = 0;
    const counted = new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        size += chunk.length;
        controller.enqueue(chunk);
      },
    });
    const source = prependedStream(head, reader);
    const { client, sdk } = await this.#sdk();
    const upload = new sdk.Upload({
      client,
      params: {
        Bucket: this.bucket,
        Key: key,
        Body: source.pipeThrough(counted),
        Metadata: metadata,
      },
      partSize: this.#partSize,
      queueSize: this.profile.concurrency,
      leavePartsOnError: false,
    });
    try {
      await upload.done();
    } catch (err) {
      await reader?.cancel(err).catch(() => {});
      throw this.#error(`multipart write ${key}`, err);
    }
    return info(size);
  }

  /**
   * Deletes objects with DeleteObjects, 1000 keys per request. Missing keys are not an error
   * (S3 reports them as deleted); any per-key error is.
   * @throws {ReplicaError} naming the first key that could not be deleted.
   */
  async deleteLTXFiles(files: readonly LTXFileId[]): Promise<void> {
    const keys = files.map((file) => {
      assertFileId(file);
      return this.objectKey(file);
    });
    await this.#deleteKeys(keys);
  }

  /**
   * Deletes every object under the level prefixes `<path>/XXXX/` (LTX files and anything else
   * stored there). Other keys under the path are left alone, so an empty path never empties
   * the whole bucket.
   * @throws {ReplicaError} when listing or deleting fails.
   */
  async deleteAll(): Promise<void> {
    const prefix = this.path ? `${this.path}/` : "";
    let startAfter: string | undefined;
    for (;;) {
      let page: ListObjectsV2CommandOutput;
      try {
        // StartAfter (not a continuation token) stays valid while the listed keys are deleted.
        const { client, sdk } = await this.#sdk();
        page = await client.send(
          new sdk.ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: prefix,
            StartAfter: startAfter,
          }),
        );
      } catch (err) {
        throw this.#error(`list ${prefix || "/"}`, err);
      }
      const keys = (page.Contents ?? []).map((o) => o.Key).filter((k): k is string =>
        k !== undefined
      );
      await this.#deleteKeys(keys.filter((k) => /^[0-9a-f]{4}\//.test(k.slice(prefix.length))));
      if (!page.IsTruncated || keys.length === 0) return;
      startAfter = keys[keys.length - 1];
    }
  }

  /** The owner lease at `<path>/sluice-lease.json`, written with S3's conditional headers. */
  lease(): LeaseStore {
    return s3LeaseStore({
      location: this.location,
      bucket: this.bucket,
      prefix: this.path ? `${this.path}/` : "",
      probeKey: `${this.endpointLabel}/${this.bucket}`,
      sdk: () => this.#sdk(),
      error: (operation, err) => this.#error(operation, err),
    });
  }

  /** Destroys the SDK client and its sockets. Idempotent. */
  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      void this.#client?.then(({ client }) => client.destroy(), () => {});
    }
    return Promise.resolve();
  }

  async #getObject(
    key: string,
    start: number,
    end: number | undefined,
    etag: string | undefined,
  ): Promise<GetObjectCommandOutput> {
    const range = start === 0 && end === undefined ? undefined : `bytes=${start}-${end ?? ""}`;
    const { client, sdk } = await this.#sdk();
    return await client.send(
      new sdk.GetObjectCommand({ Bucket: this.bucket, Key: key, Range: range, IfMatch: etag }),
    );
  }

  async #deleteKeys(keys: readonly string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += DELETE_BATCH_SIZE) {
      if (!this.#batchDelete) return await this.#deleteKeysOneByOne(keys.slice(i));
      const batch = keys.slice(i, i + DELETE_BATCH_SIZE);
      let errors;
      try {
        const { client, sdk } = await this.#sdk();
        const result = await client.send(
          new sdk.DeleteObjectsCommand({
            Bucket: this.bucket,
            Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
          }),
        );
        errors = (result.Errors ?? []).filter((e) => e.Code !== "NoSuchKey");
      } catch (err) {
        if (err instanceof Error && err.name === "NotImplemented") {
          // Older GCS XML endpoints and some S3-compatibles have no multi-object delete.
          this.#batchDelete = false;
          i -= DELETE_BATCH_SIZE;
          continue;
        }
        throw this.#error(`delete ${batch.length} object(s) from ${batch[0]}`, err);
      }
      if (errors.length > 0) {
        const [e] = errors;
        throw new ReplicaError(
          `s3 replica ${this.location}: could not delete ${errors.length} object(s); first: ` +
            `${e.Key}: ${e.Code ?? "error"}: ${e.Message ?? ""}`.trimEnd(),
        );
      }
    }
  }

  /** One DeleteObject per key (bounded fan-out), for stores without DeleteObjects (GCS). */
  async #deleteKeysOneByOne(keys: readonly string[]): Promise<void> {
    let next = 0;
    const worker = async () => {
      while (next < keys.length) {
        const key = keys[next++];
        try {
          const { client, sdk } = await this.#sdk();
          await client.send(new sdk.DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
        } catch (err) {
          if (httpStatus(err) === 404 && !isNoSuchBucket(err)) continue; // already gone
          throw this.#error(`delete ${key}`, err);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(DELETE_CONCURRENCY, keys.length) }, worker));
  }

  /** Replaces each file's createdAt with its metadata timestamp (order kept, bounded fan-out). */
  async #withMetadataTimestamps(infos: LTXFileInfo[]): Promise<LTXFileInfo[]> {
    const out: (LTXFileInfo | undefined)[] = new Array(infos.length);
    let next = 0;
    const worker = async () => {
      while (next < infos.length) {
        const i = next++;
        const info = infos[i];
        const key = this.objectKey(info);
        try {
          const { client, sdk } = await this.#sdk();
          const head = await client.send(
            new sdk.HeadObjectCommand({ Bucket: this.bucket, Key: key }),
          );
          const text = head.Metadata?.[TIMESTAMP_METADATA_KEY];
          const ms = text === undefined ? undefined : parseRFC3339(text);
          out[i] = ms === undefined ? info : { ...info, createdAt: new Date(ms) };
        } catch (err) {
          if (httpStatus(err) === 404 && !isNoSuchBucket(err)) continue; // deleted meanwhile
          throw this.#error(`read metadata of ${key}`, err);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(HEAD_CONCURRENCY, infos.length) }, worker));
    return out.filter((i): i is LTXFileInfo => i !== undefined);
  }

  #error(operation: string, err: unknown): ReplicaError {
    if (err instanceof ReplicaError) return err;
    if (isNoSuchBucket(err)) {
      return new ReplicaError(
        `bucket "${this.bucket}" does not exist at ${this.endpointLabel}: create it first`,
        { cause: err },
      );
    }
    const name = err instanceof Error ? err.name : "Error";
    const message = err instanceof Error ? err.message : String(err);
    const status = httpStatus(err);
    const detail = `${name}${status ? ` (HTTP ${status})` : ""}: ${message}`;
    if (name === "NoSuchKey" || (status === 404 && name === "NotFound")) {
      return new NotFoundError(`s3 replica ${this.location}: ${operation}: object not found`, {
        cause: err,
      });
    }
    let hint = "";
    if (name === "CredentialsProviderError") {
      hint = this.profile.provider === "gcs"
        ? "; gs replicas use a GCS HMAC key: set access-key-id/secret-access-key or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        : "; set access-key-id/secret-access-key or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY";
    } else if (name === "SignatureDoesNotMatch" || name === "InvalidArgument") {
      hint =
        `; the ${this.profile.provider} profile may not fit ${this.endpointLabel}: run sluice doctor`;
    }
    return new ReplicaError(`s3 replica ${this.location}: ${operation}: ${detail}${hint}`, {
      cause: err,
    });
  }
}

/** Go's `path.Clean` of the prefix with leading and trailing slashes removed; `""` for root. */
export function cleanPath(path: string): string {
  const cleaned = posix.normalize(`/${path}`).replace(/^\/+|\/+$/g, "");
  return cleaned === "." ? "" : cleaned;
}

/** True for amazonaws.com endpoints (virtual-hosted style, region redirects apply). */
export function isAWSEndpoint(endpoint: string): boolean {
  try {
    const host = new URL(endpoint).hostname;
    return /(^|\.)amazonaws\.com(\.cn)?$/.test(host);
  } catch {
    return false;
  }
}

/** The endpoint without userinfo, query or fragment, for messages. */
function redactEndpoint(endpoint: string): string {
  try {
    const url = new URL(endpoint);
    return `${url.protocol}//${url.host}${url.pathname === "/" ? "" : url.pathname}`;
  } catch {
    return "the configured endpoint";
  }
}

/**
 * The SDK's region chain (AWS_REGION, shared config profile), falling back to `us-east-1`
 * instead of failing: S3-compatible servers rarely care, and AWS redirects are followed.
 */
function defaultRegion(): () => Promise<string> {
  let resolved: Promise<string> | undefined;
  return () => {
    resolved ??= (async () => {
      const probe = new (await loadS3SDK()).S3Client({});
      try {
        return await probe.config.region();
      } catch {
        return "us-east-1";
      } finally {
        probe.destroy();
      }
    })();
    return resolved;
  };
}

function envValue(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined; // no --allow-env: behave as unset
  }
}

function httpStatus(err: unknown): number | undefined {
  const meta = (err as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata;
  return meta?.httpStatusCode;
}

function isNoSuchBucket(err: unknown): boolean {
  if (err instanceof ReplicaError && err.message.includes("does not exist at")) return true;
  return err instanceof Error && err.name === "NoSuchBucket";
}

function isPreconditionFailed(err: unknown): boolean {
  const cause = err instanceof ReplicaError ? err.cause : err;
  return httpStatus(cause) === 412 ||
    (cause instanceof Error && cause.name === "PreconditionFailed");
}

function bodyOf(response: GetObjectCommandOutput): RangeBody {
  if (!response.Body) return { body: emptyStream(), length: 0 };
  return { body: response.Body.transformToWebStream(), length: response.ContentLength };
}

function emptyStream(): ReadableStream<Uint8Array> {
  return new ReadableStream({ start: (controller) => controller.close() });
}

/** Reads chunks until at least `limit` bytes are buffered or the stream ends. */
async function readAtLeast(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  limit: number,
): Promise<{ chunks: Uint8Array[]; done: boolean }> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  while (size < limit) {
    const { done, value } = await reader.read();
    if (done) return { chunks, done: true };
    chunks.push(value);
    size += value.length;
  }
  return { chunks, done: false };
}

/** `head` followed by whatever `reader` still yields. */
function prependedStream(
  head: Uint8Array[],
  reader: ReadableStreamDefaultReader<Uint8Array> | undefined,
): ReadableStream<Uint8Array> {
  let index = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (index < head.length) {
        controller.enqueue(head[index++]);
        return;
      }
      if (!reader) {
        controller.close();
        return;
      }
      const { done, value } = await reader.read();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    cancel(reason) {
      return reader?.cancel(reason);
    },
  }, { highWaterMark: 0 });
}

function concat(chunks: Uint8Array[]): Uint8Array {
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/**
 * One log record per distinct (endpoint, profile) among `specs`: what `replicate` logs once at
 * start, so an operator sees which provider settings shape the requests and why.
 */
export function describeS3Profiles(
  specs: readonly S3Spec[],
): Array<Record<string, string | number | boolean>> {
  const seen = new Map<string, Record<string, string | number | boolean>>();
  for (const spec of specs) {
    let client: S3ReplicaClient;
    try {
      client = new S3ReplicaClient(spec);
    } catch {
      continue; // invalid specs are reported by the client that uses them
    }
    const fields = { endpoint: client.endpointLabel, ...profileFields(client.profile) };
    seen.set(JSON.stringify(fields), fields);
    void client.close();
  }
  return [...seen.values()];
}
