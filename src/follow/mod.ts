/**
 * Read replicas: `restore --follow` keeps a restored database up to date while applications
 * read it with ordinary SQLite, applying each new LTX file as one rollback-journal transaction
 * under SQLite's own file locks (see docs/INTERNALS.md, `src/follow/mod.ts`).
 *
 * @module
 */

export { follow, FollowError, type FollowOptions, type FollowStart } from "./follower.ts";
export { type FollowRecord, readRecord, RECORD_SUFFIX } from "./_record.ts";
export { ApplyError, type OutputState, recoverHotJournal } from "./_apply.ts";
