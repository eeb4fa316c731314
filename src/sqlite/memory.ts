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
 * closed. A no-op where libc is not reachable through FFI.
 * @returns whether memory was released.
 */
export function releaseFreedMemory(): boolean {
  const libc = loadLibC();
  if (!libc) return false;
  try {
    return libc.malloc_trim(0n) === 1;
  } catch {
    return false;
  }
}
