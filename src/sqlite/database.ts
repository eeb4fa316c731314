/**
 * The 100-byte header of a SQLite database file, and the lock page.
 *
 * @module
 */

/** Size of the database file header. */
export const DATABASE_HEADER_SIZE = 100;

const MAGIC = new TextEncoder().encode("SQLite format 3\0");

/** The file is not a usable SQLite database. The message names the path. */
export class InvalidDatabaseError extends Error {
  /** @param message what is wrong with which file */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "InvalidDatabaseError";
  }
}

/** The fields of the database header that sluice uses. */
export interface DatabaseHeader {
  /** Page size in bytes; the stored value 1 means 65536. */
  pageSize: number;
  /** "In-header database size" in pages (offset 28). */
  pageCount: number;
  /** File format write version: 1 legacy (rollback journal), 2 WAL. */
  writeVersion: number;
  /** File format read version: 1 legacy (rollback journal), 2 WAL. */
  readVersion: number;
}

/** Cheap check that `bytes` start with the SQLite magic "SQLite format 3\0". */
export function isSQLiteHeader(bytes: Uint8Array): boolean {
  if (bytes.length < MAGIC.length) return false;
  for (let i = 0; i < MAGIC.length; i++) if (bytes[i] !== MAGIC[i]) return false;
  return true;
}

/**
 * Decodes the first 100 bytes of a database file.
 *
 * @param path used only in error messages
 * @throws InvalidDatabaseError for fewer than 100 bytes, a bad magic or an invalid page size.
 */
export function parseDatabaseHeader(bytes: Uint8Array, path = "database"): DatabaseHeader {
  if (bytes.length < DATABASE_HEADER_SIZE) {
    throw new InvalidDatabaseError(
      `${path}: too short to be a SQLite database (${bytes.length} bytes, the header alone is ` +
        `${DATABASE_HEADER_SIZE}); is it being created, or not a database?`,
    );
  }
  if (!isSQLiteHeader(bytes)) {
    throw new InvalidDatabaseError(
      `${path}: not a SQLite database (the file does not start with "SQLite format 3")`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, DATABASE_HEADER_SIZE);
  const stored = view.getUint16(16);
  const pageSize = stored === 1 ? 65536 : stored;
  if (pageSize < 512 || pageSize > 65536 || (pageSize & (pageSize - 1)) !== 0) {
    throw new InvalidDatabaseError(
      `${path}: invalid page size ${stored} in the database header (the file is corrupt)`,
    );
  }
  return {
    pageSize,
    pageCount: view.getUint32(28),
    writeVersion: bytes[18],
    readVersion: bytes[19],
  };
}

/**
 * Number of the page that holds the 1 GiB lock byte ("pending byte"): SQLite never stores data
 * in it, LTX files never contain it and restores leave it zero-filled (FORMAT.md §1.12).
 */
export function pendingBytePage(pageSize: number): number {
  return Math.floor(0x40000000 / pageSize) + 1;
}
