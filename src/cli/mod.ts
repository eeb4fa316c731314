/**
 * The command-line front end: picks the command, validates its arguments, loads its module
 * lazily (with static-string imports, so `deno compile` embeds every module) and turns
 * errors into one line on stderr and the exit status of the CLI contract:
 * 0 success, 1 failure, 2 usage or config error.
 *
 * Every command module exports `run(args: string[]): Promise<number>`, where `args` are the
 * arguments after the command name; it parses them with its `parse…Args` from `./args.ts`,
 * throws {@linkcode UsageError} or `ConfigError` for the user's mistakes, and returns the exit
 * status (anything else it throws is reported as a failure, status 1).
 *
 * @module
 */

import {
  type CommandName,
  COMMANDS,
  commandSpec,
  formatCommandHelp,
  formatGlobalHelp,
  HelpRequested,
  PARSERS,
  UsageError,
} from "./args.ts";
import { ConfigError } from "../config/mod.ts";
import { redactText } from "../log/mod.ts";

export { UsageError } from "./args.ts";

/** What every command module exports. */
export interface CommandModule {
  /** Runs the command with the arguments after its name; resolves to the exit status. */
  run(args: string[]): Promise<number>;
}

/** Exit statuses of the CLI contract. */
export const EXIT_OK = 0, EXIT_FAILURE = 1, EXIT_USAGE = 2;

/** Loads a command's module. Each import is a static string so `deno compile` sees it. */
export async function loadCommand(name: CommandName): Promise<CommandModule> {
  switch (name) {
    case "replicate":
      return await import("./replicate.ts");
    case "restore":
      return await import("./restore.ts");
    case "snapshot":
      return await import("./snapshot.ts");
    case "databases":
      return await import("./databases.ts");
    case "ltx":
      return await import("./ltx.ts");
    case "verify":
      return await import("./verify.ts");
    case "doctor":
      return await import("./doctor.ts");
    case "status":
      return await import("./status.ts");
    case "version":
      return await import("./version.ts");
  }
}

/**
 * Runs sluice with `argv` (without the program name) and resolves to the exit status.
 * Never throws.
 */
export async function main(argv: readonly string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined) {
    writeErr(`${formatGlobalHelp()}\n`);
    return EXIT_USAGE;
  }
  if (first === "-h" || first === "--help" || first === "help") {
    if (rest.length === 0) {
      console.log(formatGlobalHelp());
      return EXIT_OK;
    }
    const spec = commandSpec(rest[0]);
    if (spec === undefined || rest.length > 1) return unknownCommand(rest.join(" "));
    console.log(formatCommandHelp(spec.name));
    return EXIT_OK;
  }
  if (first === "--version" || first === "-V") return await dispatch("version", rest);
  const spec = commandSpec(first);
  if (spec === undefined) return unknownCommand(first);
  return await dispatch(spec.name, rest);
}

async function dispatch(name: CommandName, args: string[]): Promise<number> {
  try {
    PARSERS[name](args); // usage errors before loading (and without) the module
    const command = await loadCommand(name);
    return await command.run(args);
  } catch (err) {
    return reportError(err, name);
  }
}

function unknownCommand(name: string): number {
  const names = COMMANDS.map((command) => command.name).join(", ");
  const shown = name.startsWith("-") ? `option ${name}` : `command "${name}"`;
  writeErr(`sluice: unknown ${shown}; commands: ${names} (see sluice --help)\n`);
  return EXIT_USAGE;
}

/**
 * Prints `err` as one line on stderr and returns its exit status: 2 for usage and config
 * errors, 0 for a help request (help on stdout), 1 for anything else. The stack is printed
 * too when `SLUICE_DEBUG=1`.
 */
export function reportError(err: unknown, command?: CommandName): number {
  if (err instanceof HelpRequested) {
    console.log(formatCommandHelp(err.command));
    return EXIT_OK;
  }
  const name = err instanceof Error ? err.name : "";
  const message = oneLine(err instanceof Error ? err.message : String(err));
  if (err instanceof UsageError || name === "UsageError") {
    const where = (err as UsageError).command ?? command;
    writeErr(`sluice${where === undefined ? "" : ` ${where}`}: ${message}\n`);
    return EXIT_USAGE;
  }
  if (err instanceof ConfigError || name === "ConfigError") {
    writeErr(`sluice: ${message}\n`);
    return EXIT_USAGE;
  }
  writeErr(`sluice: ${message}\n`);
  if (debugEnabled() && err instanceof Error && err.stack !== undefined) {
    writeErr(`${redactText(err.stack)}\n`);
  }
  return EXIT_FAILURE;
}

function oneLine(message: string): string {
  const text = redactText(message).replace(/\s*\r?\n\s*/g, " ").trim();
  return text === "" ? "unknown error" : text;
}

function debugEnabled(): boolean {
  try {
    return Deno.env.get("SLUICE_DEBUG") === "1";
  } catch {
    return false;
  }
}

const encoder = new TextEncoder();

function writeErr(text: string): void {
  try {
    let bytes = encoder.encode(text);
    while (bytes.length > 0) bytes = bytes.subarray(Deno.stderr.writeSync(bytes));
  } catch {
    // stderr closed: nothing left to tell
  }
}

/**
 * Reports an error nobody caught (a rejected promise nobody awaited, an exception thrown in a
 * timer callback) as one line and exits 1, instead of Deno's multi-line default. Installed
 * once by `main.ts`.
 */
export function installGlobalErrorHandlers(): void {
  const fatal = (reason: unknown) => {
    const code = reportError(reason);
    Deno.exit(code === EXIT_OK ? EXIT_FAILURE : code);
  };
  globalThis.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    fatal(event.reason);
  });
  globalThis.addEventListener("error", (event) => {
    event.preventDefault();
    fatal(event.error ?? event.message);
  });
}
