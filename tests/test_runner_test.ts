import assert from "node:assert/strict";
import { join } from "node:path";
import { mergeJUnit } from "../scripts/test.ts";

/** Runs `deno test` on one generated file with a JUnit report and returns the report. */
async function junitOf(dir: string, name: string, body: string): Promise<string> {
  const file = join(dir, `${name}_test.ts`);
  await Deno.writeTextFile(file, body);
  const report = join(dir, `${name}.xml`);
  await new Deno.Command(Deno.execPath(), {
    args: ["test", "--no-check", `--junit-path=${report}`, file],
    stdout: "null",
    stderr: "null",
  }).output();
  return await Deno.readTextFile(report);
}

Deno.test("test runner: the merged JUnit report holds every case of both runs", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-runner-" });
  try {
    const first = await junitOf(
      dir,
      "first",
      `Deno.test("a", () => {}); Deno.test("b", () => { throw new Error("x"); });`,
    );
    const second = await junitOf(
      dir,
      "second",
      `Deno.test("c", () => {}); Deno.test({ name: "d", ignore: true, fn() {} });`,
    );
    const merged = mergeJUnit([first, second]);
    const cases = merged.match(/<testcase\b[\s\S]*?(?:\/>|<\/testcase>)/g) ?? [];
    assert.equal(cases.length, 4);
    assert.equal(cases.filter((c) => /<failure|<error/.test(c)).length, 1);
    assert.equal(cases.filter((c) => /<skipped/.test(c)).length, 1);
    assert.match(merged, /<testsuites name="deno test" tests="4" failures="1"/);
    assert.equal(merged.match(/<testsuites\b/g)?.length, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
