/**
 * One compaction step: merge a contiguous run of files of one level into one file of the next
 * level (FORMAT.md §3.1, §3.2), streaming, and verify the result before anyone relies on it.
 *
 * @module
 */

import {
  decodeHeader,
  formatFilename,
  type Header,
  HEADER_SIZE,
  type PageEncoding,
} from "../ltx/mod.ts";
import {
  type LTXFileId,
  type LTXFileInfo,
  NotFoundError,
  type ReplicaClient,
  ReplicaError,
} from "../replica/mod.ts";
import type { FileReplicaClient } from "../replica/mod.ts";
import {
  compactSources,
  FileCompaction,
  type FileInput,
  handOffPipe,
  openDecoder,
  type PageSource,
  whereFromEnv,
  WORKER_THRESHOLD_BYTES,
} from "../pipeline/mod.ts";

/** A compaction output that does not match its inputs; nothing is deleted because of it. */
export class CompactionVerifyError extends Error {
  /** Builds an error naming the output file and what was wrong. */
  constructor(message: string) {
    super(message);
    this.name = "CompactionVerifyError";
  }
}

/** Where the inputs come from and where the output goes. */
export interface MergeStepOptions {
  /** The replica: source listing, fallback source, destination. */
  client: ReplicaClient;
  /** Local copies of level-0 files, read in preference to the replica's. */
  local?: FileReplicaClient;
  /** Page encoding of the output. */
  encoding?: PageEncoding;
}

/**
 * The longest run of `files` (sorted by MinTXID) in which each file starts right after the
 * previous one ends. A listing can show a later file before an earlier one (eventual
 * consistency); the run stops before such a hole so the merge never spans it.
 */
export function contiguousRun(files: readonly LTXFileInfo[]): LTXFileInfo[] {
  const run: LTXFileInfo[] = [];
  for (const file of files) {
    const prev = run[run.length - 1];
    if (prev && file.minTXID !== prev.maxTXID + 1) break;
    run.push(file);
  }
  return run;
}

/**
 * Merges `inputs` (a contiguous run of one level, oldest first) into
 * `<dstLevel>/<first.min>-<last.max>.ltx`, written atomically with the last input's timestamp.
 * Level-0 inputs are read from `local` when it still has them; when every input is a file on
 * this machine, the whole merge runs on a codec worker (`FileCompaction`). The output is then
 * read back and its header checked against the inputs.
 * @throws {CompactionVerifyError} when the inputs or the output do not cover the expected range.
 * @throws {LTXError} from a malformed input; {ReplicaError} from the storage.
 */
export async function mergeStep(
  dstLevel: number,
  inputs: readonly LTXFileInfo[],
  options: MergeStepOptions,
): Promise<LTXFileInfo> {
  const { client } = options;
  const first = inputs[0];
  const last = inputs[inputs.length - 1];
  const id: LTXFileId = { level: dstLevel, minTXID: first.minTXID, maxTXID: last.maxTXID };
  const target = `${
    formatFilename(id.minTXID, id.maxTXID)
  } (level ${dstLevel} at ${client.location})`;

  const { header, info } = await mergeLocalFiles(id, inputs, target, options) ??
    await mergeStreams(id, inputs, target, options);

  const problem = describeMismatch(header, id) ??
    (info.level !== id.level || info.minTXID !== id.minTXID || info.maxTXID !== id.maxTXID
      ? `the replica reports level ${info.level} ${
        formatFilename(info.minTXID, info.maxTXID)
      } for it`
      : undefined) ??
    await readBackHeader(client, id).then(
      (stored) => describeMismatch(stored, id, header),
      (err) => `it cannot be read back: ${(err as Error).message}`,
    );
  if (problem !== undefined) {
    // Ours and wrong: remove it so no restore plan picks it up.
    await client.deleteLTXFiles([id]).catch(() => {});
    throw new CompactionVerifyError(`compaction output ${target} is wrong: ${problem}`);
  }
  return info;
}

/** What a merge wrote: the header of the output and the replica's entry for it. */
interface Merged {
  header: Header;
  info: LTXFileInfo;
}

/**
 * The merge when every input is a file on this machine and the step is large enough for a
 * worker: the codec worker reads, verifies, merges and encodes the files itself, and this
 * thread only writes the output (a step of 100–256 level-0 files took ~65 % of the main
 * thread's core while it read, decoded and batched them here). Undefined when an input is not
 * local, or vanished before the worker opened it (retention): the caller then reads the
 * replica's copies as before.
 */
async function mergeLocalFiles(
  id: LTXFileId,
  inputs: readonly LTXFileInfo[],
  target: string,
  options: MergeStepOptions,
): Promise<Merged | undefined> {
  const { client } = options;
  const where = whereFromEnv();
  const total = inputs.reduce((sum, file) => sum + file.size, 0);
  if (where === "thread" || (where === "auto" && total < WORKER_THRESHOLD_BYTES)) return;
  const files = await localFiles(inputs, client, options.local);
  if (files === undefined) return;
  const reuseChunks = client.releasesEachChunk === true;
  let job: FileCompaction;
  try {
    job = await FileCompaction.open(files, { encoding: options.encoding, reuseChunks });
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return;
    throw err;
  }
  try {
    checkInputs(inputs, job.headers, files.map((f) => f.name), target);
  } catch (err) {
    await job.cancel();
    throw err;
  }
  const pipe = reuseChunks ? handOffPipe() : new TransformStream<Uint8Array, Uint8Array>();
  const written = client.writeLTXFile(id, pipe.readable, job.headers.at(-1)!.timestamp);
  written.catch(() => {}); // awaited below; a failure also surfaces through compactInto()
  let header: Header;
  try {
    header = await job.compactInto(pipe.writable);
  } catch (err) {
    await written.catch(() => {});
    throw err;
  }
  return { header, info: await written };
}

/**
 * Every input as a file on this machine (a level-0 file's local copy first, then the
 * replica's own path), or undefined when one has none: the files `openInput` would read.
 */
async function localFiles(
  inputs: readonly LTXFileInfo[],
  client: ReplicaClient,
  local: FileReplicaClient | undefined,
): Promise<FileInput[] | undefined> {
  const files: FileInput[] = [];
  for (const file of inputs) {
    const name = formatFilename(file.minTXID, file.maxTXID);
    const candidates: { path: string | undefined; name: string }[] = [];
    if (local && file.level === 0) {
      candidates.push({
        path: local.localPath(file),
        name: `${name} (level 0 at ${local.location})`,
      });
    }
    candidates.push({
      path: client.localPath?.(file),
      name: `${name} (level ${file.level} at ${client.location})`,
    });
    let found: FileInput | undefined;
    for (const { path, name } of candidates) {
      if (path !== undefined && await isFile(path)) {
        found = { path, name, size: file.size };
        break;
      }
    }
    if (found === undefined) return undefined;
    files.push(found);
  }
  return files;
}

/** Whether `path` is a file that exists now (no descriptor is opened). */
async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

/** The merge over streams: each input read here (or by the replica), decoded by size. */
async function mergeStreams(
  id: LTXFileId,
  inputs: readonly LTXFileInfo[],
  target: string,
  options: MergeStepOptions,
): Promise<Merged> {
  const { client, local } = options;
  const decoders: PageSource[] = [];
  const cancelAll = () => Promise.all(decoders.map((d) => d.cancel().catch(() => {})));
  let headers: Header[];
  try {
    for (const file of inputs) {
      const { stream, name } = await openInput(file, client, local);
      // Large inputs decode on a codec worker; the output is encoded on one too.
      decoders.push(openDecoder(stream, { name, size: file.size }));
    }
    headers = [];
    for (const decoder of decoders) headers.push(await decoder.readHeader());
    checkInputs(inputs, headers, decoders.map((d) => d.name), target);
  } catch (err) {
    await cancelAll();
    throw err;
  }

  // The output streams straight from the merge into the replica's atomic write. A directory
  // replica writes each chunk out before it reads the next, so the encoder may reuse its
  // buffers instead of leaving a fresh one per chunk to the GC.
  const reuseChunks = client.releasesEachChunk === true;
  const pipe = reuseChunks ? handOffPipe() : new TransformStream<Uint8Array, Uint8Array>();
  const written = client.writeLTXFile(id, pipe.readable, headers[headers.length - 1].timestamp);
  written.catch(() => {}); // awaited below; a failure also surfaces through compact()
  let header: Header;
  try {
    header = await compactSources(decoders, pipe.writable, {
      encoding: options.encoding,
      reuseChunks,
      expectedBytes: inputs.reduce((sum, file) => sum + file.size, 0),
    });
  } catch (err) {
    await written.catch(() => {});
    throw err;
  }
  return { header, info: await written };
}

/** Opens one input, preferring the local copy of a level-0 file. */
async function openInput(
  file: LTXFileInfo,
  client: ReplicaClient,
  local: FileReplicaClient | undefined,
): Promise<{ stream: ReadableStream<Uint8Array>; name: string }> {
  const name = formatFilename(file.minTXID, file.maxTXID);
  if (local && file.level === 0) {
    try {
      return {
        stream: await openLocalFile(local.localPath(file), file.size) ??
          await local.openLTXFile(file),
        name: `${name} (level 0 at ${local.location})`,
      };
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
    }
  }
  const path = client.localPath?.(file);
  return {
    stream: (path !== undefined ? await openLocalFile(path, file.size) : undefined) ??
      await client.openLTXFile(file),
    name: `${name} (level ${file.level} at ${client.location})`,
  };
}

/** Bytes per read of a local input: large reads cost a fraction of many 64 KiB ones. */
const LOCAL_READ_BYTES = 1 << 20;

/**
 * A file on this machine as a byte stream, opened now: the codec pipeline reads it in BYOB
 * mode straight into its own buffers (no fresh buffer per read, no copy); undefined when it
 * cannot be opened here, so the client's `openLTXFile` reports why. `size` (the listed size)
 * bounds the chunks a default reader gets, so a small file costs a small buffer.
 */
async function openLocalFile(
  path: string,
  size: number,
): Promise<ReadableStream<Uint8Array> | undefined> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch {
    return undefined;
  }
  let open = true;
  const close = () => {
    if (open) {
      open = false;
      file.close();
    }
  };
  return new ReadableStream({
    type: "bytes",
    autoAllocateChunkSize: Math.max(1, Math.min(LOCAL_READ_BYTES, size)),
    async pull(controller) {
      const request = controller.byobRequest!;
      let n: number | null;
      try {
        n = await file.read(request.view as Uint8Array);
      } catch (err) {
        close();
        throw new ReplicaError(`read ${path}: ${(err as Error).message}`, { cause: err });
      }
      if (n === null) {
        close();
        controller.close();
        request.respond(0);
        return;
      }
      request.respond(n);
    },
    cancel: close,
  });
}

/** Each header must match its listing entry and the run must be gap-free. */
function checkInputs(
  inputs: readonly LTXFileInfo[],
  headers: Header[],
  names: string[],
  target: string,
): void {
  headers.forEach((h, i) => {
    const file = inputs[i];
    if (h.minTXID !== file.minTXID || h.maxTXID !== file.maxTXID) {
      throw new CompactionVerifyError(
        `cannot compact into ${target}: ${names[i]} has a header covering TXIDs ` +
          `${formatFilename(h.minTXID, h.maxTXID)}, not what its name says; the replica is damaged`,
      );
    }
    if (i > 0 && h.minTXID !== headers[i - 1].maxTXID + 1) {
      throw new CompactionVerifyError(
        `cannot compact into ${target}: ${names[i]} does not follow ` +
          `${names[i - 1]} directly`,
      );
    }
  });
}

/** A description of how `header` differs from the expected range (and `like`), or undefined. */
function describeMismatch(header: Header, id: LTXFileId, like?: Header): string | undefined {
  if (header.minTXID !== id.minTXID || header.maxTXID !== id.maxTXID) {
    return `its header covers ${formatFilename(header.minTXID, header.maxTXID)}`;
  }
  if (like && (header.pageSize !== like.pageSize || header.commit !== like.commit)) {
    return `read back with page size ${header.pageSize} and commit ${header.commit}, ` +
      `written with ${like.pageSize} and ${like.commit}`;
  }
  return undefined;
}

/** Reads the first 100 bytes of a replica file and decodes them. */
async function readBackHeader(client: ReplicaClient, id: LTXFileId): Promise<Header> {
  const stream = await client.openLTXFile(id, { length: HEADER_SIZE });
  const bytes = new Uint8Array(await new Response(stream).arrayBuffer());
  return decodeHeader(bytes.subarray(0, HEADER_SIZE));
}
