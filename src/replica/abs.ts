/**
 * A replica in an Azure Blob Storage container (or Azurite), in Litestream's layout
 * `<path>/<level as %04x>/<min>-<max>.ltx` with the creation time in the `litestreamtimestamp`
 * blob metadata (Azure metadata names cannot hold hyphens; Litestream's abs client uses the same
 * name and reads it from listings, which carry metadata at no extra cost).
 *
 * Writes up to the block size are one Put Blob; larger streams are staged block by block (two
 * in flight) and committed with one Put Block List, so a failed write never becomes visible
 * (uncommitted blocks are discarded by Azure after a week). Downloads resume at their byte
 * offset when a connection drops (If-Match on the ETag). Deletes go in Blob Batch requests of
 * up to 256 blobs. The SDK retries 500/503 and network errors; 408/429/502/504 are retried here,
 * as Litestream's client does.
 *
 * @module
 */

import { Readable } from "node:stream";
import type {
  BlobDownloadResponseParsed,
  BlobHTTPHeaders,
  BlobItem,
  ContainerClient,
  ContainerListBlobFlatSegmentResponse,
} from "@azure/storage-blob";
import { loadABSSDK, loadAzureIdentity } from "./_abs_sdk.ts";
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
import { formatRFC3339Nano, parseRFC3339 } from "./_timestamp.ts";
import { type RangeBody, resumableStream } from "./_resumable_stream.ts";
import { absLeaseStore } from "./_abs_lease.ts";

/** The metadata name Litestream's abs client keeps the LTX header timestamp under. */
export const ABS_TIMESTAMP_METADATA_KEY = "litestreamtimestamp";
/** Default block size: bodies up to this are one Put Blob, larger ones are staged in blocks. */
export const ABS_DEFAULT_BLOCK_SIZE = 4 * 1024 * 1024;
/** Blob Batch's limit of sub-requests per batch. */
const DELETE_BATCH_SIZE = 256;
/** Blocks staged at once for a large write. */
const BLOCK_CONCURRENCY = 2;
/** Statuses retried here (the SDK's storage retry policy covers 500, 503 and network errors). */
const RETRIED_STATUSES = new Set([408, 429, 502, 504]);

/** Where and how to reach one Azure Blob Storage replica. */
export interface ABSSpec {
  /** Container name (Litestream's `bucket`). sluice never creates containers. */
  container: string;
  /** Blob name prefix; leading and trailing slashes removed, `""` for the container root. */
  path: string;
  /** Storage account name. Default: AZURE_STORAGE_ACCOUNT. Needed unless `endpoint` is given. */
  accountName?: string;
  /**
   * Shared key. Default: LITESTREAM_AZURE_ACCOUNT_KEY, then AZURE_STORAGE_KEY. Never logged.
   * Without a key or SAS token the Azure default credential chain is used.
   */
  accountKey?: string;
  /** SAS token (wins over the key, as in Litestream). Default: LITESTREAM_AZURE_SAS_TOKEN. */
  sasToken?: string;
  /** Blob service URL. Default `https://<account>.blob.core.windows.net`. */
  endpoint?: string;
  /** Bodies above this size are staged as blocks of this size. Default 4 MiB. */
  blockSize?: number;
  /** HTTP attempts per request (exponential backoff). Default 5. */
  maxAttempts?: number;
  /** Times a broken download is resumed without progress. Default 3. */
  readRetries?: number;
  /** Base of the resume backoff, `readRetryDelayMs × 2ⁿ`. Default 250. */
  readRetryDelayMs?: number;
}

/**
 * Reads and writes LTX files in one Azure container under one prefix. No request is made until
 * the first operation; the SDK is loaded then.
 */
export class ABSReplicaClient implements ReplicaClient {
  /** Always `"abs"`. */
  readonly type = "abs";
  /** `abs://[account@]container/path` (never keys or tokens). */
  readonly location: string;
  /** The container. */
  readonly container: string;
  /** The cleaned blob prefix without trailing slash; `""` for the container root. */
  readonly path: string;
  /** The service URL for messages (no query, so no SAS token). */
  readonly endpointLabel: string;

  readonly #serviceURL: string;
  readonly #accountName?: string;
  readonly #accountKey?: string;
  readonly #sasToken?: string;
  readonly #blockSize: number;
  readonly #maxAttempts: number;
  readonly #readRetries: number;
  readonly #readRetryDelayMs: number;
  #container?: Promise<ContainerClient>;

  /**
   * Resolves the settings and credentials; no request is made.
   * @throws {RangeError} for an empty container, no account name and no endpoint, or a block
   * size that is not a positive integer.
   */
  constructor(spec: ABSSpec) {
    if (!spec.container) throw new RangeError("abs replica needs a container (bucket) name");
    this.container = spec.container;
    this.path = cleanBlobPath(spec.path);
    this.#accountName = spec.accountName || envValue("AZURE_STORAGE_ACCOUNT");
    this.#accountKey = spec.accountKey || envValue("LITESTREAM_AZURE_ACCOUNT_KEY") ||
      envValue("AZURE_STORAGE_KEY");
    this.#sasToken = (spec.sasToken || envValue("LITESTREAM_AZURE_SAS_TOKEN") ||
      envValue("AZURE_STORAGE_SAS_TOKEN"))?.replace(/^\?/, "");
    const endpoint = spec.endpoint?.replace(/\/+$/, "");
    if (endpoint === undefined && !this.#accountName) {
      throw new RangeError(
        `abs replica ${spec.container}: needs account-name (or abs://ACCOUNT@container/path) or an endpoint`,
      );
    }
    this.#serviceURL = endpoint ?? `https://${this.#accountName}.blob.core.windows.net`;
    this.endpointLabel = redactServiceURL(this.#serviceURL);
    this.#blockSize = spec.blockSize ?? ABS_DEFAULT_BLOCK_SIZE;
    if (!Number.isSafeInteger(this.#blockSize) || this.#blockSize < 1) {
      throw new RangeError(`abs block size ${spec.blockSize} is not a positive integer`);
    }
    this.#maxAttempts = spec.maxAttempts ?? 5;
    this.#readRetries = spec.readRetries ?? 3;
    this.#readRetryDelayMs = spec.readRetryDelayMs ?? 250;
    const account = spec.accountName ? `${spec.accountName}@` : "";
    this.location = `abs://${account}${this.container}${this.path ? `/${this.path}` : ""}`;
  }

  /** The container client, created (and the SDK loaded) on the first request. */
  #client(): Promise<ContainerClient> {
    this.#container ??= (async () => {
      const sdk = await loadABSSDK();
      const options = {
        retryOptions: {
          maxTries: this.#maxAttempts,
          retryDelayInMs: 500,
          maxRetryDelayInMs: 30_000,
        },
        userAgentOptions: { userAgentPrefix: "sluice" },
      };
      let service;
      if (this.#sasToken) {
        const url = `${this.#serviceURL}?${this.#sasToken}`;
        service = new sdk.BlobServiceClient(
          url,
          sdk.newPipeline(new sdk.AnonymousCredential(), options),
        );
      } else if (this.#accountKey) {
        if (!this.#accountName) {
          throw new ReplicaError(
            `abs replica ${this.location}: an account key needs account-name (or abs://ACCOUNT@container/path)`,
          );
        }
        const credential = new sdk.StorageSharedKeyCredential(
          this.#accountName,
          this.#accountKey,
        );
        service = new sdk.BlobServiceClient(this.#serviceURL, sdk.newPipeline(credential, options));
      } else {
        const identity = await loadAzureIdentity();
        service = new sdk.BlobServiceClient(
          this.#serviceURL,
          sdk.newPipeline(new identity.DefaultAzureCredential(), options),
        );
      }
      return service.getContainerClient(this.container);
    })();
    return this.#container;
  }

  /** The blob name prefix of one level, ending in `/`. */
  levelPrefix(level: number): string {
    return objectLevelPrefix(this.path, level);
  }

  /** The blob name of one LTX file. */
  blobName(file: LTXFileId): string {
    return this.levelPrefix(file.level) + ltxFilename(file.minTXID, file.maxTXID);
  }

  /**
   * Lists one level (paginated List Blobs with metadata; lexical name order is numeric order
   * for the fixed-width names). `createdAt` is always the `litestreamtimestamp` metadata when
   * present (it comes with the listing), else the blob's creation time.
   * @throws {ReplicaError} when the container is missing or listing fails.
   */
  async *ltxFiles(level: number, options: ListOptions = {}): AsyncIterable<LTXFileInfo> {
    assertLevel(level);
    const prefix = this.levelPrefix(level);
    const seekTXID = options.seekTXID ?? 0;
    let token: string | undefined;
    do {
      const page = await this.#listPage(prefix, token);
      const infos: LTXFileInfo[] = [];
      for (const item of page.segment.blobItems) {
        const parsed = parseLTXFilename(item.name.slice(prefix.length));
        if (!parsed || parsed.minTXID < seekTXID) continue;
        infos.push({
          level,
          ...parsed,
          size: item.properties.contentLength ?? 0,
          createdAt: createdAtOf(item),
        });
      }
      yield* infos;
      token = page.continuationToken || undefined;
    } while (token);
  }

  /**
   * Streams one blob, or a byte range of it. If the connection drops mid-body, the rest is
   * fetched with a new ranged read from the byte reached (If-Match on the ETag).
   * @throws {NotFoundError} when the blob does not exist.
   * @throws {ReplicaError} when the container is missing or the request fails.
   */
  async openLTXFile(
    file: LTXFileId,
    options: OpenOptions = {},
  ): Promise<ReadableStream<Uint8Array>> {
    assertFileId(file);
    const offset = options.offset ?? 0;
    assertRange(offset, options.length);
    const name = this.blobName(file);
    if (options.length === 0) return emptyStream();
    const length = options.length;
    let first: BlobDownloadResponseParsed;
    try {
      first = await this.#retry(() => this.#download(name, offset, length, undefined));
    } catch (err) {
      if (statusOf(err) === 416) return emptyStream(); // offset at or past the end
      throw this.#error(`read ${name}`, err);
    }
    const etag = first.etag;
    return resumableStream(
      bodyOf(first),
      async (received) => {
        try {
          const rest = length === undefined ? undefined : length - received;
          return bodyOf(await this.#download(name, offset + received, rest, etag));
        } catch (err) {
          throw this.#error(`resume reading ${name}`, err);
        }
      },
      {
        retries: this.#readRetries,
        baseDelayMs: this.#readRetryDelayMs,
        isPermanent: (err) => err instanceof NotFoundError || statusOf(causeOf(err)) === 412,
        wrapError: (message, cause) =>
          cause instanceof NotFoundError
            ? cause
            : new ReplicaError(`abs replica ${this.location}: read ${name}: ${message}`, { cause }),
      },
    );
  }

  /**
   * Uploads one file with `litestreamtimestamp` metadata set to `timestamp`: one Put Blob up to
   * the block size, else staged blocks committed at the end (nothing is visible before the
   * commit). A body stream is cancelled when the upload fails, so its producer sees it.
   * @throws {ReplicaError} when the container is missing, the body errors or the upload fails.
   */
  async writeLTXFile(
    file: LTXFileId,
    body: Uint8Array | ReadableStream<Uint8Array>,
    timestamp: number,
  ): Promise<LTXFileInfo> {
    assertFileId(file);
    if (!Number.isFinite(timestamp)) throw new RangeError(`invalid LTX timestamp ${timestamp}`);
    const name = this.blobName(file);
    const metadata = { [ABS_TIMESTAMP_METADATA_KEY]: formatRFC3339Nano(timestamp) };
    const headers: BlobHTTPHeaders = { blobContentType: "application/octet-stream" };
    const info = (size: number): LTXFileInfo => ({
      level: file.level,
      minTXID: file.minTXID,
      maxTXID: file.maxTXID,
      size,
      createdAt: new Date(timestamp),
    });

    const reader = body instanceof Uint8Array ? undefined : body.getReader();
    const blocks = new BlockReader(body instanceof Uint8Array ? body : reader!, this.#blockSize);
    try {
      const first = await blocks.next();
      const second = first === undefined ? undefined : await blocks.next();
      const blob = (await this.#client()).getBlockBlobClient(name);
      if (second === undefined) {
        const bytes = first ?? new Uint8Array(0);
        await this.#retry(() =>
          blob.upload(bytes, bytes.length, {
            metadata,
            blobHTTPHeaders: headers,
            tier: "Hot",
          })
        );
        return info(bytes.length);
      }
      // Block IDs must all have the same length within a blob.
      const tag = crypto.randomUUID().slice(0, 8);
      const ids: string[] = [];
      let size = 0;
      const inFlight = new Set<Promise<void>>();
      let failure: unknown;
      const stage = (bytes: Uint8Array) => {
        const id = btoa(`sluice-${tag}-${String(ids.length).padStart(6, "0")}`);
        ids.push(id);
        size += bytes.length;
        const task = this.#retry(() => blob.stageBlock(id, bytes, bytes.length)).then(
          () => {},
          (err) => {
            failure ??= err;
          },
        ).finally(() => inFlight.delete(task));
        inFlight.add(task);
      };
      stage(first!);
      stage(second);
      for (;;) {
        while (inFlight.size >= BLOCK_CONCURRENCY) await Promise.race(inFlight);
        if (failure !== undefined) throw failure;
        const bytes = await blocks.next();
        if (bytes === undefined) break;
        stage(bytes);
      }
      await Promise.all(inFlight);
      if (failure !== undefined) throw failure;
      await this.#retry(() =>
        blob.commitBlockList(ids, { metadata, blobHTTPHeaders: headers, tier: "Hot" })
      );
      return info(size);
    } catch (err) {
      await reader?.cancel(err).catch(() => {});
      throw this.#error(`write ${name}`, err);
    }
  }

  /**
   * Deletes blobs with Blob Batch requests of up to 256 blobs. Missing blobs are not an error;
   * any other per-blob failure is.
   * @throws {ReplicaError} naming the first blob that could not be deleted.
   */
  async deleteLTXFiles(files: readonly LTXFileId[]): Promise<void> {
    const names = files.map((file) => {
      assertFileId(file);
      return this.blobName(file);
    });
    await this.#deleteBlobs(names);
  }

  /**
   * Deletes every blob under the level prefixes `<path>/XXXX/`. Other blobs under the path
   * (the lease, anything else) are left alone, so an empty path never empties the container.
   * @throws {ReplicaError} when listing or deleting fails.
   */
  async deleteAll(): Promise<void> {
    const prefix = this.path ? `${this.path}/` : "";
    let token: string | undefined;
    do {
      // Azure's continuation marker is a blob name: it stays valid while listed blobs go.
      const page = await this.#listPage(prefix, token);
      const names = page.segment.blobItems.map((item) => item.name)
        .filter((name) => /^[0-9a-f]{4}\//.test(name.slice(prefix.length)));
      await this.#deleteBlobs(names);
      token = page.continuationToken || undefined;
    } while (token);
  }

  /** The owner lease at `<path>/sluice-lease.json`, written with Azure's conditional headers. */
  lease(): LeaseStore {
    return absLeaseStore({
      location: this.location,
      prefix: this.path ? `${this.path}/` : "",
      probeKey: `${this.endpointLabel}/${this.container}`,
      container: () => this.#client(),
      error: (operation, err) => this.#error(operation, err),
    });
  }

  /** Nothing to release: the SDK's HTTP agent keeps no timers that hold the process. */
  close(): Promise<void> {
    return Promise.resolve();
  }

  async #listPage(
    prefix: string,
    token: string | undefined,
  ): Promise<ContainerListBlobFlatSegmentResponse> {
    try {
      const container = await this.#client();
      return await this.#retry(async () => {
        const pages = container.listBlobsFlat({ prefix, includeMetadata: true })
          .byPage({ continuationToken: token, maxPageSize: 5000 });
        const { value } = await pages.next();
        return value as ContainerListBlobFlatSegmentResponse;
      });
    } catch (err) {
      throw this.#error(`list ${prefix || "/"}`, err);
    }
  }

  async #download(
    name: string,
    offset: number,
    count: number | undefined,
    etag: string | undefined,
  ): Promise<BlobDownloadResponseParsed> {
    const blob = (await this.#client()).getBlobClient(name);
    return await blob.download(offset, count, {
      conditions: etag === undefined ? undefined : { ifMatch: etag },
      maxRetryRequests: 0, // resumableStream resumes instead
    });
  }

  async #deleteBlobs(names: readonly string[]): Promise<void> {
    if (names.length === 0) return;
    const container = await this.#client();
    const batchClient = container.getBlobBatchClient();
    for (let i = 0; i < names.length; i += DELETE_BATCH_SIZE) {
      const batch = names.slice(i, i + DELETE_BATCH_SIZE);
      let failed: { name: string; status: number; code?: string } | undefined;
      let count = 0;
      try {
        const response = await this.#retry(() =>
          batchClient.deleteBlobs(batch.map((name) => container.getBlobClient(name)))
        );
        for (const [j, sub] of response.subResponses.entries()) {
          if (sub.status < 300 || sub.status === 404) continue;
          count++;
          failed ??= { name: batch[j], status: sub.status, code: sub.errorCode };
        }
      } catch (err) {
        throw this.#error(`delete ${batch.length} blob(s) from ${batch[0]}`, err);
      }
      if (failed !== undefined) {
        throw new ReplicaError(
          `abs replica ${this.location}: could not delete ${count} blob(s); first: ` +
            `${failed.name}: HTTP ${failed.status} ${failed.code ?? ""}`.trimEnd(),
        );
      }
    }
  }

  /** Retries what the SDK's storage policy does not: 408, 429, 502, 504 (backoff with jitter). */
  async #retry<T>(operation: () => Promise<T>): Promise<T> {
    for (let attempt = 1;; attempt++) {
      try {
        return await operation();
      } catch (err) {
        const status = statusOf(err);
        if (attempt >= this.#maxAttempts || status === undefined || !RETRIED_STATUSES.has(status)) {
          throw err;
        }
        const delay = Math.min(30_000, 500 * 2 ** (attempt - 1)) * (0.5 + Math.random() / 2);
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }

  #error(operation: string, err: unknown): ReplicaError {
    if (err instanceof ReplicaError) return err;
    const code = codeOf(err);
    const status = statusOf(err);
    if (code === "ContainerNotFound") {
      return new ReplicaError(
        `container "${this.container}" does not exist at ${this.endpointLabel}: create it first`,
        { cause: err },
      );
    }
    if (code === "BlobNotFound" || (status === 404 && code === undefined)) {
      return new NotFoundError(`abs replica ${this.location}: ${operation}: blob not found`, {
        cause: err,
      });
    }
    const name = err instanceof Error ? err.name : "Error";
    const message = redactSecrets(err instanceof Error ? err.message : String(err));
    const detail = `${code ?? name}${status ? ` (HTTP ${status})` : ""}: ${firstLine(message)}`;
    let hint = "";
    if (status === 403) {
      hint = "; check account-name and account-key (or sas-token and its permissions)";
    } else if (name === "CredentialUnavailableError" || name === "AggregateAuthenticationError") {
      hint = "; set account-key or sas-token, or LITESTREAM_AZURE_ACCOUNT_KEY";
    }
    return new ReplicaError(`abs replica ${this.location}: ${operation}: ${detail}${hint}`, {
      cause: err,
    });
  }
}

/** Slices a body (bytes or a stream) into blocks of `size` bytes (the last one shorter). */
class BlockReader {
  #bytes?: Uint8Array;
  #offset = 0;
  #reader?: ReadableStreamDefaultReader<Uint8Array>;
  #pending: Uint8Array[] = [];
  #pendingSize = 0;
  #done = false;
  #yielded = false;
  readonly #size: number;

  constructor(source: Uint8Array | ReadableStreamDefaultReader<Uint8Array>, size: number) {
    if (source instanceof Uint8Array) this.#bytes = source;
    else this.#reader = source;
    this.#size = size;
  }

  /** The next block, or undefined at the end (an empty body yields one empty block). */
  async next(): Promise<Uint8Array | undefined> {
    const block = await this.#nextBlock();
    if (block === undefined && !this.#yielded) {
      this.#yielded = true;
      return new Uint8Array(0);
    }
    if (block !== undefined) this.#yielded = true;
    return block;
  }

  async #nextBlock(): Promise<Uint8Array | undefined> {
    if (this.#bytes !== undefined) {
      if (this.#offset >= this.#bytes.length) return undefined;
      const block = this.#bytes.subarray(this.#offset, this.#offset + this.#size);
      this.#offset += block.length;
      return block;
    }
    while (!this.#done && this.#pendingSize < this.#size) {
      const { done, value } = await this.#reader!.read();
      if (done) this.#done = true;
      else if (value.length > 0) {
        this.#pending.push(value);
        this.#pendingSize += value.length;
      }
    }
    if (this.#pendingSize === 0) return undefined;
    const all = concat(this.#pending);
    const block = all.subarray(0, Math.min(this.#size, all.length));
    const rest = all.subarray(block.length);
    this.#pending = rest.length > 0 ? [rest] : [];
    this.#pendingSize = rest.length;
    return block;
  }
}

/** Litestream's layout key prefix: slashes trimmed, empty and `.` segments dropped. */
export function cleanBlobPath(path: string): string {
  return path.split("/").filter((part) => part !== "" && part !== ".").join("/");
}

function createdAtOf(item: BlobItem): Date {
  const text = item.metadata?.[ABS_TIMESTAMP_METADATA_KEY];
  const ms = text === undefined ? undefined : parseRFC3339(text);
  if (ms !== undefined) return new Date(ms);
  return item.properties.createdOn ?? item.properties.lastModified ?? new Date(0);
}

function bodyOf(response: BlobDownloadResponseParsed): RangeBody {
  const body = response.readableStreamBody;
  if (!body) return { body: emptyStream(), length: 0 };
  return {
    body: Readable.toWeb(body as Readable) as ReadableStream<Uint8Array>,
    length: response.contentLength,
  };
}

function emptyStream(): ReadableStream<Uint8Array> {
  return new ReadableStream({ start: (controller) => controller.close() });
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

/** The HTTP status of an SDK error (`RestError.statusCode`). */
export function statusOf(err: unknown): number | undefined {
  const status = (err as { statusCode?: unknown } | null)?.statusCode;
  return typeof status === "number" ? status : undefined;
}

/** Azure's error code (`x-ms-error-code`), e.g. `BlobNotFound`, `ConditionNotMet`. */
export function codeOf(err: unknown): string | undefined {
  const code = err as { code?: unknown; details?: { errorCode?: unknown } } | null;
  const value = code?.details?.errorCode ?? code?.code;
  return typeof value === "string" ? value : undefined;
}

function causeOf(err: unknown): unknown {
  return err instanceof ReplicaError && err.cause !== undefined ? err.cause : err;
}

function firstLine(text: string): string {
  return text.split("\n")[0].trim();
}

/** SAS signatures and shared-key signatures must never reach a message. */
function redactSecrets(text: string): string {
  return text.replace(/([?&]sig=)[^&\s"]+/gi, "$1[REDACTED]")
    .replace(/(SharedKey [^:\s]+:)\S+/g, "$1[REDACTED]");
}

function redactServiceURL(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.host}${parsed.pathname === "/" ? "" : parsed.pathname}`;
  } catch {
    return "the configured endpoint";
  }
}

function envValue(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined; // no --allow-env: behave as unset
  }
}
