/**
 * Go `time.Duration` syntax (`500ms`, `30s`, `5m`, `1h30m`, `1.5h`), as Litestream's config uses.
 *
 * @module
 */

const UNIT_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  "µs": 1e-3, // U+00B5 micro sign
  "μs": 1e-3, // U+03BC Greek mu
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

const TERM = /(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)/y;

/**
 * Parses a Go duration string into milliseconds (possibly fractional for `ns`/`us`).
 * `"0"` is the only value accepted without a unit, as in Go.
 * @throws {RangeError} with a message that explains the syntax when `text` is not a duration.
 */
export function parseDuration(text: string): number {
  const invalid = () =>
    new RangeError(
      `invalid duration "${text}": use a number with a unit (ns, us, ms, s, m, h), e.g. "500ms", "30s", "1h30m"`,
    );
  let rest = text.trim();
  if (rest === "") throw invalid();
  let sign = 1;
  if (rest[0] === "-" || rest[0] === "+") {
    if (rest[0] === "-") sign = -1;
    rest = rest.slice(1);
  }
  if (rest === "0") return 0;
  if (rest === "") throw invalid();
  let total = 0;
  TERM.lastIndex = 0;
  while (TERM.lastIndex < rest.length) {
    const start = TERM.lastIndex;
    const match = TERM.exec(rest);
    if (match === null || match.index !== start) throw invalid();
    total += Number(match[1]) * UNIT_MS[match[2]];
  }
  if (!Number.isFinite(total)) throw invalid();
  return sign * total;
}

/** Formats milliseconds compactly in the same syntax: `1h30m`, `30s`, `1.5s`, `500ms`, `0s`. */
export function formatDuration(ms: number): string {
  if (ms === 0) return "0s";
  const sign = ms < 0 ? "-" : "";
  let rest = Math.abs(ms);
  if (rest < 1000) return `${sign}${+rest.toFixed(6)}ms`;
  let out = "";
  const hours = Math.floor(rest / 3_600_000);
  if (hours > 0) out += `${hours}h`;
  rest -= hours * 3_600_000;
  const minutes = Math.floor(rest / 60_000);
  if (minutes > 0) out += `${minutes}m`;
  rest -= minutes * 60_000;
  if (rest > 0) out += `${+(rest / 1000).toFixed(6)}s`;
  return sign + out;
}
