/**
 * Compaction levels, snapshots and retention of a replica (FORMAT.md §3.2–§3.4). Built on the
 * engine (a compactor reads the database through the engine's {@linkcode DB}); the engine never
 * imports compaction: the layer above injects {@linkcode createCompactor} into the Store.
 *
 * @module
 */

export * from "./compactor.ts";
/** The checksum patch of a promoted snapshot, exported for its unit test. */
export { patchChecksum } from "./_promote.ts";
