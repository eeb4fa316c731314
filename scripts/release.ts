/**
 * `deno run -A scripts/release.ts [--target TRIPLE]…`: builds sluice for Linux x64/arm64 and
 * macOS x64/arm64 into `dist/sluice-<version>-<target>`, writes `dist/SHA256SUMS`, and runs the
 * binary built for this machine once (scripts/compile.ts `smokeTest`).
 *
 * Each target needs Deno's `denort` runtime for that target, which `deno compile` downloads.
 * `DENORT_BIN` names one runtime file, so it serves exactly one target: with it, name that
 * target with `--target`. Targets that cannot be built are reported one line each; the exit
 * status is 1 when any failed.
 *
 * @module
 */

import { basename, join } from "node:path";
import { compile, hostTarget, ROOT, smokeTest } from "./compile.ts";
import denoJson from "../deno.json" with { type: "json" };

/** The release targets (`deno compile --target` triples). */
export const RELEASE_TARGETS: readonly string[] = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
];

async function sha256(path: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", await Deno.readFile(path));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

if (import.meta.main) {
  const targets: string[] = [];
  for (let i = 0; i < Deno.args.length; i++) {
    const value = Deno.args[i + 1];
    if (Deno.args[i] !== "--target" || value === undefined || !RELEASE_TARGETS.includes(value)) {
      console.error(
        `usage: deno run -A scripts/release.ts [--target TRIPLE]…; targets: ${
          RELEASE_TARGETS.join(", ")
        }`,
      );
      Deno.exit(2);
    }
    targets.push(value);
    i++;
  }
  if (targets.length === 0) targets.push(...RELEASE_TARGETS);
  if ((Deno.env.get("DENORT_BIN") ?? "") !== "" && targets.length !== 1) {
    console.error(
      "sluice release: DENORT_BIN is one target's runtime; name that target with --target TRIPLE",
    );
    Deno.exit(2);
  }
  const dist = join(ROOT, "dist");
  const built: string[] = [];
  let failed = 0;
  for (const target of targets) {
    const output = join(dist, `sluice-${denoJson.version}-${target}`);
    try {
      await compile({ target, output });
      if (target === hostTarget()) await smokeTest([output]);
      built.push(output);
      console.log(`built ${basename(output)}`);
    } catch (err) {
      failed++;
      console.error(`sluice release: ${target}: ${(err as Error).message}`);
    }
  }
  if (built.length > 0) {
    const lines = await Promise.all(
      built.map(async (path) => `${await sha256(path)}  ${basename(path)}`),
    );
    await Deno.writeTextFile(join(dist, "SHA256SUMS"), lines.join("\n") + "\n");
    console.log(`wrote dist/SHA256SUMS (${built.length} of ${targets.length} targets)`);
  }
  Deno.exit(failed > 0 ? 1 : 0);
}
