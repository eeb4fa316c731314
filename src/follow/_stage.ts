/**
 * Where the pages of one application wait while the journal is written: decoded LTX pages in
 * memory (spilled to a private file beyond a bound), or a whole restored database file. An
 * application reads every page twice (to journal what it replaces, then to write it), and an
 * LTX stream can be read only once.
 *
 * @module
 */

import { lockPageNumber, type Page } from "../ltx/mod.ts";

/** The pages one transaction writes to the output. */
export interface Stage {
  readonly pageSize: number;
  /** Database size in pages after the transaction. */
  readonly commit: number;
  /** Page numbers held, ascending. */
  readonly pgnos: readonly number[];
  /** Copies page `pgno` (one of `pgnos`) into `into` (pageSize bytes). */
  read(pgno: number, into: Uint8Array): Promise<void>;
  /** Frees memory and removes a spill file. */
  close(): Promise<void>;
}

/** Bytes kept in memory before pages spill to a file. */
export const MEMORY_STAGE_BYTES = 64 << 20;

/** Decoded pages: in memory up to a bound, then appended to `spillPath`. */
export class PageStage implements Stage {
  readonly pageSize: number;
  readonly commit: number;
  readonly pgnos: number[] = [];
  #memory = new Map<number, Uint8Array>();
  #spilled = new Map<number, number>();
  #spillPath: string;
  #spill: Deno.FsFile | undefined;
  #spillEnd = 0;
  #limit: number;

  /** An empty stage for a database of `commit` pages of `pageSize` bytes. */
  constructor(pageSize: number, commit: number, spillPath: string, limit = MEMORY_STAGE_BYTES) {
    this.pageSize = pageSize;
    this.commit = commit;
    this.#spillPath = spillPath;
    this.#limit = limit;
  }

  /** Adds the next page (ascending page numbers). */
  async add(page: Page): Promise<void> {
    this.pgnos.push(page.pgno);
    if (this.#memory.size * this.pageSize < this.#limit) {
      this.#memory.set(page.pgno, page.data.slice());
      return;
    }
    this.#spill ??= await Deno.open(this.#spillPath, {
      read: true,
      write: true,
      create: true,
      truncate: true,
    });
    await this.#spill.seek(this.#spillEnd, Deno.SeekMode.Start);
    let written = 0;
    while (written < page.data.length) {
      written += await this.#spill.write(page.data.subarray(written));
    }
    this.#spilled.set(page.pgno, this.#spillEnd);
    this.#spillEnd += this.pageSize;
  }

  async read(pgno: number, into: Uint8Array): Promise<void> {
    const held = this.#memory.get(pgno);
    if (held) {
      into.set(held);
      return;
    }
    const offset = this.#spilled.get(pgno);
    if (offset === undefined || !this.#spill) throw new Error(`page ${pgno} is not staged`);
    await this.#spill.seek(offset, Deno.SeekMode.Start);
    let filled = 0;
    while (filled < into.length) {
      const n = await this.#spill.read(into.subarray(filled));
      if (n === null) throw new Error(`${this.#spillPath}: ends before page ${pgno}`);
      filled += n;
    }
  }

  async close(): Promise<void> {
    this.#memory.clear();
    if (this.#spill) {
      this.#spill.close();
      this.#spill = undefined;
      await Deno.remove(this.#spillPath).catch(() => {});
    }
  }
}

/** Every page of a complete database file (a fresh restore), read in place. */
export class DatabaseFileStage implements Stage {
  readonly pageSize: number;
  readonly commit: number;
  readonly pgnos: number[];
  #file: Deno.FsFile;

  private constructor(file: Deno.FsFile, pageSize: number, commit: number) {
    this.#file = file;
    this.pageSize = pageSize;
    this.commit = commit;
    const lock = lockPageNumber(pageSize);
    this.pgnos = [];
    for (let pgno = 1; pgno <= commit; pgno++) if (pgno !== lock) this.pgnos.push(pgno);
  }

  /** Opens the database file at `path` (not a live database: a private restore output). */
  static async open(path: string, pageSize: number, commit: number): Promise<DatabaseFileStage> {
    return new DatabaseFileStage(await Deno.open(path, { read: true }), pageSize, commit);
  }

  async read(pgno: number, into: Uint8Array): Promise<void> {
    await this.#file.seek((pgno - 1) * this.pageSize, Deno.SeekMode.Start);
    let filled = 0;
    while (filled < into.length) {
      const n = await this.#file.read(into.subarray(filled));
      if (n === null) throw new Error(`restored database ends before page ${pgno}`);
      filled += n;
    }
  }

  close(): Promise<void> {
    this.#file.close();
    return Promise.resolve();
  }
}
