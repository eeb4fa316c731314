/**
 * Small file-system helpers of restore: existence checks and removals that treat
 * "not found" as an answer, not an error, and let every other error through.
 *
 * @module
 */

/**
 * Whether `path` exists (without following a final symlink).
 * @throws {Deno.errors.PermissionDenied} and every other error except `NotFound`.
 */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/**
 * Removes the file at `path` if it exists.
 * @throws every error except `NotFound`.
 */
export async function removeIfExists(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}
