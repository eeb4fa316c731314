/**
 * The `litestream-timestamp` metadata value: Go's `time.RFC3339Nano` in UTC (FORMAT.md §2.3).
 *
 * @module
 */

/**
 * Formats ms since the epoch like Go's RFC3339Nano in UTC: trailing fractional zeros are
 * trimmed, and the fraction is dropped when the milliseconds are zero
 * (`2026-11-22T14:01:21.17Z`, `2026-11-22T14:01:21Z`).
 */
export function formatRFC3339Nano(ms: number): string {
  return new Date(ms).toISOString().replace(/\.?0*Z$/, "Z");
}

const RFC3339 =
  /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$/;

/**
 * Parses an RFC3339 timestamp with any fraction length (precision beyond milliseconds is
 * truncated). Returns ms since the epoch, or undefined when the text is not RFC3339.
 */
export function parseRFC3339(text: string): number | undefined {
  const m = RFC3339.exec(text.trim());
  if (!m) return undefined;
  const [, year, month, day, hour, minute, second, fraction = "", zone] = m;
  const millis = Number(fraction.padEnd(3, "0").slice(0, 3));
  let ms = Date.UTC(+year, +month - 1, +day, +hour, +minute, +second, millis);
  if (zone !== "Z" && zone !== "z") {
    const sign = zone[0] === "-" ? -1 : 1;
    ms -= sign * (Number(zone.slice(1, 3)) * 60 + Number(zone.slice(4, 6))) * 60_000;
  }
  return Number.isFinite(ms) ? ms : undefined;
}
