/**
 * Checks that the imports under src/ follow the package layout (docs/INTERNALS.md):
 *
 * - no file imports another package's private (`_`-prefixed) file, and nothing outside src/
 *   (main.ts, scripts/, tests/) imports a private file of src/;
 * - cli/ imports only other packages' `mod.ts`;
 * - every import between packages follows an allowed edge of {@linkcode ALLOWED}, so data
 *   flows one way: cli → {daemon, discovery} → engine (+compaction) → leaves.
 *
 * Prints one line per violation (file and import) and exits 1 when there is any.
 * Usage: `deno run -A scripts/check_layout.ts` (`deno task check:layout`).
 *
 * @module
 */

import { dirname, join, normalize, relative } from "node:path";
import { fileURLToPath } from "node:url";

/** Which packages each package may import (besides itself). */
export const ALLOWED: Readonly<Record<string, readonly string[]>> = {
  cli: [
    "daemon",
    "discovery",
    "compaction",
    "engine",
    "restore",
    "follow",
    "verify",
    "doctor",
    "config",
    "replica",
    "ltx",
    "sqlite",
    "log",
    "watch",
    "pipeline",
  ],
  daemon: ["engine", "compaction", "config", "replica", "log"],
  discovery: ["engine", "config", "sqlite", "watch", "log", "ffi"],
  compaction: ["engine", "replica", "ltx", "log", "pipeline"],
  engine: ["sqlite", "ltx", "replica", "log", "watch", "pipeline", "ffi"],
  restore: ["ltx", "replica", "pipeline"],
  follow: ["restore", "replica", "ltx", "pipeline", "sqlite", "watch", "log"],
  verify: ["restore", "ltx", "replica", "pipeline"],
  doctor: ["config", "replica", "log"],
  pipeline: ["ltx"],
  replica: ["ltx"],
  config: ["replica"],
  ltx: [],
  sqlite: ["ffi"],
  log: [],
  watch: ["ffi"],
  ffi: [],
};

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const SRC = join(ROOT, "src");
const IMPORT = /(?:from|import)\s*\(?\s*"(\.{1,2}\/[^"]+)"/g;

/** The package of a path under src/ (its first directory), or undefined for other paths. */
function packageOf(path: string): string | undefined {
  const rel = relative(SRC, path);
  if (rel.startsWith("..")) return undefined;
  const parts = rel.split("/");
  return parts.length > 1 ? parts[0] : undefined;
}

async function* sourceFiles(dir: string): AsyncIterable<string> {
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) yield* sourceFiles(path);
    else if (entry.isFile && path.endsWith(".ts")) yield path;
  }
}

/** The violations of `file`'s imports, one line each. */
export function violations(file: string, source: string): string[] {
  const found: string[] = [];
  const from = packageOf(file);
  const where = relative(ROOT, file);
  if (from === undefined) return [`${where}: file outside a package directory of src/`];
  for (const match of source.matchAll(IMPORT)) {
    const target = normalize(join(dirname(file), match[1]));
    const to = packageOf(target);
    if (to === undefined || to === from) continue;
    const name = target.split("/").pop()!;
    const what = `${where}: imports ${match[1]}`;
    if (name.startsWith("_")) found.push(`${what} (private file of package ${to})`);
    else if (from === "cli" && name !== "mod.ts") found.push(`${what} (cli imports only */mod.ts)`);
    if (!(ALLOWED[from] ?? []).includes(to)) {
      found.push(`${what} (${from} may not import ${to}; see ALLOWED in scripts/check_layout.ts)`);
    }
  }
  return found;
}

/** The violations of a file outside src/: imports of a private file of a src/ package. */
export function outsideViolations(file: string, source: string): string[] {
  const found: string[] = [];
  for (const match of source.matchAll(IMPORT)) {
    const target = normalize(join(dirname(file), match[1]));
    const to = packageOf(target);
    if (to === undefined) continue;
    if (target.split("/").pop()!.startsWith("_")) {
      found.push(`${relative(ROOT, file)}: imports ${match[1]} (private file of package ${to})`);
    }
  }
  return found;
}

if (import.meta.main) {
  const problems: string[] = [];
  for await (const file of sourceFiles(SRC)) {
    problems.push(...violations(file, await Deno.readTextFile(file)));
  }
  const outside = [join(ROOT, "main.ts")];
  for (const dir of ["scripts", "tests"]) {
    for await (const file of sourceFiles(join(ROOT, dir))) outside.push(file);
  }
  for (const file of outside) {
    problems.push(...outsideViolations(file, await Deno.readTextFile(file)));
  }
  problems.sort();
  for (const line of problems) console.log(line);
  if (problems.length > 0) {
    console.error(`${problems.length} layout violation(s)`);
    Deno.exit(1);
  }
  console.log("layout ok");
}
