/**
 * Which file names may be databases and which match a `dir:` entry's `pattern` (picomatch
 * globs): a pattern without `/` matches the file name at any depth (`*.db`, as Litestream matches
 * the base name); a pattern with `/` matches the path relative to the directory
 * (`shard-?/*.db`). Hidden files, SQLite's side files and temp files are never candidates.
 *
 * Lives in config (checked at load, used to resolve paths) and is shared by discovery, so that
 * `sluice databases`, the snapshot scan and the directory monitor all see the same set.
 *
 * @module
 */

import picomatch from "picomatch";

type Matcher = (path: string) => boolean;
type Picomatch = (pattern: string, options: Record<string, unknown>) => Matcher;

const SIDE_FILE = /(-wal|-shm|-journal|\.tmp|\.temp|~)$/i;
const matchers = new Map<string, Matcher>();

/**
 * Whether a file name may be a database: not hidden, not SQLite's `-wal`/`-shm`/`-journal`,
 * not a temp file (`.tmp`, `.temp`, `~`).
 */
export function isCandidateName(name: string): boolean {
  return name !== "" && !name.startsWith(".") && !SIDE_FILE.test(name);
}

/**
 * Why `pattern` is not usable, or undefined when it is. Checked at config load so a typo such
 * as an unclosed `[` or `{` fails loudly instead of silently matching nothing.
 */
export function patternProblem(pattern: string): string | undefined {
  if (pattern.trim() === "") return 'pattern is empty; use e.g. "*.db"';
  if (pattern.startsWith("/")) return "pattern must be relative to dir (no leading /)";
  if (pattern.includes("\\")) return "pattern must not contain backslashes";
  if (pattern.split("/").some((part) => part === ".." || part === ".")) {
    return "pattern must not contain . or .. segments";
  }
  let square = 0, curly = 0;
  for (const ch of pattern) {
    if (ch === "[") square++;
    else if (ch === "]") square = Math.max(0, square - 1);
    else if (ch === "{") curly++;
    else if (ch === "}") curly--;
    if (curly < 0) return "pattern has an unmatched }";
  }
  if (square > 0) return "pattern has an unclosed [";
  if (curly > 0) return "pattern has an unclosed {";
  return undefined;
}

/**
 * Whether the path relative to the scanned directory (`/`-separated) matches `pattern`.
 * Does not apply {@linkcode isCandidateName}; callers check both.
 */
export function matchesPattern(relPath: string, pattern: string): boolean {
  let matcher = matchers.get(pattern);
  if (matcher === undefined) {
    matcher = (picomatch as unknown as Picomatch)(pattern, {
      basename: !pattern.includes("/"),
      dot: false,
    });
    matchers.set(pattern, matcher);
  }
  return matcher(relPath);
}
