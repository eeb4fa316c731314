/**
 * Discovery: which files under a directory are SQLite databases (`sluice databases`, the
 * daemonless snapshot), and the directory monitor that keeps a Store in step with them.
 *
 * @module
 */

export * from "./discover.ts";
export * from "./monitor.ts";
/** The reconcile scan's listing and its directory reader, exported for their unit tests. */
export { CandidateListing, RECENT_CHANGE_MS } from "./_walk.ts";
export { readVisibleEntries, type VisibleEntries } from "./_readdir.ts";
