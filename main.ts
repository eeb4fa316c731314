/**
 * sluice: continuous backup of SQLite databases to LTX replicas (file or S3), Litestream v0.5
 * compatible. `deno run -A main.ts <command> …`; see `sluice --help`.
 *
 * @module
 */

import { installGlobalErrorHandlers, main } from "./src/cli/mod.ts";
import { runWatchChild, WATCH_COMMAND } from "./src/watch/mod.ts";

export { main } from "./src/cli/mod.ts";

if (import.meta.main) {
  installGlobalErrorHandlers();
  // Internal: the file watcher's child process (see src/watch/mod.ts for why it is a child).
  if (Deno.args[0] === WATCH_COMMAND) Deno.exit(await runWatchChild(Deno.args.slice(1)));
  Deno.exit(await main(Deno.args));
}
