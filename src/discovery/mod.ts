/**
 * Discovery: which files under a directory are SQLite databases (`sluice databases`, the
 * daemonless snapshot), and the directory monitor that keeps a Store in step with them.
 *
 * @module
 */

export * from "./discover.ts";
export * from "./monitor.ts";
