/**
 * A replica on a WebDAV server, in Litestream's layout `<path>/ltx/<level>/<min>-<max>.ltx`
 * (FORMAT.md §2.3), spoken with plain `fetch` (PROPFIND, PUT, MOVE, MKCOL, DELETE, PROPPATCH):
 * the requests are few and standard, and owning them gives exact control of the headers that
 * matter here (Content-Length on every upload, Range, Overwrite, If-Match) without a client
 * library's dependency tree.
 *
 * The creation time is kept in a dead property (`litestream-timestamp` in the `urn:x-sluice:`
 * namespace, RFC3339Nano like S3's metadata), set with PROPPATCH once the file is in place (not
 * on the temp file: some servers lose dead properties on MOVE) and read by the same PROPFIND that
 * lists a level. A file without it (a server that keeps no dead properties or lost them, a write
 * cut between MOVE and PROPPATCH, a file Litestream wrote: Litestream keeps no timestamp on
 * WebDAV) lists with getlastmodified (the upload time, as Litestream reads it), and with its own
 * LTX header's time when `useMetadata` asks for the exact time (timestamp restores).
 *
 * @module
 */

import {
  type ListOptions,
  type LTXFileId,
  type LTXFileInfo,
  NotFoundError,
  type OpenOptions,
  OWNER_MARKER_NAME,
  type OwnerMarker,
  type ReplicaClient,
  ReplicaError,
} from "./client.ts";
import {
  assertFileId,
  assertLevel,
  assertRange,
  compareFileIds,
  ltxFilename,
  parseLTXFilename,
} from "./_names.ts";
import { mapConcurrently } from "./_concurrency.ts";
import { formatRFC3339Nano, parseRFC3339 } from "./_timestamp.ts";
import { type RangeBody, resumableStream } from "./_resumable_stream.ts";
import { HEADER_TIME_BYTES, headerTimestamp } from "./_header_time.ts";
import { uploadFile } from "./_http_upload.ts";
import {
  type DavEntry,
  parseMultistatus,
  PROPFIND_BODY,
  proppatchBody,
  proppatchSucceeded,
} from "./_webdav_xml.ts";

/** Where and how to reach one WebDAV replica (Litestream's keys). */
export interface WebDAVSpec {
  /** The server's base URL, `http(s)://host[:port][/base]` (Litestream's `webdav-url`). */
  url: string;
  /** Basic authentication user (`webdav-username`). */
  username?: string;
  /** Basic authentication password (`webdav-password`). Never logged or shown in errors. */
  password?: string;
  /** Collection under the base URL that holds `ltx/`. */
  path: string;
  /** Attempts of a request on a network error or a 5xx answer. Default 3. */
  attempts?: number;
  /** Base of the retry backoff, `retryDelayMs × 2ⁿ`. Default 250. */
  retryDelayMs?: number;
  /** Time allowed for a response's headers. Default 30 s. */
  timeoutMs?: number;
}

/** Stream bodies up to this size are uploaded from memory; larger ones are spooled to disk. */
const MEMORY_BODY_LIMIT = 16 * 1024 * 1024;
/** Bodies above this size create missing collections before the PUT rather than after a 409. */
const EAGER_MKCOL_SIZE = 256 * 1024;
/** Concurrent requests of deletes and header reads. */
const CONCURRENCY = 8;
/** Temp files: `<name>.<random>.tmp`. */
const TEMP_NAME = /^[0-9a-f]{16}-[0-9a-f]{16}\.ltx(\.[^/]*)?\.tmp$/;

/** A request body that can be sent again on a retry. */
type Replayable =
  | { kind: "bytes"; bytes: Uint8Array }
  | { kind: "file"; path: string; size: number };

/**
 * Reads and writes LTX files on a WebDAV server. Writes PUT a temp name with a Content-Length,
 * then MOVE it over the final name (Overwrite: T), so a reader sees the old file or the new one,
 * never a partial upload; the timestamp property is set last.
 */
export class WebDAVReplicaClient implements ReplicaClient {
  /** Always `"webdav"`. */
  readonly type = "webdav";
  /** `webdav://host/path` or `webdavs://…` (never credentials). */
  readonly location: string;
  /** The collection holding `ltx/`, as a path under the base URL (no leading or trailing `/`). */
  readonly path: string;

  readonly #base: URL;
  readonly #authorization?: string;
  readonly #attempts: number;
  readonly #retryDelayMs: number;
  readonly #timeoutMs: number;
  /** False once the server refused a dead property: timestamps then come from elsewhere. */
  #deadProperties = true;
  readonly #controllers = new Set<AbortController>();
  /** Collections a PUT succeeded in lately (a hint, not a guarantee). */
  readonly #collections = new Set<string>();
  #closed = false;

  /**
   * Parses the spec; nothing is contacted until the first operation.
   * @throws {RangeError} when the URL is not http(s).
   */
  constructor(spec: WebDAVSpec) {
    let base: URL;
    try {
      base = new URL(spec.url);
    } catch {
      throw new RangeError(`invalid WebDAV URL "${redact(spec.url)}"`);
    }
    if (base.protocol !== "http:" && base.protocol !== "https:") {
      throw new RangeError(`WebDAV URL "${redact(spec.url)}" must be http:// or https://`);
    }
    const username = spec.username ?? (decodeURIComponent(base.username) || undefined);
    const password = spec.password ?? (decodeURIComponent(base.password) || undefined);
    base.username = "";
    base.password = "";
    base.search = "";
    base.hash = "";
    if (!base.pathname.endsWith("/")) base.pathname += "/";
    this.#base = base;
    if (username !== undefined || password !== undefined) {
      this.#authorization = `Basic ${btoa(`${username ?? ""}:${password ?? ""}`)}`;
    }
    this.path = spec.path.split("/").filter((p) => p !== "" && p !== ".").join("/");
    this.#attempts = Math.max(1, spec.attempts ?? 3);
    this.#retryDelayMs = spec.retryDelayMs ?? 250;
    this.#timeoutMs = spec.timeoutMs ?? 30_000;
    const scheme = base.protocol === "https:" ? "webdavs" : "webdav";
    const basePath = base.pathname.replace(/\/$/, "");
    this.location = `${scheme}://${base.host}${basePath}/${this.path}`.replace(/\/$/, "");
  }

  /** The collection path of one level, relative to the base URL. */
  levelDir(level: number): string {
    return this.#join("ltx", String(level));
  }

  /** The path of one LTX file, relative to the base URL. */
  filePath(file: LTXFileId): string {
    return `${this.levelDir(file.level)}/${ltxFilename(file.minTXID, file.maxTXID)}`;
  }

  /** The absolute URL of a path relative to the base URL. */
  urlOf(path: string, collection = false): URL {
    const encoded = path.split("/").filter((p) => p !== "").map(encodeURIComponent).join("/");
    return new URL(encoded + (collection && encoded !== "" ? "/" : ""), this.#base);
  }

  /**
   * Lists one level with one PROPFIND (Depth: 1). `createdAt` is the timestamp property, else
   * getlastmodified; with `useMetadata`, files without the property have their LTX header read.
   * @throws {ReplicaError} when the server cannot be reached or refuses the listing.
   */
  async *ltxFiles(level: number, options: ListOptions = {}): AsyncIterable<LTXFileInfo> {
    assertLevel(level);
    const seekTXID = options.seekTXID ?? 0;
    const dir = this.levelDir(level);
    const entries = await this.#propfind(dir);
    const infos: LTXFileInfo[] = [];
    const needHeader: LTXFileInfo[] = [];
    for (const entry of entries) {
      if (entry.collection) continue;
      const name = entry.path.slice(entry.path.lastIndexOf("/") + 1);
      const parsed = parseLTXFilename(name);
      if (!parsed || parsed.minTXID < seekTXID) continue;
      const stamped = entry.timestamp === undefined ? undefined : parseRFC3339(entry.timestamp);
      const info: LTXFileInfo = {
        level,
        ...parsed,
        size: entry.size ?? 0,
        createdAt: new Date(stamped ?? entry.lastModified?.getTime() ?? 0),
      };
      if (stamped === undefined) needHeader.push(info);
      infos.push(info);
    }
    infos.sort(compareFileIds);
    if (options.useMetadata) await this.#withHeaderTimes(needHeader);
    yield* infos;
  }

  /**
   * Streams one file or a byte range of it (a Range request). A body cut mid-way is resumed at
   * the byte reached (If-Match on the ETag, so a replaced file is not spliced).
   * @throws {NotFoundError} when the file does not exist.
   * @throws {ReplicaError} when the server cannot be reached.
   */
  async openLTXFile(
    file: LTXFileId,
    options: OpenOptions = {},
  ): Promise<ReadableStream<Uint8Array>> {
    assertFileId(file);
    const offset = options.offset ?? 0;
    assertRange(offset, options.length);
    const path = this.filePath(file);
    if (options.length === 0) return emptyStream();
    const end = options.length === undefined ? undefined : offset + options.length;
    let etag: string | undefined;
    const get = async (start: number): Promise<RangeBody | undefined> => {
      const headers: Record<string, string> = {};
      if (start > 0 || end !== undefined) headers.Range = `bytes=${start}-${end ? end - 1 : ""}`;
      if (etag !== undefined) headers["If-Match"] = etag;
      const response = await this.#request("GET", path, { headers });
      if (response.status === 416) {
        await response.body?.cancel();
        return undefined; // at or past the end
      }
      if (response.status === 404) {
        await response.body?.cancel();
        throw new NotFoundError(`webdav replica ${this.location}: LTX file ${path} does not exist`);
      }
      if (!response.ok) throw await this.#statusError(`read ${path}`, response);
      etag ??= response.headers.get("ETag") ?? undefined;
      const body = response.body ?? emptyStream();
      const length = Number(response.headers.get("Content-Length") ?? NaN);
      if (response.status === 200 && headers.Range !== undefined) {
        // The server ignored Range: skip and cut the whole body here.
        const total = Number.isFinite(length) ? length : undefined;
        const stop = end === undefined ? total : Math.min(end, total ?? end);
        if (total !== undefined && start >= total) {
          await body.cancel();
          return undefined;
        }
        return {
          body: body.pipeThrough(sliceStream(start, stop)),
          length: stop === undefined ? undefined : stop - start,
        };
      }
      return { body, length: Number.isFinite(length) ? length : undefined };
    };
    const first = await get(offset);
    if (first === undefined) return emptyStream();
    return resumableStream(first, async (received) => {
      const next = await get(offset + received);
      return next ?? { body: emptyStream(), length: 0 };
    }, {
      retries: this.#attempts,
      baseDelayMs: this.#retryDelayMs,
      isPermanent: (err) => err instanceof NotFoundError || /HTTP 412/.test(String(err)),
      wrapError: (message, cause) =>
        cause instanceof NotFoundError
          ? cause
          : new ReplicaError(`webdav replica ${this.location}: read ${path}: ${message}`, {
            cause,
          }),
    });
  }

  /**
   * PUTs `<name>.<random>.tmp` with a Content-Length (a stream body above 16 MiB is spooled to
   * a local temp file first: chunked uploads are refused or silently emptied by common WebDAV
   * setups), MOVEs it over the final name, and sets the timestamp property. Missing parent
   * collections are created with MKCOL. A failed write deletes the temp file and cancels a
   * stream `body`; network errors and 5xx answers are retried.
   * @throws {ReplicaError} when the body errors or the server rejects a step.
   */
  async writeLTXFile(
    file: LTXFileId,
    body: Uint8Array | ReadableStream<Uint8Array>,
    timestamp: number,
  ): Promise<LTXFileInfo> {
    assertFileId(file);
    if (!Number.isFinite(timestamp)) throw new RangeError(`invalid LTX timestamp ${timestamp}`);
    const path = this.filePath(file);
    let payload: Replayable;
    try {
      payload = body instanceof Uint8Array ? { kind: "bytes", bytes: body } : await spool(body);
    } catch (err) {
      if (!(body instanceof Uint8Array)) await body.cancel(err).catch(() => {});
      throw this.#wrap(`write ${path}`, err);
    }
    try {
      const tmp = `${path}.${crypto.randomUUID().slice(0, 8)}.tmp`;
      try {
        await this.#put(tmp, payload);
        await this.#move(tmp, path, true);
      } catch (err) {
        await this.#request("DELETE", tmp).then((r) => r.body?.cancel(), () => {});
        throw this.#wrap(`write ${path}`, err);
      }
      try {
        await this.#setTimestamp(path, formatRFC3339Nano(timestamp));
      } catch (err) {
        throw this.#wrap(`set the timestamp of ${path}`, err);
      }
      const size = payload.kind === "bytes" ? payload.bytes.length : payload.size;
      return {
        level: file.level,
        minTXID: file.minTXID,
        maxTXID: file.maxTXID,
        size,
        createdAt: new Date(timestamp),
      };
    } finally {
      if (payload.kind === "file") await Deno.remove(payload.path).catch(() => {});
    }
  }

  /**
   * DELETEs the given files, a few at a time; missing ones are skipped.
   * @throws {ReplicaError} naming the first file that could not be deleted.
   */
  async deleteLTXFiles(files: readonly LTXFileId[]): Promise<void> {
    const paths = files.map((file) => {
      assertFileId(file);
      return this.filePath(file);
    });
    await inBatches(paths, (path) => this.#delete(path));
  }

  /**
   * DELETEs the `ltx/` collection (recursive in WebDAV); nothing else under the path.
   * @throws {ReplicaError} when the server refuses.
   */
  async deleteAll(): Promise<void> {
    this.#collections.clear();
    await this.#delete(this.#join("ltx"), true);
  }

  /** Deletes the temp files a killed writer left in the level collections. */
  async removeTempFiles(): Promise<void> {
    const root = this.#join("ltx");
    for (const level of await this.#propfind(root)) {
      if (!level.collection) continue;
      const name = level.path.replace(/\/$/, "");
      const levelName = name.slice(name.lastIndexOf("/") + 1);
      if (!/^\d$/.test(levelName)) continue;
      const dir = this.#join("ltx", levelName);
      const temps = (await this.#propfind(dir)).map((e) =>
        e.path.slice(e.path.lastIndexOf("/") + 1)
      )
        .filter((n) => TEMP_NAME.test(n));
      await inBatches(temps, (n) => this.#delete(`${dir}/${n}`));
    }
  }

  /**
   * The owner marker at `<path>/sluice-owner.json`, created with a MOVE of a temp file with
   * `Overwrite: F` (the server answers 412 when the marker exists), so one claimant wins.
   */
  ownerMarker(): OwnerMarker {
    const path = this.#join(OWNER_MARKER_NAME);
    return {
      path: `${this.location}/${OWNER_MARKER_NAME}`,
      read: async () => {
        const response = await this.#request("GET", path).catch((err) => {
          throw this.#wrap(`read ${path}`, err);
        });
        if (response.status === 404) {
          await response.body?.cancel();
          return undefined;
        }
        if (!response.ok) throw await this.#statusError(`read ${path}`, response);
        return await response.text();
      },
      createExclusive: async (text) => {
        const tmp = `${path}.${crypto.randomUUID().slice(0, 8)}.tmp`;
        try {
          await this.#put(tmp, { kind: "bytes", bytes: new TextEncoder().encode(text) });
          return await this.#move(tmp, path, false);
        } catch (err) {
          throw this.#wrap(`create ${path}`, err);
        } finally {
          await this.#request("DELETE", tmp).then((r) => r.body?.cancel(), () => {});
        }
      },
    };
  }

  /** Aborts requests still waiting for their answer. Idempotent. */
  close(): Promise<void> {
    this.#closed = true;
    for (const controller of this.#controllers) controller.abort();
    this.#controllers.clear();
    return Promise.resolve();
  }

  #join(...parts: string[]): string {
    return [this.path, ...parts].filter((p) => p !== "").join("/");
  }

  /** PROPFIND Depth 1 of a collection: its members (itself excluded); missing lists as empty. */
  async #propfind(dir: string): Promise<DavEntry[]> {
    let response: Response;
    try {
      response = await this.#request("PROPFIND", dir, {
        collection: true,
        headers: { Depth: "1", "Content-Type": "application/xml; charset=utf-8" },
        body: PROPFIND_BODY,
      });
    } catch (err) {
      throw this.#wrap(`list ${dir}`, err);
    }
    if (response.status === 404) {
      await response.body?.cancel();
      return [];
    }
    if (response.status !== 207) throw await this.#statusError(`list ${dir}`, response);
    const self = decodeURIComponent(this.urlOf(dir, true).pathname).replace(/\/$/, "");
    return parseMultistatus(await response.text()).filter((entry) =>
      entry.path.replace(/\/$/, "") !== self
    );
  }

  async #put(path: string, payload: Replayable): Promise<void> {
    const parent = path.slice(0, path.lastIndexOf("/"));
    const size = payload.kind === "bytes" ? payload.bytes.length : payload.size;
    let created = false;
    if (size > EAGER_MKCOL_SIZE && !this.#collections.has(parent)) {
      // Do not send a large body only to hear that its collection is missing.
      await this.#makeCollections(parent);
      created = true;
    }
    for (;; created = true) {
      const response = await this.#request("PUT", path, { payload });
      await response.body?.cancel();
      if (response.ok) {
        this.#collections.add(parent);
        return;
      }
      // 409 (RFC 4918 §9.7.1) or 404 from some servers: a parent collection is missing.
      if ((response.status === 409 || response.status === 404) && !created) {
        this.#collections.delete(parent);
        await this.#makeCollections(parent);
        continue;
      }
      throw await this.#statusError(`upload ${path}`, response);
    }
  }

  /** MKCOL each missing ancestor; 405 means it exists. */
  async #makeCollections(dir: string): Promise<void> {
    const parts = dir.split("/").filter((p) => p !== "");
    for (let i = 1; i <= parts.length; i++) {
      const prefix = parts.slice(0, i).join("/");
      const response = await this.#request("MKCOL", prefix, { collection: true });
      await response.body?.cancel();
      if (response.ok || response.status === 405) continue;
      throw await this.#statusError(`create collection ${prefix}`, response);
    }
  }

  /** Sets the timestamp property, unless the server showed it keeps none. */
  async #setTimestamp(path: string, timestamp: string): Promise<void> {
    if (!this.#deadProperties) return;
    const response = await this.#request("PROPPATCH", path, {
      headers: { "Content-Type": "application/xml; charset=utf-8" },
      body: proppatchBody(timestamp),
    });
    const text = await response.text();
    if (response.status === 207 && proppatchSucceeded(text)) return;
    if (response.status >= 500 && response.status !== 501) {
      throw new HTTPError(`set the timestamp of ${path}`, response.status, text);
    }
    this.#deadProperties = false; // 403/405/501 or a refused property: fall back from now on
  }

  /** MOVE; returns false when `overwrite` is false and the destination exists (412). */
  async #move(from: string, to: string, overwrite: boolean): Promise<boolean> {
    const response = await this.#request("MOVE", from, {
      headers: { Destination: this.urlOf(to).href, Overwrite: overwrite ? "T" : "F" },
    });
    await response.body?.cancel();
    if (response.ok) return true;
    if (!overwrite && response.status === 412) return false;
    throw await this.#statusError(`move ${from} to ${to}`, response);
  }

  async #delete(path: string, collection = false): Promise<void> {
    let response: Response;
    try {
      response = await this.#request("DELETE", path, { collection });
    } catch (err) {
      throw this.#wrap(`delete ${path}`, err);
    }
    await response.body?.cancel();
    if (response.ok || response.status === 404) return;
    throw await this.#statusError(`delete ${path}`, response);
  }

  /** Replaces each createdAt with its LTX header's timestamp (a 40-byte Range GET per file). */
  async #withHeaderTimes(infos: LTXFileInfo[]): Promise<void> {
    await inBatches(infos, async (info) => {
      let stream: ReadableStream<Uint8Array>;
      try {
        stream = await this.openLTXFile(info, { length: HEADER_TIME_BYTES });
      } catch (err) {
        if (err instanceof NotFoundError) return; // deleted meanwhile
        throw err;
      }
      const head = new Uint8Array(await new Response(stream).arrayBuffer());
      const ms = headerTimestamp(head, info);
      if (ms !== undefined) info.createdAt = new Date(ms);
    });
  }

  /**
   * One HTTP request with retries on network errors and 502/503/504. The timeout covers the
   * response headers; a body is then read at the caller's pace. A file payload goes through
   * `node:http` (see `_http_upload.ts`), so it is sent with its Content-Length.
   */
  async #request(
    method: string,
    path: string,
    options: {
      headers?: Record<string, string>;
      body?: string;
      payload?: Replayable;
      collection?: boolean;
    } = {},
  ): Promise<Response> {
    const url = this.urlOf(path, options.collection);
    const headers: Record<string, string> = { ...options.headers };
    if (this.#authorization !== undefined) headers.Authorization = this.#authorization;
    const payload = options.payload;
    for (let attempt = 1;; attempt++) {
      const controller = new AbortController();
      this.#controllers.add(controller);
      const timer = setTimeout(() => controller.abort(new Error("timed out")), this.#timeoutMs);
      try {
        let response: Response;
        if (payload?.kind === "file") {
          const answer = await uploadFile(
            url,
            method,
            headers,
            payload.path,
            payload.size,
            this.#timeoutMs,
          );
          const empty = answer.status === 204 || answer.status === 205 || answer.status === 304;
          response = new Response(empty ? null : answer.text, { status: answer.status });
        } else {
          response = await fetch(url, {
            method,
            headers,
            body: payload?.kind === "bytes"
              ? payload.bytes as Uint8Array<ArrayBuffer>
              : options.body,
            signal: controller.signal,
          });
        }
        const retryable = response.status === 502 || response.status === 503 ||
          response.status === 504;
        if (retryable && attempt < this.#attempts) {
          await response.body?.cancel();
          await delay(this.#retryDelayMs * 2 ** (attempt - 1));
          continue;
        }
        return response;
      } catch (err) {
        if (attempt >= this.#attempts || this.#closed) throw err;
        await delay(this.#retryDelayMs * 2 ** (attempt - 1));
      } finally {
        clearTimeout(timer);
        this.#controllers.delete(controller);
      }
    }
  }

  async #statusError(operation: string, response: Response): Promise<ReplicaError> {
    const text = await response.text().catch(() => "");
    return this.#wrap(operation, new HTTPError(operation, response.status, text));
  }

  #wrap(operation: string, err: unknown): ReplicaError {
    if (err instanceof ReplicaError) return err;
    const status = err instanceof HTTPError ? err.status : undefined;
    let reason = err instanceof Error ? err.message : String(err);
    if (status === 401 || status === 403) {
      reason += "; check webdav-username and webdav-password";
    }
    return new ReplicaError(`webdav replica ${this.location}: ${operation}: ${reason}`, {
      cause: err,
    });
  }
}

/** A non-2xx answer. */
class HTTPError extends Error {
  readonly status: number;
  constructor(operation: string, status: number, body: string) {
    const detail = body.replace(/<[^>]*>/g, " ").replace(/\s+/g, " ").trim().slice(0, 200);
    super(`HTTP ${status}${detail ? `: ${detail}` : ""}`);
    this.name = "HTTPError";
    this.status = status;
    void operation;
  }
}

/** Reads a stream body into memory, or into a temp file once it exceeds the memory limit. */
async function spool(body: ReadableStream<Uint8Array>): Promise<Replayable> {
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  let file: Deno.FsFile | undefined;
  let path: string | undefined;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.length;
      if (file === undefined && size <= MEMORY_BODY_LIMIT) {
        chunks.push(value);
        continue;
      }
      if (file === undefined) {
        path = await Deno.makeTempFile({ prefix: "sluice-webdav-", suffix: ".ltx" });
        file = await Deno.open(path, { write: true });
        for (const chunk of chunks) await writeAll(file, chunk);
        chunks.length = 0;
      }
      await writeAll(file, value);
    }
  } catch (err) {
    file?.close();
    if (path !== undefined) await Deno.remove(path).catch(() => {});
    throw err;
  } finally {
    reader.releaseLock();
  }
  if (file !== undefined && path !== undefined) {
    file.close();
    return { kind: "file", path, size };
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  return { kind: "bytes", bytes };
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.length) written += await file.write(bytes.subarray(written));
}

/** Bytes [start, stop) of a whole-file body, for servers that ignore Range. */
function sliceStream(start: number, stop: number | undefined): TransformStream<Uint8Array> {
  let position = 0;
  return new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      const from = Math.max(start - position, 0);
      const to = stop === undefined ? chunk.length : Math.min(stop - position, chunk.length);
      position += chunk.length;
      if (to > from) controller.enqueue(chunk.subarray(from, to));
    },
  });
}

/** `fn` over `items`, {@linkcode CONCURRENCY} at a time. */
async function inBatches<T>(items: readonly T[], fn: (item: T) => Promise<void>): Promise<void> {
  await mapConcurrently(items, CONCURRENCY, fn);
}

function emptyStream(): ReadableStream<Uint8Array> {
  return new ReadableStream({ start: (controller) => controller.close() });
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function redact(url: string): string {
  return url.replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/)[^/?#@]*@/, "$1[REDACTED]@");
}
