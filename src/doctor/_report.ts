/**
 * The doctor's results: one {@linkcode CheckResult} per check, collected by a
 * {@linkcode Checklist} that times each check and turns a thrown {@linkcode CheckFailure} into a
 * failed line with its fix.
 *
 * @module
 */

/** How one check went. `skip`: not run, because an earlier required check failed. */
export type CheckStatus = "ok" | "warn" | "fail" | "skip";

/** One line of the doctor's report. */
export interface CheckResult {
  /** Short name, e.g. `bucket`, `put`, `clock`. */
  name: string;
  status: CheckStatus;
  /** Whether replication needs this check to pass (a failure makes the exit status 1). */
  required: boolean;
  /** What was found, never a secret. */
  detail: string;
  /** What to do about a failure or warning. */
  fix?: string;
  /** Time the check took, ms (its storage requests included). */
  ms?: number;
}

/** The doctor's verdict on one replica location. */
export interface DoctorReport {
  /** The replica location without secrets. */
  location: string;
  /** Backend type (`file`, `s3`, …). */
  type: string;
  /** False when any required check failed. */
  ok: boolean;
  checks: CheckResult[];
}

/** What a check returns when it passes (or passes with a warning). */
export interface CheckOutcome {
  detail: string;
  /** `warn` for a finding that does not stop replication. Default `ok`. */
  status?: "ok" | "warn";
  fix?: string;
}

/** A check found a problem; `fix` says what to do. */
export class CheckFailure extends Error {
  /** Builds a failure with its fix. */
  constructor(message: string, readonly fix?: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "CheckFailure";
  }
}

/** Runs checks in order and keeps their results. */
export class Checklist {
  readonly results: CheckResult[] = [];
  #blocked: string | undefined;

  /**
   * Runs `check` unless an earlier blocking check failed (then it is recorded as skipped).
   * A required check that fails blocks every later one when `blocking` is set. Returns
   * whether the check passed (ok or warn).
   */
  async run(
    name: string,
    options: { required: boolean; blocking?: boolean },
    check: () => Promise<CheckOutcome>,
  ): Promise<boolean> {
    if (this.#blocked !== undefined) {
      this.results.push({
        name,
        status: "skip",
        required: options.required,
        detail: `not checked: ${this.#blocked} failed`,
      });
      return false;
    }
    const started = performance.now();
    try {
      const outcome = await check();
      this.results.push({
        name,
        status: outcome.status ?? "ok",
        required: options.required,
        detail: outcome.detail,
        ...(outcome.fix === undefined ? {} : { fix: outcome.fix }),
        ms: Math.round(performance.now() - started),
      });
      return true;
    } catch (err) {
      const fix = err instanceof CheckFailure ? err.fix : undefined;
      this.results.push({
        name,
        status: options.required ? "fail" : "warn",
        required: options.required,
        detail: oneLine(err instanceof Error ? err.message : String(err)),
        ...(fix === undefined ? {} : { fix }),
        ms: Math.round(performance.now() - started),
      });
      if (options.blocking) this.#blocked = name;
      return false;
    }
  }

  /** Records a result computed elsewhere (e.g. clock skew from the collected Date headers). */
  add(result: CheckResult): void {
    this.results.push(result);
  }
}

/** The report's lines as printed: a header, one line per check, a verdict. */
export function formatReport(report: DoctorReport): string {
  const width = Math.max(8, ...report.checks.map((check) => check.name.length));
  const lines = [`${report.location} (${report.type})`];
  for (const check of report.checks) {
    const label = check.status === "fail" ? "FAIL" : check.status;
    const ms = check.ms === undefined || check.ms === 0 ? "" : ` [${check.ms} ms]`;
    const fix = check.fix === undefined ? "" : ` -> fix: ${check.fix}`;
    lines.push(`  ${label.padEnd(4)}  ${check.name.padEnd(width)}  ${check.detail}${ms}${fix}`);
  }
  const failed = report.checks.filter((check) => check.status === "fail").length;
  const warned = report.checks.filter((check) => check.status === "warn").length;
  lines.push(
    failed > 0
      ? `  => ${failed} required check(s) failed: replication to this location would not work`
      : `  => usable for replication${warned > 0 ? ` (${warned} warning(s))` : ""}`,
  );
  return lines.join("\n");
}

function oneLine(text: string): string {
  return text.replace(/\s*\r?\n\s*/g, " ").trim() || "unknown error";
}
