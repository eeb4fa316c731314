/**
 * Client-side encryption of a replica with age (https://age-encryption.org/v1): a
 * {@linkcode ReplicaClient} decorator that writes every LTX file as one age file (X25519 or
 * post-quantum hybrid recipients) and decrypts on open. File names, sizes and times stay
 * visible, so listing, restore planning and retention work without any key; contents do not.
 *
 * A replica is never mixed: the first write of a client (and `checkReplicaContent`, called when
 * a database attaches) looks at the first bytes of one existing file and refuses to write
 * encrypted files next to plaintext ones, or plaintext files next to encrypted ones.
 *
 * @module
 */

import { formatTXID } from "../ltx/mod.ts";
import {
  type LeaseStore,
  type ListOptions,
  type LTXFileId,
  type LTXFileInfo,
  type OpenOptions,
  type OwnerMarker,
  type ReplicaClient,
  ReplicaError,
  SNAPSHOT_LEVEL,
} from "./client.ts";
import { assertRange } from "./_names.ts";
import {
  AGE_MAGIC,
  type AgeModule,
  type ContentKind,
  contentKind,
  loadAge,
  peek,
  sliceStream,
} from "./_age_stream.ts";

/**
 * The age keys of one replica (config `age:`). Values are secrets (identities) or
 * linkable (recipients): they never appear in messages, logs or status.
 */
export interface AgeKeys {
  /** `age1…` public keys every file written is encrypted to; empty: this client cannot write. */
  recipients: readonly string[];
  /** `AGE-SECRET-KEY-1…` private keys tried on every file read; empty: contents stay unread. */
  identities: readonly string[];
}

/** Reading a file's contents needs an identity this client was not given. */
export class EncryptedContentError extends ReplicaError {
  /** Builds an error naming the file, the replica and the fix. */
  constructor(location: string, file: LTXFileId) {
    super(
      `${describe(file)} at ${location} is encrypted with age and no identity is configured; ` +
        `add age.identities (or age.identity-files) to the replica's config, or pass --age-identity FILE`,
    );
    this.name = "EncryptedContentError";
  }
}

/** A file could not be decrypted: another recipient's, damaged, or not an age file. */
export class DecryptionError extends ReplicaError {
  /** Builds an error; the message names the file and the replica. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "DecryptionError";
  }
}

/** Writing would mix encrypted and plaintext files on one replica. */
export class MixedReplicaError extends ReplicaError {
  /** Builds an error naming the replica, what it holds, and the fix. */
  constructor(location: string, holds: "encrypted" | "plaintext") {
    super(
      holds === "plaintext"
        ? `replica ${location} holds plaintext LTX files; sluice will not add age-encrypted files to it: ` +
          `replicate to a new, empty replica location, or remove age: from this replica's config`
        : `replica ${location} holds age-encrypted files; sluice will not add plaintext files to it: ` +
          `add the replica's age recipients (age.recipients) to this replica's config, or use a new replica location`,
    );
    this.name = "MixedReplicaError";
  }
}

/** What a replica holds, judged from the first bytes of one of its files. */
export type ReplicaContent = "encrypted" | "plaintext" | "empty" | "unknown";

/**
 * Looks at the first bytes of one file of the replica (the first one listed, level 0 first,
 * then 9, then 1…8) to tell whether its contents are age-encrypted. Costs a listing per level
 * until a file is found, and one small read.
 * @throws {ReplicaError} when the storage cannot be listed or read.
 */
export async function replicaContent(client: ReplicaClient): Promise<ReplicaContent> {
  const storage = client instanceof AgeReplicaClient ? client.storage : client;
  const levels = [0, SNAPSHOT_LEVEL, 1, 2, 3, 4, 5, 6, 7, 8];
  for (const level of levels) {
    for await (const file of storage.ltxFiles(level)) {
      const head = new Uint8Array(
        await new Response(
          await storage.openLTXFile(file, { length: AGE_MAGIC.length }),
        ).arrayBuffer(),
      );
      return KIND_CONTENT[contentKind(head)];
    }
  }
  return "empty";
}

const KIND_CONTENT: Record<ContentKind, ReplicaContent> = {
  age: "encrypted",
  ltx: "plaintext",
  unknown: "unknown",
};

/** Locations this process found to be safe to write in the given mode (saves requests on wake). */
const checked = new Set<string>();

/**
 * Refuses to go on when writing with `client` would mix encrypted and plaintext files: an
 * {@linkcode AgeReplicaClient} on a replica with plaintext LTX files, or a plain client on a
 * replica with age files. Call it before the first write (the engine does when a database
 * attaches); each location is checked once per process and mode. `position` is the replica's
 * newest TXID when the caller listed it already: 0 (an empty replica) needs no request.
 * @throws {MixedReplicaError} naming the replica and the fix.
 * @throws {ReplicaError} when the storage cannot be read.
 */
export async function checkReplicaContent(
  client: ReplicaClient,
  position?: number,
): Promise<void> {
  const encrypting = client instanceof AgeReplicaClient;
  const key = `${encrypting ? "age" : "plain"}:${client.location}`;
  if (checked.has(key)) return;
  const content = position === 0 ? "empty" : await replicaContent(client);
  if (encrypting && content === "plaintext") {
    throw new MixedReplicaError(client.location, "plaintext");
  }
  if (!encrypting && content === "encrypted") {
    throw new MixedReplicaError(client.location, "encrypted");
  }
  checked.add(key);
}

/**
 * The decorator: encrypts every file written to `storage` for `keys.recipients` and decrypts
 * every file read with `keys.identities`. It has no `localPath`/`copyLTXFile` on purpose: a
 * kernel copy of a local file would bypass the encryption, and a local path would let a reader
 * bypass the decryption. The owner marker and the lease are forwarded as they are.
 */
export class AgeReplicaClient implements ReplicaClient {
  /** The undecorated client: for listings and the first bytes of files, never for contents. */
  readonly storage: ReplicaClient;
  readonly #keys: AgeKeys;
  #encrypter?: Promise<InstanceType<AgeModule["Encrypter"]>>;
  #decrypter?: Promise<InstanceType<AgeModule["Decrypter"]>>;
  #writable?: Promise<void>;
  /** `openLTXFile` yields decrypted bytes, fewer than the listed (stored) size. */
  readonly contentTransformed = true;

  /** Wraps `storage`; nothing is loaded or checked until the first read or write. */
  constructor(storage: ReplicaClient, keys: AgeKeys) {
    this.storage = storage;
    this.#keys = { recipients: [...keys.recipients], identities: [...keys.identities] };
    // Capabilities that keep the encryption intact are forwarded when the storage has them.
    if (storage.removeTempFiles) this.removeTempFiles = () => storage.removeTempFiles!();
    if (storage.ownerMarker) this.ownerMarker = () => storage.ownerMarker!();
    if (storage.lease) this.lease = () => storage.lease!();
  }

  /** The backend's type (`file`, `s3`, …). */
  get type(): string {
    return this.storage.type;
  }

  /** The backend's location; keys are never part of it. */
  get location(): string {
    return this.storage.location;
  }

  /** Whether this client can read contents (it was given at least one identity). */
  get canDecrypt(): boolean {
    return this.#keys.identities.length > 0;
  }

  /** Listings come from the storage as they are: names, stored sizes and times. */
  ltxFiles(level: number, options?: ListOptions): AsyncIterable<LTXFileInfo> {
    return this.storage.ltxFiles(level, options);
  }

  /**
   * Opens a file and decrypts it, optionally a byte range of the plaintext. A range is cut out
   * of the decrypted stream: the bytes before it are decrypted and dropped (age's 64 KiB chunks
   * are authenticated in sequence), the bytes after it are never read.
   * @throws {EncryptedContentError} when this client has no identity.
   * @throws {DecryptionError} when no identity fits, the file is damaged or is not an age file.
   */
  async openLTXFile(
    file: LTXFileId,
    options: OpenOptions = {},
  ): Promise<ReadableStream<Uint8Array>> {
    const offset = options.offset ?? 0;
    assertRange(offset, options.length);
    if (!this.canDecrypt) throw new EncryptedContentError(this.location, file);
    const decrypter = await this.#getDecrypter();
    const name = `${describe(file)} at ${this.location}`;
    const { head, whole } = await peek(await this.storage.openLTXFile(file), AGE_MAGIC.length);
    const kind = contentKind(head);
    if (kind !== "age") {
      await whole.cancel().catch(() => {});
      throw new DecryptionError(
        kind === "ltx"
          ? `${name} is a plaintext LTX file, but age is configured for this replica; remove age: to read a plaintext replica`
          : `${name} is not an age-encrypted file (damaged or foreign); remove it from the replica or take a new snapshot`,
      );
    }
    let plain: ReadableStream<Uint8Array>;
    try {
      plain = await decrypter.decrypt(whole);
    } catch (err) {
      await whole.cancel().catch(() => {});
      throw new DecryptionError(headerProblem(name, err), { cause: err });
    }
    return sliceStream(
      plain,
      offset,
      options.length,
      (err) =>
        err instanceof ReplicaError ? err : new DecryptionError(
          `${name}: decryption failed (the file was modified or truncated); remove it from the replica or take a new snapshot`,
          { cause: err },
        ),
    );
  }

  /**
   * Encrypts `body` as it streams (64 KiB at a time, never the whole file in memory) and writes
   * the age file through the storage. The first write checks that the replica holds no
   * plaintext files.
   * @throws {MixedReplicaError} when the replica holds plaintext files.
   * @throws {ReplicaError} when this client has no recipient, or the storage write fails.
   */
  async writeLTXFile(
    file: LTXFileId,
    body: Uint8Array | ReadableStream<Uint8Array>,
    timestamp: number,
  ): Promise<LTXFileInfo> {
    let encrypted: Uint8Array | ReadableStream<Uint8Array>;
    try {
      if (this.#keys.recipients.length === 0) {
        throw new ReplicaError(
          `cannot write ${
            describe(file)
          } to ${this.location}: no age recipient is configured; add age.recipients to the replica's config`,
        );
      }
      this.#writable ??= checkReplicaContent(this);
      await this.#writable.catch((err) => {
        this.#writable = undefined;
        throw err;
      });
      const encrypter = await this.#getEncrypter();
      encrypted = body instanceof Uint8Array
        ? await encrypter.encrypt(body)
        : await encrypter.encrypt(body);
    } catch (err) {
      if (body instanceof ReadableStream) await body.cancel(err).catch(() => {});
      throw err;
    }
    return await this.storage.writeLTXFile(file, encrypted, timestamp);
  }

  /** Deletes through the storage (names are not encrypted). */
  deleteLTXFiles(files: readonly LTXFileId[]): Promise<void> {
    return this.storage.deleteLTXFiles(files);
  }

  /** Deletes everything through the storage. */
  deleteAll(): Promise<void> {
    return this.storage.deleteAll();
  }

  /** Closes the storage. */
  close(): Promise<void> {
    return this.storage.close();
  }

  /** Temp files are the storage's (they hold ciphertext, as every file written through here). */
  readonly removeTempFiles?: () => Promise<void>;

  /** The owner marker stays plain: it names the database path, not its contents. */
  readonly ownerMarker?: () => OwnerMarker;

  /** The ownership lease stays plain too: it names a host, a process and a database path. */
  readonly lease?: () => LeaseStore;

  #getEncrypter(): Promise<InstanceType<AgeModule["Encrypter"]>> {
    this.#encrypter ??= loadAge().then((age) => {
      const encrypter = new age.Encrypter();
      for (const recipient of this.#keys.recipients) encrypter.addRecipient(recipient);
      return encrypter;
    });
    return this.#encrypter;
  }

  #getDecrypter(): Promise<InstanceType<AgeModule["Decrypter"]>> {
    this.#decrypter ??= loadAge().then((age) => {
      const decrypter = new age.Decrypter();
      for (const identity of this.#keys.identities) decrypter.addIdentity(identity);
      return decrypter;
    });
    return this.#decrypter;
  }
}

/** `<level>/<min>-<max>.ltx`, for messages. */
function describe(file: LTXFileId): string {
  return `${file.level}/${formatTXID(file.minTXID)}-${formatTXID(file.maxTXID)}.ltx`;
}

/** One line for a header that did not decrypt; the package's own words say which case it is. */
function headerProblem(name: string, err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  if (/no identity matched/i.test(message)) {
    return `${name}: none of the configured age identities can decrypt it (it was encrypted for other recipients); check age.identities / --age-identity`;
  }
  return `${name}: its age header is damaged or unsupported; remove it from the replica or take a new snapshot`;
}
