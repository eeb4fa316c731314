/**
 * Reads one replica file to its end through the LTX decoder (header, every page, index, trailer,
 * file checksum; large files on the codec worker) without keeping its pages, and says what is
 * wrong with it, if anything.
 *
 * @module
 */

import { formatFilename, formatTXID, type Header, LTXError, type Trailer } from "../ltx/mod.ts";
import { openDecoder } from "../pipeline/mod.ts";
import {
  type LTXFileInfo,
  NotFoundError,
  type ReplicaClient,
  SNAPSHOT_LEVEL,
} from "../replica/mod.ts";

/** What reading one file found. */
export interface ScannedFile {
  info: LTXFileInfo;
  /** `L<level>/<min>-<max>.ltx`: how reports name the file. */
  name: string;
  /** Set once the header was read and validated. */
  header?: Header;
  /** Set once the whole file was read and verified. */
  trailer?: Trailer;
  pageCount: number;
  /** Why the file is unusable; undefined when it is intact. */
  error?: string;
  /** The file was deleted after it was listed (compaction or retention of a live replica). */
  vanished?: boolean;
}

/** `L<level>/<min>-<max>.ltx`. */
export function fileName(info: { level: number; minTXID: number; maxTXID: number }): string {
  return `L${info.level}/${formatFilename(info.minTXID, info.maxTXID)}`;
}

/**
 * Reads `info` from `client` to its end. Never throws for the file's content: a malformed,
 * truncated or corrupt file comes back with `error` set. `onBytes` is told about every chunk.
 * @throws when `signal` aborts.
 */
export async function scanFile(
  client: ReplicaClient,
  info: LTXFileInfo,
  onBytes: (n: number) => void,
  signal?: AbortSignal,
): Promise<ScannedFile> {
  const name = fileName(info);
  const scanned: ScannedFile = { info, name, pageCount: 0 };
  const where = client.localPath?.(info) ?? `${name} at ${client.location}`;
  let received = 0;
  let source: ReadableStream<Uint8Array>;
  try {
    source = counted(await client.openLTXFile(info), (n) => {
      received += n;
      onBytes(n);
    });
  } catch (err) {
    if (err instanceof NotFoundError) scanned.vanished = true;
    scanned.error = `cannot be read: ${(err as Error).message}`;
    return scanned;
  }
  const decoder = openDecoder(source, { name: where, size: info.size });
  try {
    const header = await decoder.readHeader();
    scanned.header = header;
    while (await decoder.readPage() !== null) signal?.throwIfAborted();
    scanned.trailer = decoder.trailer;
    scanned.pageCount = decoder.pageCount;
  } catch (err) {
    await decoder.cancel().catch(() => {});
    signal?.throwIfAborted();
    if (!(err instanceof LTXError)) {
      scanned.error = `cannot be read: ${(err as Error).message}`;
      return scanned;
    }
    scanned.error = stripName((err as Error).message, where);
    if (received < info.size) scanned.error += ` (read ${received} of ${info.size} bytes)`;
    return scanned;
  }
  scanned.error = checkIdentity(scanned.header!, info);
  return scanned;
}

/** The header must describe the range the name promises; a snapshot must start at TXID 1. */
function checkIdentity(header: Header, info: LTXFileInfo): string | undefined {
  if (header.minTXID !== info.minTXID || header.maxTXID !== info.maxTXID) {
    return `its header covers TXID ${formatTXID(header.minTXID)}-${formatTXID(header.maxTXID)}, ` +
      `not the range its name says (renamed or overwritten)`;
  }
  if (info.level === SNAPSHOT_LEVEL && header.minTXID !== 1) {
    return `a level-${SNAPSHOT_LEVEL} snapshot must start at TXID 0000000000000001`;
  }
  return undefined;
}

/** Decoder messages start with the file's name, which reports print already. */
function stripName(message: string, name: string): string {
  return message.startsWith(`${name}: `) ? message.slice(name.length + 2) : message;
}

/** `source`, telling `onBytes` how many bytes each chunk held. */
function counted(
  source: ReadableStream<Uint8Array>,
  onBytes: (n: number) => void,
): ReadableStream<Uint8Array> {
  const reader = source.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const { done, value } = await reader.read();
      if (done) {
        controller.close();
        return;
      }
      onBytes(value.length);
      controller.enqueue(value);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}
