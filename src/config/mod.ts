/**
 * Configuration: YAML loading with `${ENV}` expansion, strict validation with `file:line:`
 * messages, replica URL parsing, and the per-database derivations (meta directory, replica
 * location) the CLI and the engine share.
 *
 * ```ts
 * import { loadConfig, metaDirFor } from "./src/config/mod.ts";
 * const config = await loadConfig("/etc/sluice.yml");
 * const db = config.dbs[0];
 * console.log(db.path, metaDirFor(db.path!, db));
 * ```
 *
 * @module
 */

export { ConfigError } from "./error.ts";
export { identitiesFromFiles } from "./age.ts";
export { formatDuration, parseDuration } from "./duration.ts";
export {
  cleanS3Path,
  formatReplicaLocation,
  isURL,
  normalizeEndpoint,
  parseReplicaURL,
  type ParseReplicaURLOptions,
  redactURL,
  REPLICA_URL_FORMS,
  replicaLocationKey,
  type ReplicaSpec,
  resolveLocalPath,
} from "./replica_url.ts";
export {
  configFromArgs,
  DEFAULT_CONFIG_PATH,
  listenAddressProblem,
  loadConfig,
  parseConfig,
  type ParseConfigOptions,
  parseListenAddress,
} from "./load.ts";
export {
  entryMatches,
  findDatabase,
  META_DIR_SUFFIX,
  metaDirFor,
  relativeInside,
  replicaSpecFor,
  resolveDatabase,
  type ResolvedDatabase,
} from "./paths.ts";
export type {
  Config,
  DatabaseConfig,
  HealthConfig,
  LoggingConfig,
  LogLevel,
  LogType,
  PageEncoding,
  ReplicaConfig,
} from "./types.ts";
export { DEFAULTS } from "./types.ts";
export { isCandidateName, matchesPattern, patternProblem } from "./pattern.ts";
