/**
 * python3 when it is installed with its sqlite3 module (the writers of many tests), else
 * undefined. A module of its own: probing runs python3 at import, and helpers such as
 * `_monitor_helpers.ts` are also imported by subprocesses that may not run programs.
 *
 * @module
 */

/** "python3", or undefined when python3 or its sqlite3 module is missing. */
export const PYTHON = new Deno.Command("python3", { args: ["-c", "import sqlite3"] })
    .outputSync().success
  ? "python3"
  : undefined;
