/**
 * `deno task compile [--target TRIPLE] [--output PATH]`: builds sluice as one executable
 * (`dist/sluice` by default) with `deno compile -A main.ts`, then runs it once (`version`, and
 * the file watcher child `__watch`, which the binary starts by re-executing itself, see
 * src/watch/mod.ts) when it was built for this machine.
 *
 * `deno compile` needs Deno's `denort` runtime for the target. Deno downloads it from the
 * internet, or takes the file `DENORT_BIN` names (the `denort` of the same Deno version and the
 * same target; it is not the `deno` binary). Where neither works, this script says so in one
 * line and exits 1.
 *
 * `deno task compile --check`: what CI can check without `denort`: the module graph of
 * `main.ts` resolves with no error (`deno info`), it type-checks (`deno check`), every command
 * module that src/cli/mod.ts imports lazily is in the graph, and no source file under src/
 * uses a dynamic `import()` with a computed specifier or a `Worker` whose module the compiler
 * cannot see (`deno compile` embeds only what the graph names).
 *
 * @module
 */

import { dirname, join, relative } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import { COMMANDS } from "../src/cli/args.ts";

/** The project root. */
export const ROOT: string = fromFileUrl(new URL("..", import.meta.url));
const DENO_VERSION = Deno.version.deno;

/** Options of {@linkcode compile}. */
export interface CompileOptions {
  /** Target triple (`deno compile --target`); default: this machine's. */
  target?: string;
  /** Output path; default `dist/sluice`. */
  output?: string;
}

/** `deno compile` could not get the `denort` runtime. */
export class DenortUnavailableError extends Error {
  /** Builds the one-line explanation for `target`. */
  constructor(target: string, detail: string) {
    super(
      `deno compile needs the denort runtime of Deno ${DENO_VERSION} for ${target} and could ` +
        `not get it (${detail}); download denort-${target}.zip of Deno ${DENO_VERSION} ` +
        `elsewhere, unzip it and run again with DENORT_BIN=/path/to/denort`,
    );
    this.name = "DenortUnavailableError";
  }
}

/** This machine's target triple, as `deno compile --target` names it. */
export function hostTarget(): string {
  return Deno.build.target;
}

/**
 * Builds the executable; resolves to its path.
 * @throws {DenortUnavailableError} when `denort` cannot be had; Error with Deno's output for
 * any other compile failure.
 */
export async function compile(options: CompileOptions = {}): Promise<string> {
  const target = options.target ?? hostTarget();
  const output = options.output ?? join(ROOT, "dist", "sluice");
  const denort = Deno.env.get("DENORT_BIN");
  if (denort !== undefined && denort !== "") {
    const info = await Deno.stat(denort).catch(() => undefined);
    if (info === undefined || !info.isFile) {
      throw new DenortUnavailableError(target, `DENORT_BIN=${denort} is not a file`);
    }
  }
  await Deno.mkdir(dirname(output), { recursive: true });
  const result = await new Deno.Command(Deno.execPath(), {
    args: ["compile", "-A", "--target", target, "--output", output, join(ROOT, "main.ts")],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = plain(
    new TextDecoder().decode(result.stderr) + new TextDecoder().decode(result.stdout),
  );
  if (!result.success) {
    // Deno's words when the runtime download fails: "Setting up base binary" / "denort-…zip".
    if (/base binary|denort/i.test(text)) {
      const cause = [/dns error/i, /timed out/i, /status code \d+/i, /connection refused/i]
        .map((pattern) => pattern.exec(text)?.[0]).find((found) => found !== undefined) ??
        "download failed";
      throw new DenortUnavailableError(target, cause);
    }
    throw new Error(`deno compile failed:\n${text.trim()}`);
  }
  return output;
}

/**
 * Runs a freshly built binary: `version` must print `sluice …`, and `__watch` (the file watcher
 * child the binary re-executes itself as) must report a file created in a watched directory.
 * @throws Error naming what did not work.
 */
export async function smokeTest(command: string[]): Promise<void> {
  const [program, ...prefix] = command;
  const version = await new Deno.Command(program, {
    args: [...prefix, "version"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const printed = new TextDecoder().decode(version.stdout);
  if (!version.success || !printed.startsWith("sluice ")) {
    throw new Error(
      `${command.join(" ")} version failed: ${new TextDecoder().decode(version.stderr).trim()}`,
    );
  }
  const dir = await Deno.makeTempDir({ prefix: "sluice-compile-" });
  const child = new Deno.Command(program, {
    args: [...prefix, "__watch", "--no-recursive", dir],
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  try {
    const decoder = new TextDecoder();
    let buffered = "";
    let created = false;
    for await (const chunk of child.stdout) {
      buffered += decoder.decode(chunk, { stream: true });
      if (!created && buffered.includes('{"ready":true}')) {
        created = true;
        await Deno.writeTextFile(join(dir, "probe.db"), "x");
      }
      if (buffered.includes("probe.db")) break;
    }
    if (!buffered.includes("probe.db")) {
      throw new Error(`${command.join(" ")} __watch reported no event for a new file`);
    }
  } finally {
    clearTimeout(timer);
    await child.stdin.close().catch(() => {});
    try {
      child.kill("SIGTERM");
    } catch { /* already gone */ }
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
}

/** One problem found by {@linkcode checkGraph}. */
export interface GraphProblem {
  /** File (relative to the root) and line, when the problem has one. */
  where: string;
  problem: string;
}

/**
 * The CI check: the graph resolves and type-checks, lazily loaded command modules are in it, and
 * no dynamic import or worker escapes the compiler. Resolves to the problems (empty: fine).
 */
export async function checkGraph(): Promise<GraphProblem[]> {
  const problems: GraphProblem[] = [];
  const main = join(ROOT, "main.ts");

  const info = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", main],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!info.success) {
    problems.push({
      where: "main.ts",
      problem: `deno info failed: ${new TextDecoder().decode(info.stderr).trim()}`,
    });
  } else {
    const graph = JSON.parse(new TextDecoder().decode(info.stdout)) as {
      modules: Array<{ specifier: string; error?: string }>;
    };
    const specifiers = new Set(graph.modules.map((module) => module.specifier));
    for (const module of graph.modules) {
      if (module.error !== undefined) {
        problems.push({ where: shortName(module.specifier), problem: module.error });
      }
    }
    for (const command of COMMANDS) {
      const url = new URL(`../src/cli/${command.name}.ts`, import.meta.url).href;
      if (!specifiers.has(url)) {
        problems.push({
          where: `src/cli/${command.name}.ts`,
          problem: `command module of "${command.name}" is not in the module graph of main.ts`,
        });
      }
    }
  }

  for await (const file of sourceFiles(join(ROOT, "src"))) {
    problems.push(...scanSource(relative(ROOT, file), await Deno.readTextFile(file)));
  }
  problems.push(...scanSource("main.ts", await Deno.readTextFile(main)));

  const check = await new Deno.Command(Deno.execPath(), {
    args: ["check", main],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!check.success) {
    problems.push({
      where: "main.ts",
      problem: `deno check failed:\n${plain(new TextDecoder().decode(check.stderr)).trim()}`,
    });
  }
  return problems;
}

/**
 * Finds what `deno compile` cannot embed in one source file: `import(` with anything but a
 * string literal, and `new Worker(` without `new URL("literal", import.meta.url)`.
 */
export function scanSource(name: string, text: string): GraphProblem[] {
  const problems: GraphProblem[] = [];
  const code = stripComments(text);
  const lineOf = (index: number) => code.slice(0, index).split("\n").length;
  for (const match of code.matchAll(/(?<![\w$.])import\s*\(/g)) {
    const rest = code.slice(match.index! + match[0].length);
    if (!/^\s*(["'])[^"'\\\n]+\1\s*[,)]/.test(rest)) {
      problems.push({
        where: `${name}:${lineOf(match.index!)}`,
        problem: "import() with a computed specifier: deno compile cannot see it (use a string " +
          "literal, or add the module with --include)",
      });
    }
  }
  for (const match of code.matchAll(/\bnew\s+Worker\s*\(/g)) {
    const rest = code.slice(match.index! + match[0].length);
    if (!/^\s*new\s+URL\(\s*(["'])[^"'\\\n]+\1\s*,\s*import\.meta\.url\s*\)/.test(rest)) {
      problems.push({
        where: `${name}:${lineOf(match.index!)}`,
        problem: 'new Worker() needs new URL("./literal.ts", import.meta.url) so that deno ' +
          "compile embeds the worker module",
      });
    }
  }
  return problems;
}

/** Blanks out comments (keeping line breaks and string contents) so JSDoc never matches. */
function stripComments(text: string): string {
  let out = "";
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    const next = text[i + 1];
    if (c === "/" && next === "/") {
      while (i < text.length && text[i] !== "\n") i++;
    } else if (c === "/" && next === "*") {
      const end = text.indexOf("*/", i + 2);
      const stop = end < 0 ? text.length : end + 2;
      out += text.slice(i, stop).replace(/[^\n]/g, " ");
      i = stop;
    } else if (c === '"' || c === "'" || c === "`") {
      // A quote inside a regex literal has no partner on its line: stop at the line's end.
      let j = i + 1;
      while (j < text.length && text[j] !== c && (c === "`" || text[j] !== "\n")) {
        j += text[j] === "\\" ? 2 : 1;
      }
      out += text.slice(i, j + 1);
      i = j + 1;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

async function* sourceFiles(dir: string): AsyncGenerator<string> {
  const entries = [];
  for await (const entry of Deno.readDir(dir)) entries.push(entry);
  entries.sort((a, b) => a.name < b.name ? -1 : 1);
  for (const entry of entries) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) yield* sourceFiles(path);
    else if (/\.(ts|js|mjs)$/.test(entry.name)) yield path;
  }
}

function shortName(specifier: string): string {
  return specifier.startsWith("file://") ? relative(ROOT, fromFileUrl(specifier)) : specifier;
}

/** Deno's output without ANSI colours. */
function plain(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/\x1b\[[0-9;]*m/g, "");
}

function usage(): never {
  console.error(
    "usage: deno task compile [--target TRIPLE] [--output PATH] | deno task compile --check",
  );
  Deno.exit(2);
}

if (import.meta.main) {
  const args = [...Deno.args];
  const take = (flag: string): string | undefined => {
    const at = args.indexOf(flag);
    if (at < 0) return undefined;
    const value = args[at + 1];
    if (value === undefined || value.startsWith("--")) usage();
    args.splice(at, 2);
    return value;
  };
  if (args.includes("--check")) {
    if (args.length !== 1) usage();
    const problems = await checkGraph();
    for (const { where, problem } of problems) console.error(`compile check: ${where}: ${problem}`);
    if (problems.length > 0) Deno.exit(1);
    console.log("compile check: module graph of main.ts is complete and compilable");
    Deno.exit(0);
  }
  const target = take("--target");
  const output = take("--output");
  if (args.length > 0) usage();
  try {
    const built = await compile({ target, output });
    if ((target ?? hostTarget()) === hostTarget()) await smokeTest([built]);
    console.log(`compiled ${relative(ROOT, built) || built} (${target ?? hostTarget()})`);
  } catch (err) {
    console.error(`sluice compile: ${(err as Error).message}`);
    Deno.exit(1);
  }
}
