/**
 * A replica in a local directory, in Litestream's layout `<root>/ltx/<level>/<min>-<max>.ltx`
 * (FORMAT.md §2.3). Also used for the primary-side meta directory, which has the same layout.
 *
 * @module
 */

import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
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
import { FlushBehind } from "./_flush_behind.ts";
import {
  assertFileId,
  assertLevel,
  assertRange,
  compareFileIds,
  ltxFilename,
  parseLTXFilename,
} from "./_names.ts";

/** Bytes per chunk when streaming a file out. */
const READ_CHUNK_SIZE = 64 * 1024;
/** How many `stat` calls a listing keeps in flight. */
const STAT_CONCURRENCY = 32;

/** Options of {@linkcode FileReplicaClient}. */
export interface FileReplicaOptions {
  /**
   * What the directory is, as error messages name it. Default `file replica <file:// URL>`;
   * see {@linkcode FileReplicaClient.metaDirectory}.
   */
  description?: string;
}

/**
 * Reads and writes LTX files under one directory. Writes are atomic (temp file, fsync, rename,
 * fsync of the directory) and the file's mtime is set to the LTX header timestamp, which is
 * where Litestream keeps a file replica's creation time.
 */
export class FileReplicaClient implements ReplicaClient {
  /** Always `"file"`. */
  readonly type = "file";
  /** Each chunk of a streamed body is written out before the next is read. */
  readonly releasesEachChunk = true;
  /** `file://` URL of the root directory. */
  readonly location: string;
  /** Absolute path of the root directory (the one holding `ltx/`). */
  readonly root: string;
  /** What the directory is, as error messages name it (`file replica file:///…`). */
  readonly description: string;

  /** Creates a client for `root`; nothing is touched on disk until the first write. */
  constructor(root: string, options: FileReplicaOptions = {}) {
    this.root = resolve(root);
    this.location = pathToFileURL(this.root).href;
    this.description = options.description ?? `file replica ${this.location}`;
  }

  /**
   * A client for a database's meta directory (its local L0 files, in the replica layout):
   * errors name it `meta directory <path>`, so a full local disk is not mistaken for a
   * failing replica.
   */
  static metaDirectory(path: string): FileReplicaClient {
    return new FileReplicaClient(path, { description: `meta directory ${resolve(path)}` });
  }

  /** The directory that holds one level's files. */
  levelDir(level: number): string {
    return join(this.root, "ltx", String(level));
  }

  /** The path of one LTX file (whether or not it exists). */
  filePath(file: LTXFileId): string {
    return join(this.levelDir(file.level), ltxFilename(file.minTXID, file.maxTXID));
  }

  /**
   * Lists one level sorted by (minTXID, maxTXID). `size` and `createdAt` (the mtime) come from
   * `stat`. A missing directory lists as empty.
   * @throws {ReplicaError} when the directory exists but cannot be read.
   */
  async *ltxFiles(level: number, options: ListOptions = {}): AsyncIterable<LTXFileInfo> {
    assertLevel(level);
    const seekTXID = options.seekTXID ?? 0;
    const dir = this.levelDir(level);
    const names: { name: string; minTXID: number; maxTXID: number }[] = [];
    try {
      for await (const entry of Deno.readDir(dir)) {
        if (!entry.isFile) continue;
        const parsed = parseLTXFilename(entry.name);
        if (parsed && parsed.minTXID >= seekTXID) names.push({ name: entry.name, ...parsed });
      }
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return;
      throw this.#error(`list ${dir}`, err);
    }
    const infos: LTXFileInfo[] = [];
    for (let i = 0; i < names.length; i += STAT_CONCURRENCY) {
      const batch = names.slice(i, i + STAT_CONCURRENCY);
      const stats = await Promise.all(batch.map(async ({ name }) => {
        try {
          return await Deno.stat(join(dir, name));
        } catch (err) {
          // Deleted between readDir and stat (retention running concurrently): not listed.
          if (err instanceof Deno.errors.NotFound) return undefined;
          throw this.#error(`stat ${join(dir, name)}`, err);
        }
      }));
      batch.forEach(({ minTXID, maxTXID }, j) => {
        const stat = stats[j];
        if (!stat) return;
        infos.push({
          level,
          minTXID,
          maxTXID,
          size: stat.size,
          createdAt: stat.mtime ?? new Date(0),
        });
      });
    }
    infos.sort(compareFileIds);
    yield* infos;
  }

  /**
   * Streams one file, optionally a byte range of it. The descriptor is closed when the stream
   * ends, errors or is cancelled.
   * @throws {NotFoundError} when the file does not exist.
   * @throws {ReplicaError} when it cannot be opened.
   */
  async openLTXFile(
    file: LTXFileId,
    options: OpenOptions = {},
  ): Promise<ReadableStream<Uint8Array>> {
    assertFileId(file);
    const offset = options.offset ?? 0;
    assertRange(offset, options.length);
    const path = this.filePath(file);
    let fd: Deno.FsFile;
    try {
      fd = await Deno.open(path, { read: true });
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) {
        throw new NotFoundError(`LTX file ${path} does not exist`, { cause: err });
      }
      throw this.#error(`open ${path}`, err);
    }
    try {
      if (offset > 0) await fd.seek(offset, Deno.SeekMode.Start);
    } catch (err) {
      fd.close();
      throw this.#error(`seek ${path} to ${offset}`, err);
    }
    return fileStream(fd, options.length ?? Infinity, (err) => this.#error(`read ${path}`, err));
  }

  /**
   * Writes `<name>.tmp`, fsyncs it, renames it into place, fsyncs the directory, then sets
   * atime and mtime to `timestamp`. A failed write removes the temp file and cancels `body`
   * (so whoever feeds it sees the failure).
   * @throws {ReplicaError} when any step fails.
   */
  async writeLTXFile(
    file: LTXFileId,
    body: Uint8Array | ReadableStream<Uint8Array>,
    timestamp: number,
  ): Promise<LTXFileInfo> {
    assertFileId(file);
    if (!Number.isFinite(timestamp)) throw new RangeError(`invalid LTX timestamp ${timestamp}`);
    const dir = this.levelDir(file.level);
    const path = this.filePath(file);
    const tmpPath = `${path}.tmp`;
    let out: Deno.FsFile | undefined;
    /** The descriptor the background flushes of a stream go through (see below). */
    let syncer: Deno.FsFile | undefined;
    let flush: FlushBehind | undefined;
    let size = 0;
    try {
      await Deno.mkdir(dir, { recursive: true, mode: 0o755 });
      out = await Deno.open(tmpPath, { write: true, create: true, truncate: true, mode: 0o644 });
      if (body instanceof Uint8Array) {
        await writeAll(out, body);
        size = body.length;
      } else {
        // Deno runs one operation at a time per file handle: an fdatasync on `out` would hold
        // the writes behind it (tens of ms each, a third of a 1 GiB snapshot's write time,
        // while the encoder waits). A second descriptor of the same file flushes it as well.
        syncer = await Deno.open(tmpPath, { read: true });
        flush = new FlushBehind(syncer);
        size = await copyStream(body, out, flush);
        await flush.settle();
        syncer.close();
        syncer = undefined;
      }
      await out.sync();
      out.close();
      out = undefined;
      await Deno.rename(tmpPath, path);
    } catch (err) {
      await flush?.settle().catch(() => {});
      syncer?.close();
      out?.close();
      if (!(body instanceof Uint8Array) && !body.locked) await body.cancel(err).catch(() => {});
      await Deno.remove(tmpPath).catch(() => {});
      throw this.#error(`write ${path}`, err);
    }
    return await this.#finish(file, dir, path, size, timestamp);
  }

  /**
   * Writes `file` as a copy of the local file at `sourcePath`, with `patches` written over the
   * copy, with the guarantees of {@linkcode writeLTXFile}. Without patches the file is a hard
   * link to the source where the file system allows (the source is an LTX file too, never
   * changed in place); otherwise the kernel copies the bytes (`copy_file_range`, a reflink
   * where the file system can), so an upload or promotion of a large snapshot between two
   * directories runs at disk speed rather than through streams.
   * @throws {ReplicaError} when any step fails.
   */
  async copyLTXFile(
    file: LTXFileId,
    sourcePath: string,
    timestamp: number,
    patches: ReadonlyArray<{ offset: number; bytes: Uint8Array }> = [],
  ): Promise<LTXFileInfo> {
    assertFileId(file);
    if (!Number.isFinite(timestamp)) throw new RangeError(`invalid LTX timestamp ${timestamp}`);
    const dir = this.levelDir(file.level);
    const path = this.filePath(file);
    if (patches.length === 0) {
      const linked = await this.#linkAsIs(file, sourcePath, dir, path, timestamp);
      if (linked) return linked;
    }
    const tmpPath = `${path}.tmp`;
    let out: Deno.FsFile | undefined;
    let size = 0;
    try {
      await Deno.mkdir(dir, { recursive: true, mode: 0o755 });
      if (patches.length === 0 && await linkOrFalse(sourcePath, tmpPath)) {
        // Linking straight at `path` failed (a stale file there): the link replaces it.
        out = await Deno.open(tmpPath, { read: true });
      } else {
        await Deno.copyFile(sourcePath, tmpPath);
        out = await Deno.open(tmpPath, { read: true, write: true });
      }
      for (const patch of patches) {
        await out.seek(patch.offset, Deno.SeekMode.Start);
        await writeAll(out, patch.bytes);
      }
      size = (await out.stat()).size;
      await out.sync();
      out.close();
      out = undefined;
      await Deno.rename(tmpPath, path);
    } catch (err) {
      out?.close();
      await Deno.remove(tmpPath).catch(() => {});
      throw this.#error(`write ${path}`, err);
    }
    return await this.#finish(file, dir, path, size, timestamp);
  }

  /**
   * Removes the given files; missing ones are skipped.
   * @throws {ReplicaError} when a file exists but cannot be removed.
   */
  async deleteLTXFiles(files: readonly LTXFileId[]): Promise<void> {
    for (const file of files) {
      assertFileId(file);
      const path = this.filePath(file);
      try {
        await Deno.remove(path);
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw this.#error(`delete ${path}`, err);
      }
    }
  }

  /**
   * Removes `<root>/ltx` and everything in it. Nothing else under the root is touched.
   * @throws {ReplicaError} when removal fails.
   */
  async deleteAll(): Promise<void> {
    const dir = join(this.root, "ltx");
    try {
      await Deno.remove(dir, { recursive: true });
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw this.#error(`delete ${dir}`, err);
    }
  }

  /**
   * Removes the `*.ltx.tmp` files a killed writer left in the level directories. Call it only
   * while holding the replica (no other writer can be mid-write).
   */
  async removeTempFiles(): Promise<void> {
    const dir = join(this.root, "ltx");
    try {
      for await (const level of Deno.readDir(dir)) {
        if (!level.isDirectory) continue;
        for await (const entry of Deno.readDir(join(dir, level.name))) {
          if (entry.isFile && entry.name.endsWith(".ltx.tmp")) {
            await Deno.remove(join(dir, level.name, entry.name)).catch(() => {});
          }
        }
      }
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw this.#error(`clean ${dir}`, err);
    }
  }

  /** The file's path: files of this client can be copied by another with `copyLTXFile`. */
  localPath(file: LTXFileId): string {
    return this.filePath(file);
  }

  /** The owner marker at `<root>/sluice-owner.json`, created with link() so one claimant wins. */
  ownerMarker(): OwnerMarker {
    const root = this.root;
    const path = join(root, OWNER_MARKER_NAME);
    return {
      path,
      async read() {
        try {
          return await Deno.readTextFile(path);
        } catch (err) {
          if (err instanceof Deno.errors.NotFound) return undefined;
          throw err;
        }
      },
      async createExclusive(text) {
        const tmp = `${path}.${Deno.pid}-${crypto.randomUUID().slice(0, 8)}.tmp`;
        // The root usually exists (a new tenant's attach creates it): created only when missing.
        await Deno.writeTextFile(tmp, text).catch(async (err) => {
          if (!(err instanceof Deno.errors.NotFound)) throw err;
          await Deno.mkdir(root, { recursive: true });
          await Deno.writeTextFile(tmp, text);
        });
        try {
          // link() fails if the marker exists: atomic and never half-written.
          await Deno.link(tmp, path);
          return true;
        } catch (err) {
          if (err instanceof Deno.errors.AlreadyExists) return false;
          throw err;
        } finally {
          await Deno.remove(tmp).catch(() => {});
        }
      },
    };
  }

  /** Nothing to release: every operation opens and closes its own descriptors. */
  close(): Promise<void> {
    return Promise.resolve();
  }

  /** After the rename: fsync the directory, stamp the file with its timestamp. */
  /**
   * `copyLTXFile` without patches: the same bytes under a second name, linked straight at
   * `path` (a link appears whole or not at all, so no temporary name is needed). LTX files are
   * never changed in place (each is written to a temporary name and renamed), so sharing the
   * inode is safe, and uploading a large snapshot or a tenant's next small file costs no copy.
   * The source is on stable storage already (every LTX file a client writes is synced before
   * it gets its name): only the new directory entry is synced. Undefined where a link cannot
   * be made (another file system, no links, `path` taken), so that the caller copies.
   */
  async #linkAsIs(
    file: LTXFileId,
    sourcePath: string,
    dir: string,
    path: string,
    timestamp: number,
  ): Promise<LTXFileInfo | undefined> {
    const link = () => Deno.link(sourcePath, path).then(() => true, (err) => err);
    let outcome = await link();
    if (outcome instanceof Deno.errors.NotFound) {
      // The level's directory does not exist yet (a new replica), or the source is gone (the
      // copy below reports that).
      await Deno.mkdir(dir, { recursive: true, mode: 0o755 }).catch(() => {});
      outcome = await link();
    }
    if (outcome !== true) return undefined;
    try {
      const info = await Deno.stat(path);
      await syncDirectory(dir);
      const createdAt = new Date(timestamp);
      // The source was written with this timestamp as its mtime: usually nothing to do.
      if (info.mtime?.getTime() !== timestamp) await Deno.utime(path, createdAt, createdAt);
      return { ...idOf(file), size: info.size, createdAt };
    } catch (err) {
      throw this.#error(`link ${path}`, err);
    }
  }

  async #finish(
    file: LTXFileId,
    dir: string,
    path: string,
    size: number,
    timestamp: number,
  ): Promise<LTXFileInfo> {
    try {
      await syncDirectory(dir);
      const createdAt = new Date(timestamp);
      await Deno.utime(path, createdAt, createdAt);
      return { ...idOf(file), size, createdAt };
    } catch (err) {
      throw this.#error(`finish writing ${path}`, err);
    }
  }

  #error(operation: string, err: unknown): ReplicaError {
    const reason = err instanceof Error ? err.message : String(err);
    return new ReplicaError(`${this.description}: ${operation}: ${reason}`, {
      cause: err,
    });
  }
}

function idOf(file: LTXFileId): LTXFileId {
  return { level: file.level, minTXID: file.minTXID, maxTXID: file.maxTXID };
}

/** A pull stream over an open descriptor that reads at most `limit` bytes, then closes it. */
function fileStream(
  fd: Deno.FsFile,
  limit: number,
  wrapError: (err: unknown) => Error,
): ReadableStream<Uint8Array> {
  let remaining = limit;
  let open = true;
  const close = () => {
    if (open) {
      open = false;
      fd.close();
    }
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (remaining <= 0) {
        close();
        controller.close();
        return;
      }
      const buffer = new Uint8Array(Math.min(READ_CHUNK_SIZE, remaining));
      let n: number | null;
      try {
        n = await fd.read(buffer);
      } catch (err) {
        close();
        controller.error(wrapError(err));
        return;
      }
      if (n === null) {
        close();
        controller.close();
        return;
      }
      remaining -= n;
      controller.enqueue(n === buffer.length ? buffer : buffer.subarray(0, n));
    },
    cancel() {
      close();
    },
  }, { highWaterMark: 0 });
}

/** Writes all of `bytes` at `out`'s position (`write` may take fewer bytes at a time). */
export async function writeAll(out: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.length) written += await out.write(bytes.subarray(written));
}

/** Copies `body` into `out`; on a write failure the body is cancelled with that error. */
async function copyStream(
  body: ReadableStream<Uint8Array>,
  out: Deno.FsFile,
  flush: FlushBehind,
): Promise<number> {
  const reader = body.getReader();
  let size = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return size;
      try {
        await writeAll(out, value);
      } catch (err) {
        await reader.cancel(err).catch(() => {});
        throw err;
      }
      size += value.length;
      flush.wrote(value.length);
    }
  } finally {
    reader.releaseLock();
  }
}

/** fsync a directory so a rename in it survives a power loss. */
export async function syncDirectory(dir: string): Promise<void> {
  const fd = await Deno.open(dir, { read: true });
  try {
    await fd.sync();
  } finally {
    fd.close();
  }
}

/**
 * Hard-links `source` as `target`; false where that is not possible (another file system, a
 * file system without links, a stale `target`), so that the caller copies instead.
 */
async function linkOrFalse(source: string, target: string): Promise<boolean> {
  try {
    await Deno.link(source, target);
    return true;
  } catch {
    return false;
  }
}
