/**
 * Giving memory back after connections close. SQLite allocates its page caches and schemas
 * with `malloc`; when a thousand parked databases close their connections, glibc keeps the
 * freed memory in its arenas, and the process's RSS stays at its high-water mark. One
 * `malloc_trim(0)` returns the free pages to the system.
 *
 * @module
 */

import { loadLibC } from "./_libc.ts";

/**
 * Returns freed heap memory to the system (glibc's `malloc_trim`) after many connections were
 * closed, on a pool thread (it walks every arena: ~130 ms after a thousand connections closed).
 * A no-op where libc is not reachable through FFI.
 * @returns whether memory was released.
 */
export async function releaseFreedMemory(): Promise<boolean> {
  const libc = loadLibC();
  if (!libc) return false;
  try {
    return (await libc.malloc_trim(0n)) === 1;
  } catch {
    return false;
  }
}
