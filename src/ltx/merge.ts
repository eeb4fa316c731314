/**
 * Merging LTX files (FORMAT.md §3.1, Go's `ltx.Compactor`): a k-way merge by page number where the
 * latest input wins, pages above the last Commit are dropped, and every input is read to its end
 * (so its file checksum is verified) before the merge ends. Compaction encodes the result;
 * restore writes it to a database file.
 *
 * @module
 */

import { CHECKSUM_FLAG, pageChecksum } from "./crc64.ts";
import type { Decoder } from "./decoder.ts";
import { Encoder, type EncoderOptions } from "./encoder.ts";
import { LTXChecksumError, LTXError, LTXFormatError } from "./errors.ts";
import {
  type Header,
  HEADER_FLAG_NO_CHECKSUM,
  isSnapshot,
  lockPageNumber,
  type Page,
  type Trailer,
} from "./header.ts";

/** The merged view of several LTX files. */
export interface MergeResult {
  /** Header of the merged file: Min of the first input, Max/Commit/Timestamp of the last,
   *  NoChecksum, WAL fields 0. */
  header: Header;
  /**
   * The merged pages, ascending; iterate once, to the end. The last step verifies every input.
   * Each page (object and bytes) is valid until the next one is asked for: the merge reads its
   * inputs' reused pages ({@linkcode Decoder.readPageView}), allocating and copying nothing per
   * page. Copy a page to keep it longer.
   */
  pages: AsyncIterable<Page>;
  /** The inputs' verified trailers, in input order.
   *  @throws {LTXError} before `pages` was read to the end. */
  trailers(): Trailer[];
}

/**
 * Opens a k-way merge of `inputs`, which must be sorted by MinTXID (listing order). Reads every
 * header first and checks equal page sizes and TXID contiguity (overlap is fine, a gap is not).
 * When the merged range starts at TXID 1 the pages must form a complete database.
 * On any error, and when the consumer stops early, every input is cancelled.
 * @throws {LTXError} on no inputs, a page-size mismatch or a TXID gap.
 * @throws {LTXFormatError} / {LTXChecksumError} from the inputs, while iterating.
 */
export async function mergeDecoders(inputs: Decoder[]): Promise<MergeResult> {
  if (inputs.length === 0) throw new LTXError("cannot merge zero LTX files");
  const headers: Header[] = [];
  try {
    for (const input of inputs) headers.push(await input.readHeader());
    checkSequence(headers, inputs.map((d) => d.name));
  } catch (err) {
    await cancelAll(inputs);
    throw err;
  }

  const first = headers[0];
  const last = headers[headers.length - 1];
  const header: Header = {
    flags: HEADER_FLAG_NO_CHECKSUM,
    pageSize: first.pageSize,
    commit: last.commit,
    minTXID: first.minTXID,
    maxTXID: last.maxTXID,
    timestamp: last.timestamp,
    // NoChecksum requires 0; first.preApplyChecksum is 0 for every file Litestream writes.
    preApplyChecksum: 0n,
    walOffset: 0,
    walSize: 0,
    walSalt1: 0,
    walSalt2: 0,
    nodeID: 0n,
  };
  let finished = false;
  return {
    header,
    pages: mergePages(inputs, headers, header, () => finished = true),
    trailers(): Trailer[] {
      if (!finished) {
        throw new LTXError(
          `trailers() of a merge of ${inputs.map((d) => d.name).join(", ")} before its pages ` +
            `were read to the end`,
        );
      }
      return inputs.map((d) => d.trailer!);
    },
  };
}

/**
 * The merge's checks of its inputs' headers (in input order, `names` for the messages): one
 * page size, and each file starting at most one past the previous end and reaching beyond it
 * (overlap is fine, a gap is not).
 * @throws {LTXError} on a page-size mismatch or a TXID gap.
 */
export function checkSequence(headers: Header[], names: string[]): void {
  for (let i = 1; i < headers.length; i++) {
    const prev = headers[i - 1];
    const cur = headers[i];
    if (cur.pageSize !== prev.pageSize) {
      throw new LTXError(
        `input files have mismatched page sizes: ${names[i - 1]} has ${prev.pageSize}, ` +
          `${names[i]} has ${cur.pageSize}; the database changed page size, so the ` +
          `replica must be reset with a new snapshot`,
      );
    }
    if (!(cur.minTXID <= prev.maxTXID + 1 && cur.maxTXID > prev.maxTXID)) {
      throw new LTXError(
        `non-contiguous LTX files: ${names[i - 1]} covers TXIDs ${prev.minTXID}…` +
          `${prev.maxTXID} and ${names[i]} covers ${cur.minTXID}…${cur.maxTXID}; ` +
          `each file must start at most one past the previous end and reach beyond it`,
      );
    }
  }
}

/** Min-heap of input indexes ordered by (current pgno, latest input first). */
class PageHeap {
  #items: number[] = [];
  constructor(readonly heads: (Page | null)[]) {}

  get size(): number {
    return this.#items.length;
  }

  peek(): number {
    return this.#items[0];
  }

  #less(a: number, b: number): boolean {
    const pa = this.heads[a]!.pgno;
    const pb = this.heads[b]!.pgno;
    return pa < pb || (pa === pb && a > b);
  }

  push(i: number): void {
    const items = this.#items;
    items.push(i);
    let k = items.length - 1;
    while (k > 0) {
      const parent = (k - 1) >> 1;
      if (!this.#less(items[k], items[parent])) break;
      [items[k], items[parent]] = [items[parent], items[k]];
      k = parent;
    }
  }

  pop(): number {
    const items = this.#items;
    const top = items[0];
    const end = items.pop()!;
    if (items.length > 0) {
      items[0] = end;
      let k = 0;
      for (;;) {
        const l = 2 * k + 1;
        const r = l + 1;
        let m = k;
        if (l < items.length && this.#less(items[l], items[m])) m = l;
        if (r < items.length && this.#less(items[r], items[m])) m = r;
        if (m === k) break;
        [items[k], items[m]] = [items[m], items[k]];
        k = m;
      }
    }
    return top;
  }
}

async function* mergePages(
  inputs: Decoder[],
  headers: Header[],
  header: Header,
  onFinished: () => void,
): AsyncGenerator<Page> {
  let completed = false;
  try {
    // Each input's current page is its decoder's reused view: valid until that input is
    // advanced, which happens for the winner only after the consumer had it.
    const heads: (Page | null)[] = inputs.map(() => null);
    const heap = new PageHeap(heads);
    const advance = async (i: number) => {
      heads[i] = await inputs[i].readPageView();
      if (heads[i]) heap.push(i);
    };
    for (let i = 0; i < inputs.length; i++) await advance(i);

    const snapshot = isSnapshot(header);
    const lockPage = lockPageNumber(header.pageSize);
    // With database checksums on every input, the merged database can be checked too.
    const allChecksummed = headers.every((h) => (h.flags & HEADER_FLAG_NO_CHECKSUM) === 0);
    let rolling = 0n;
    let expected = 1;
    while (heap.size > 0) {
      const winner = heap.pop(); // the latest input holding the smallest pgno
      const page = heads[winner]!;
      while (heap.size > 0 && heads[heap.peek()]!.pgno === page.pgno) await advance(heap.pop());
      if (page.pgno > header.commit) { // truncated by the last Commit
        await advance(winner);
        continue;
      }
      if (snapshot) {
        if (expected === lockPage) expected++;
        if (page.pgno !== expected) {
          throw new LTXFormatError(
            `merging ${names(inputs)}: page ${expected} of ${header.commit} is in none of the ` +
              `files, so they do not form a complete database`,
          );
        }
        expected++;
        if (allChecksummed) rolling ^= pageChecksum(page.pgno, page.data);
      }
      yield page;
      // Only now: the winner's next page goes into the buffer the consumer just had.
      await advance(winner);
    }
    if (snapshot) {
      if (expected === lockPage) expected++;
      if (expected <= header.commit) {
        throw new LTXFormatError(
          `merging ${names(inputs)}: pages ${expected}…${header.commit} are in none of the ` +
            `files, so they do not form a complete database`,
        );
      }
    }
    // Every input returned null, so each one's file checksum was verified.
    if (allChecksummed) checkChecksumChain(inputs, headers, snapshot ? rolling : undefined);
    completed = true;
    onFinished();
  } finally {
    if (!completed) await cancelAll(inputs);
  }
}

/**
 * For inputs that all carry database checksums: each file's pre-apply checksum must equal the
 * previous file's post-apply checksum, and a complete database must match the last post-apply.
 */
function checkChecksumChain(inputs: Decoder[], headers: Header[], database?: bigint): void {
  for (let i = 1; i < inputs.length; i++) {
    if (headers[i].minTXID !== headers[i - 1].maxTXID + 1) continue; // overlap: no link
    const before = inputs[i - 1].trailer!.postApplyChecksum;
    if (headers[i].preApplyChecksum !== before) {
      throw new LTXChecksumError(
        `${inputs[i].name}: pre-apply checksum ${hex(headers[i].preApplyChecksum)} does not ` +
          `match the post-apply checksum ${hex(before)} of ${inputs[i - 1].name}`,
      );
    }
  }
  if (database !== undefined) {
    const computed = CHECKSUM_FLAG | database;
    const expected = inputs[inputs.length - 1].trailer!.postApplyChecksum;
    if (computed !== expected) {
      throw new LTXChecksumError(
        `merging ${names(inputs)}: the merged database has checksum ${hex(computed)}, but ` +
          `${inputs[inputs.length - 1].name} says ${hex(expected)}`,
      );
    }
  }
}

async function cancelAll(inputs: Decoder[]): Promise<void> {
  await Promise.all(inputs.map((d) => d.cancel().catch(() => {})));
}

function names(inputs: Decoder[]): string {
  return inputs.length <= 3
    ? inputs.map((d) => d.name).join(", ")
    : `${inputs[0].name} … ${inputs[inputs.length - 1].name} (${inputs.length} files)`;
}

function hex(n: bigint): string {
  return n.toString(16).padStart(16, "0");
}

/**
 * Compaction: merges `inputs` (sorted by MinTXID) and encodes the result into `sink` with the
 * header of {@linkcode mergeDecoders} (NoChecksum, zero checksums). Every input is verified
 * before the output is closed; on any failure the sink is aborted and the inputs cancelled.
 * @returns the header written.
 * @throws {LTXError} from the merge or the encoder.
 */
export async function compact(
  inputs: Decoder[],
  sink: WritableStream<Uint8Array>,
  options?: EncoderOptions,
): Promise<Header> {
  let merged: MergeResult;
  try {
    merged = await mergeDecoders(inputs);
  } catch (err) {
    await sink.abort(err).catch(() => {});
    throw err;
  }
  let encoder: Encoder;
  try {
    encoder = new Encoder(sink, merged.header, options);
  } catch (err) {
    await Promise.all([sink.abort(err).catch(() => {}), cancelAll(inputs)]);
    throw err;
  }
  try {
    for await (const page of merged.pages) await encoder.encodePage(page.pgno, page.data);
    await encoder.close();
  } catch (err) {
    await Promise.all([encoder.abort(err).catch(() => {}), cancelAll(inputs)]);
    throw err;
  }
  return merged.header;
}
