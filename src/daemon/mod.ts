/**
 * What a running `sluice replicate` serves besides replication: the control socket (snapshot
 * requests from `sluice snapshot`), the HTTP endpoint (`/metrics`, `/status`) and its metrics.
 *
 * @module
 */

export * from "./control.ts";
export * from "./http.ts";
export * from "./health.ts";
export * from "./metrics.ts";
/** The event-loop delay probe behind the metrics, exported for its unit test. */
export { LoopDelayMonitor } from "./_loop_delay.ts";
