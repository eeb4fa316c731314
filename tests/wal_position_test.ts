import assert from "node:assert/strict";
import {
  afterLastFrameCheck,
  decideSyncStart,
  type WALCursor,
  type WALObservation,
} from "../src/engine/mod.ts";

const FRAME = 24 + 4096;
const cursor: WALCursor = {
  txid: 7,
  walOffset: 32 + FRAME,
  walSize: 3 * FRAME,
  salt1: 11,
  salt2: 22,
  commit: 10,
};
const end = cursor.walOffset + cursor.walSize;

function seen(over: Partial<WALObservation> = {}): WALObservation {
  return {
    walFileSize: end + 2 * FRAME,
    headerSalts: { salt1: 11, salt2: 22 },
    syncedToWALEnd: false,
    frameSize: FRAME,
    ...over,
  };
}

Deno.test("sync start: no local position means a snapshot", () => {
  assert.equal(decideSyncStart(undefined, seen()).kind, "snapshot");
});

Deno.test("sync start: WAL shorter than the cursor", async (t) => {
  await t.step("after syncing to the WAL end: continue at 32 with the new salts", () => {
    const start = decideSyncStart(
      cursor,
      seen({ walFileSize: 32 + FRAME, syncedToWALEnd: true, headerSalts: { salt1: 12, salt2: 5 } }),
    );
    assert.deepEqual(start, { kind: "incremental", offset: 32, salt1: 12, salt2: 5 });
  });
  await t.step("after syncing to the WAL end, WAL now empty: idle", () => {
    const start = decideSyncStart(
      cursor,
      seen({ walFileSize: 0, syncedToWALEnd: true, headerSalts: undefined }),
    );
    assert.deepEqual(start, { kind: "idle" });
  });
  await t.step("otherwise it was truncated by another process: snapshot", () => {
    const start = decideSyncStart(cursor, seen({ walFileSize: 32 + FRAME }));
    assert.equal(start.kind, "snapshot");
  });
});

Deno.test("sync start: cursor at 32 or one frame in compares header salts", () => {
  for (const walOffset of [32, 32 + FRAME]) {
    const c = { ...cursor, walOffset, walSize: walOffset === 32 ? 0 : 0 };
    const at = c.walOffset + c.walSize;
    assert.deepEqual(decideSyncStart(c, seen()), {
      kind: "incremental",
      offset: at,
      salt1: 11,
      salt2: 22,
    });
    assert.equal(
      decideSyncStart(c, seen({ headerSalts: { salt1: 12, salt2: 22 } })).kind,
      "snapshot",
    );
  }
});

Deno.test("sync start: deeper cursors need the last-frame check", () => {
  assert.deepEqual(decideSyncStart(cursor, seen()), { kind: "check-last-frame", offset: end });
});

Deno.test("last-frame check decisions", async (t) => {
  await t.step("mismatch: overwritten by another process", () => {
    const start = afterLastFrameCheck(cursor, seen(), end, { matches: false });
    assert.equal(start.kind, "snapshot");
  });
  await t.step("match, same salts: continue where we were", () => {
    assert.deepEqual(afterLastFrameCheck(cursor, seen(), end, { matches: true }), {
      kind: "incremental",
      offset: end,
      salt1: 11,
      salt2: 22,
    });
  });
  const restarted = seen({ headerSalts: { salt1: 12, salt2: 99 } });
  await t.step("match, WAL restarted once: continue at 32 with the new salts", () => {
    const start = afterLastFrameCheck(cursor, restarted, end, {
      matches: true,
      saltsSinceRestart: [{ salt1: 12, salt2: 99 }, { salt1: 12, salt2: 99 }],
    });
    assert.deepEqual(start, { kind: "incremental", offset: 32, salt1: 12, salt2: 99 });
  });
  await t.step("match, WAL restarted twice: frames were missed, snapshot", () => {
    const start = afterLastFrameCheck(cursor, restarted, end, {
      matches: true,
      saltsSinceRestart: [{ salt1: 12, salt2: 99 }, { salt1: 13, salt2: 7 }],
    });
    assert.equal(start.kind, "snapshot");
  });
  await t.step("match, salt-1 moved by two: a whole generation was missed, snapshot", () => {
    // The second restart overwrote every frame of the first: only salt-1 tells.
    const twice = seen({ headerSalts: { salt1: 13, salt2: 5 } });
    const start = afterLastFrameCheck(cursor, twice, end, {
      matches: true,
      saltsSinceRestart: [{ salt1: 13, salt2: 5 }],
    });
    assert.equal(start.kind, "snapshot");
  });
  await t.step("match, WAL restarted after unsynced old frames: they were missed, snapshot", () => {
    const start = afterLastFrameCheck(cursor, restarted, end, {
      matches: true,
      saltsSinceRestart: [{ salt1: 12, salt2: 99 }],
      oldFramesAfterCursor: true,
    });
    assert.equal(start.kind, "snapshot");
  });
});

Deno.test("sync start: a cursor marked as emptied continues at 32 with any salts", () => {
  const c = { ...cursor, walEmptiedAfterSync: true };
  assert.deepEqual(decideSyncStart(c, seen({ walFileSize: 0, headerSalts: undefined })), {
    kind: "idle",
  });
  assert.deepEqual(decideSyncStart(c, seen({ headerSalts: { salt1: 3, salt2: 4 } })), {
    kind: "incremental",
    offset: 32,
    salt1: 3,
    salt2: 4,
  });
});
