import assert from "node:assert/strict";
import { lowerWorkerPriority, prestartEncoder, runningWorkers } from "../src/pipeline/mod.ts";

/** Nice values of this process's codec worker threads (Deno names them `worker-N`). */
function workerNices(): number[] {
  const nices: number[] = [];
  for (const task of Deno.readDirSync("/proc/self/task")) {
    const comm = readTaskFile(task.name, "comm")?.trim();
    if (!comm?.startsWith("worker-")) continue;
    // Field 19 of stat is the nice value; the command name before ") " may hold spaces.
    const stat = readTaskFile(task.name, "stat");
    if (stat === undefined) continue;
    nices.push(Number(stat.split(") ")[1].split(" ")[16]));
  }
  return nices;
}

/**
 * One file of a thread's /proc entry, or undefined when the thread has exited since the
 * directory was listed: Tokio's blocking-pool threads end after 10 s idle, at any moment.
 */
function readTaskFile(tid: string, file: string): string | undefined {
  try {
    return Deno.readTextFileSync(`/proc/self/task/${tid}/${file}`);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}

Deno.test({
  name: "pipeline: lowerWorkerPriority runs codec worker threads at that nice value, the main " +
    "thread at its own",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    const mainNice = () =>
      Number(Deno.readTextFileSync("/proc/thread-self/stat").split(") ")[1].split(" ")[16]);
    const before = mainNice();
    lowerWorkerPriority(10);
    // An output this large is coded on a worker: the prestart starts one now.
    const started = prestartEncoder(1 << 30, { lingerMs: 60_000 });
    try {
      assert.ok(runningWorkers() >= 1, "a codec worker started");
      const deadline = Date.now() + 30_000;
      while (!(workerNices().length > 0 && workerNices().every((n) => n === 10))) {
        assert.ok(Date.now() < deadline, `codec workers' nice values: ${workerNices()}`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      assert.equal(mainNice(), before, "the main thread keeps its priority");
    } finally {
      started.release();
      lowerWorkerPriority(0);
    }
  },
});
