/**
 * `deno task test`: runs the test files two at a time (`deno test --parallel`), then the few
 * files whose bounds are about latency or about how fast a real `sluice replicate` keeps up, one
 * at a time, so that a neighbouring test file's CPU load cannot decide their outcome.
 *
 * Every argument is passed on to both `deno test` runs. With `--junit-path=FILE` each run writes
 * its own report and the two are merged into FILE (one `<testsuites>`, counts summed), so CI
 * counts every test case of both runs. Test files named on the command line are run as given,
 * in one `deno test` run. Exits 1 when either run fails.
 *
 * @module
 */

/** Test files measured against a wall-clock bound: run alone, after the parallel set. */
export const SERIAL_FILES: readonly string[] = [
  "tests/event_loop_test.ts", // event-loop delay bounds (150 ms)
  "tests/park_test.ts", // a parked tenant's wake-up within bounded time
  "tests/tenant_churn_test.ts", // replicas catch up while tenants come and go
  "tests/follow_test.ts", // a follower converges while a writer commits at 50 tx/s
];

const BASE_ARGS = ["test", "-A", "--no-check=remote"];

interface TestRun {
  files: string[];
  parallel: boolean;
  junitPath?: string;
}

/** Splits `--junit-path=FILE` / `--junit-path FILE` from the other arguments. */
function parseArgs(args: string[]): { junitPath?: string; files: string[]; flags: string[] } {
  const flags: string[] = [];
  const files: string[] = [];
  let junitPath: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg.startsWith("--junit-path=")) junitPath = arg.slice("--junit-path=".length);
    else if (arg === "--junit-path") junitPath = args[++i];
    else if (arg.startsWith("-")) flags.push(arg);
    else files.push(arg);
  }
  return { junitPath, files, flags };
}

async function listTestFiles(): Promise<string[]> {
  const files: string[] = [];
  for await (const entry of Deno.readDir("tests")) {
    if (entry.isFile && entry.name.endsWith("_test.ts")) files.push(`tests/${entry.name}`);
  }
  return files.sort();
}

async function runDenoTest(run: TestRun, flags: string[]): Promise<boolean> {
  const args = [...BASE_ARGS, ...(run.parallel ? ["--parallel"] : []), ...flags];
  if (run.junitPath) args.push(`--junit-path=${run.junitPath}`);
  args.push(...run.files);
  const child = new Deno.Command(Deno.execPath(), { args, stdin: "null" }).spawn();
  const status = await child.status;
  return status.success;
}

/** Merges JUnit reports written by `deno test` into one `<testsuites>` document. */
export function mergeJUnit(reports: string[]): string {
  let tests = 0, failures = 0, errors = 0, time = 0;
  const suites: string[] = [];
  for (const xml of reports) {
    const open = xml.match(/<testsuites\b[^>]*>/);
    if (!open) continue;
    const attribute = (name: string) =>
      Number(open[0].match(new RegExp(`\\b${name}="([^"]*)"`))?.[1] ?? 0);
    tests += attribute("tests");
    failures += attribute("failures");
    errors += attribute("errors");
    time += attribute("time");
    const body = xml.slice(xml.indexOf(open[0]) + open[0].length, xml.lastIndexOf("</testsuites>"));
    suites.push(body.trim());
  }
  return `<?xml version="1.0" encoding="UTF-8"?>\n` +
    `<testsuites name="deno test" tests="${tests}" failures="${failures}" errors="${errors}" ` +
    `time="${time.toFixed(3)}">\n    ${suites.filter((s) => s).join("\n    ")}\n</testsuites>\n`;
}

async function main(): Promise<number> {
  const { junitPath, files, flags } = parseArgs(Deno.args);
  if (files.length > 0) {
    return await runDenoTest({ files, parallel: files.length > 1, junitPath }, flags) ? 0 : 1;
  }
  const all = await listTestFiles();
  const serial = SERIAL_FILES.filter((file) => all.includes(file));
  const runs: TestRun[] = [
    { files: all.filter((file) => !serial.includes(file)), parallel: true },
    { files: serial, parallel: false },
  ];
  let ok = true;
  for (const [index, run] of runs.entries()) {
    if (run.files.length === 0) continue;
    if (junitPath) run.junitPath = `${junitPath}.part${index}`;
    if (!run.parallel) console.log(`\n== one at a time: ${run.files.join(" ")}`);
    ok = await runDenoTest(run, flags) && ok;
  }
  if (junitPath) {
    const reports: string[] = [];
    for (const run of runs) {
      if (!run.junitPath) continue;
      try {
        reports.push(await Deno.readTextFile(run.junitPath));
        await Deno.remove(run.junitPath);
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
        ok = false; // a run that wrote no report did not complete
      }
    }
    await Deno.writeTextFile(junitPath, mergeJUnit(reports));
  }
  return ok ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main());
