/**
 * The WAL cursor persisted in the newest local L0 file's header (FORMAT.md §2.5): there is no
 * other position file, so a crash at any moment loses nothing.
 *
 * @module
 */

import { decodeHeader, type Header, HEADER_SIZE } from "../ltx/mod.ts";
import type { FileReplicaClient } from "../replica/mod.ts";
import type { WALCursor } from "./_wal_position.ts";

/** The cursor an L0 file's header records. */
export function cursorFrom(h: Header): WALCursor {
  return {
    txid: h.maxTXID,
    walOffset: h.walOffset,
    walSize: h.walSize,
    salt1: h.walSalt1,
    salt2: h.walSalt2,
    commit: h.commit,
  };
}

/** The cursor of the newest L0 file in the meta directory `local`, or undefined when empty. */
export async function loadCursor(local: FileReplicaClient): Promise<WALCursor | undefined> {
  let newest: number | undefined;
  for await (const f of local.ltxFiles(0)) newest = f.maxTXID;
  if (newest === undefined) return undefined;
  const stream = await local.openLTXFile(
    { level: 0, minTXID: newest, maxTXID: newest },
    { length: HEADER_SIZE },
  );
  const bytes = new Uint8Array(await new Response(stream).arrayBuffer());
  return cursorFrom(decodeHeader(bytes));
}
