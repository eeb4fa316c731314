/**
 * The storage-neutral interface every replica backend implements.
 *
 * A replica holds LTX files grouped by level (0 = one file per sync, 1…8 = compactions,
 * 9 = snapshots). Backends differ only in how a (level, minTXID, maxTXID) triple maps to a
 * name and where the file's creation time is kept (FORMAT.md §2.3).
 *
 * @module
 */

/** The highest compaction level; level 9 holds full snapshots. */
export const SNAPSHOT_LEVEL = 9;

/** One LTX file as seen in a replica listing. */
export interface LTXFileInfo {
  /** Level 0…9. */
  level: number;
  /** First transaction ID covered by the file. */
  minTXID: number;
  /** Last transaction ID covered by the file. */
  maxTXID: number;
  /** Stored size in bytes (used to detect truncated downloads). */
  size: number;
  /**
   * When the file was created. File replicas: the mtime, which sluice and Litestream set to
   * the LTX header timestamp. S3: the `litestream-timestamp` metadata when `useMetadata` was
   * asked for and present, otherwise LastModified.
   */
  createdAt: Date;
}

/** Options for {@linkcode ReplicaClient.ltxFiles}. */
export interface ListOptions {
  /** Only list files whose minTXID is at least this. Default 0 (everything). */
  seekTXID?: number;
  /**
   * Read the exact creation time from per-object metadata where the backend stores it
   * separately (S3). Costs a request per object on S3; used for timestamp restores only.
   */
  useMetadata?: boolean;
}

/** Options for {@linkcode ReplicaClient.openLTXFile}. */
export interface OpenOptions {
  /** Byte offset to start reading at. Default 0. */
  offset?: number;
  /** Number of bytes to read. Default: to the end of the file. */
  length?: number;
}

/** The identity of one LTX file on a replica. */
export interface LTXFileId {
  level: number;
  minTXID: number;
  maxTXID: number;
}

/** Reads and writes LTX files on one replica location. Implementations are stateless. */
export interface ReplicaClient {
  /** Backend name for logs and metrics: `"file"` or `"s3"`. */
  readonly type: string;
  /** A human-readable location without secrets, e.g. `file:///backups/db` or `s3://bucket/db`. */
  readonly location: string;

  /**
   * Lists one level in ascending (minTXID, maxTXID) order. Names that are not strict
   * lowercase `<16 hex>-<16 hex>.ltx` are ignored. A missing level lists as empty.
   * @throws {ReplicaError} when the storage cannot be listed (e.g. missing bucket).
   */
  ltxFiles(level: number, options?: ListOptions): AsyncIterable<LTXFileInfo>;

  /**
   * Opens one file for streaming, optionally a byte range of it. A range running past the end
   * stops at the end; an offset at or past the end gives an empty stream. Read the stream to
   * its end or cancel it, so the descriptor or connection behind it is released.
   * @throws {NotFoundError} when the file does not exist.
   * @throws {ReplicaError} when the storage cannot be reached (e.g. missing bucket).
   */
  openLTXFile(file: LTXFileId, options?: OpenOptions): Promise<ReadableStream<Uint8Array>>;

  /**
   * Writes one file atomically: readers see either the whole file or nothing. `timestamp`
   * (ms since the epoch, the LTX header's) becomes the file's `createdAt`.
   * A failed write leaves no partial file behind, and a failed write cancels a stream `body`
   * so that whoever feeds it sees the failure.
   * @throws {ReplicaError} when the body errors or the storage rejects the write.
   */
  writeLTXFile(
    file: LTXFileId,
    body: Uint8Array | ReadableStream<Uint8Array>,
    timestamp: number,
  ): Promise<LTXFileInfo>;

  /** Deletes the given files; files already gone are not an error. */
  deleteLTXFiles(files: readonly LTXFileId[]): Promise<void>;

  /** Deletes every file this client manages under its location. */
  deleteAll(): Promise<void>;

  /** Releases sockets and other resources. Idempotent. */
  close(): Promise<void>;

  // Capabilities: optional, a backend offers them where it can do better than the generic path.

  /**
   * Where `file` lives on this machine's file system, for a backend that keeps files locally:
   * other clients can then copy it with {@linkcode ReplicaClient.copyLTXFile}.
   */
  localPath?(file: LTXFileId): string;

  /**
   * True when {@linkcode ReplicaClient.writeLTXFile} is done with each chunk of a streamed
   * body (written out, no reference kept) before it reads the next: the writer may then reuse
   * its buffers (`handOffPipe` in src/pipeline). Absent: chunks may be kept (gathered into
   * upload parts, queued), so each must be a buffer of its own.
   */
  readonly releasesEachChunk?: boolean;

  /**
   * Writes `file` as a copy of the local file at `sourcePath` with `patches` written over it,
   * with the guarantees of {@linkcode ReplicaClient.writeLTXFile}, without streaming the bytes
   * through this process (a kernel copy). Absent: stream the file through `writeLTXFile`.
   * @throws {ReplicaError} when any step fails.
   */
  copyLTXFile?(
    file: LTXFileId,
    sourcePath: string,
    timestamp: number,
    patches?: ReadonlyArray<{ offset: number; bytes: Uint8Array }>,
  ): Promise<LTXFileInfo>;

  /**
   * Removes temporary files a killed writer left behind. Call it only while holding the replica
   * (no other writer can be mid-write). Absent: the backend leaves none (S3 writes are atomic).
   */
  removeTempFiles?(): Promise<void>;

  /**
   * Where this backend keeps the replica's owner marker (which database writes it). Absent: the
   * backend cannot hold one yet (S3), and ownership is not checked.
   */
  ownerMarker?(): OwnerMarker;

  /**
   * True when `openLTXFile` yields other bytes than are stored (the age decorator decrypts):
   * listed sizes are then stored sizes, longer than the stream, and the client itself detects a
   * truncated file (age authenticates every chunk and the last one).
   */
  readonly contentTransformed?: boolean;

  /**
   * Conditional writes of the replica's owner lease (`sluice-lease.json` beside the levels), for
   * object stores that offer `If-None-Match: *` / `If-Match` (S3, Azure). Absent: the backend has
   * no lease and ownership is checked with {@linkcode ReplicaClient.ownerMarker}, if any.
   */
  lease?(): LeaseStore;
}

/** One version of the lease object: its text and the ETag that identifies that version. */
export interface LeaseVersion {
  text: string;
  etag: string;
}

/**
 * The conditional-write primitives of one small object (the owner lease). Each method is one
 * request; the protocol built on them lives in the engine.
 */
export interface LeaseStore {
  /** Where the lease object is (`s3://bucket/path/sluice-lease.json`), for messages. */
  readonly path: string;
  /** The current version, or undefined when there is none. @throws {ReplicaError} */
  read(): Promise<LeaseVersion | undefined>;
  /** Creates the object only if none exists; its ETag, or undefined when one exists. */
  create(text: string): Promise<string | undefined>;
  /** Replaces the object only if its ETag is still `etag`; the new ETag, or undefined. */
  replace(text: string, etag: string): Promise<string | undefined>;
  /**
   * Whether the store enforces conditional writes: a probe object is created and then created
   * again with `If-None-Match: *` and written with a wrong `If-Match`, both of which must fail
   * with 412 (or 409). Asked once per storage account/bucket per process.
   * @throws {ReplicaError} when the probe cannot be written at all.
   */
  enforcesConditions(): Promise<boolean>;
}

/** Name of the owner lease object at an object-store replica's root. */
export const LEASE_NAME = "sluice-lease.json";

/** The owner marker of a replica: a small text file created at most once. */
export interface OwnerMarker {
  /** Where the marker is, for messages. */
  readonly path: string;
  /** The marker's text, or undefined when there is none. */
  read(): Promise<string | undefined>;
  /** Creates the marker unless one exists; false when another process created it first. */
  createExclusive(text: string): Promise<boolean>;
}

/** Name of the owner marker at a replica's root. */
export const OWNER_MARKER_NAME = "sluice-owner.json";

/** A replica operation failed; the message names the location and the operation. */
export class ReplicaError extends Error {
  /** Builds an error; `cause` keeps the backend's original error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ReplicaError";
  }
}

/** The requested file does not exist on the replica. */
export class NotFoundError extends ReplicaError {
  /** Builds an error naming the missing file. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "NotFoundError";
  }
}
