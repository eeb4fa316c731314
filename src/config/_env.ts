/**
 * `${VAR}` / `$VAR` expansion of the config text, before YAML parsing (as Litestream does, so
 * it also works inside flow mappings such as `replica: { url: ${URL} }`).
 *
 * Stricter than Litestream, which silently expands unset variables to "": an unset variable is
 * an error (a missing `${BUCKET}` would otherwise turn into a different replica location), and
 * `${VAR:-default}` states a fallback explicitly. `$$` is a literal `$`; a `$` not followed by a
 * name or `{` is kept as is. Whole-line comments are not expanded, so commented-out entries may
 * name unset variables. When a reference is a whole value (`key: ${VAR}`, `- ${VAR}`,
 * `{ key: ${VAR} }`) and its value would change the YAML structure (`: `, ` #`, a leading
 * `*`, `&`, `!`, quotes, brackets…), it is inserted as a double-quoted string, so a secret
 * with odd characters stays one value; other values keep their YAML type (`${N}` → a number).
 *
 * @module
 */

import { ConfigError } from "./error.ts";

const REFERENCE = /\$(?:\$|\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))/g;
const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Text before a reference that makes it the start of a value. */
const WHOLE_BEFORE = /(^\s*|[:-]\s+|[[{,]\s*)$/;
/** Text after a reference that makes it the end of a value. */
const WHOLE_AFTER = /^(\s*$|\s+#|\s*[,\]}])/;

/** Whether `value` reads back as the same single plain scalar in block and flow context. */
function isPlainSafe(value: string): boolean {
  if (value === "") return true; // an empty value: the key is treated as unset
  if (value !== value.trim() || value === "~") return false;
  if (/^[-?:,[\]{}#&*!|>'"%@`]/.test(value) && !/^-[^\s]/.test(value)) return false;
  return !/[,[\]{}]|:(\s|$)|\s#/.test(value);
}

/**
 * Expands environment references in `text`, line by line; line numbers are preserved.
 * @throws {ConfigError} `file:line:` for an unset variable, a malformed `${…}`, or a value with
 * a line break. Values never appear in messages.
 */
export function expandEnv(text: string, env: Record<string, string>, file: string): string {
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (!line.includes("$") || /^\s*#/.test(line)) continue;
    const where = { file, line: i + 1 };
    lines[i] = line.replace(
      REFERENCE,
      (whole: string, braced: string | undefined, bare: string | undefined, offset: number) => {
        if (whole === "$$") return "$";
        let name = bare ?? braced ?? "";
        let fallback: string | undefined;
        if (braced !== undefined) {
          const cut = braced.indexOf(":-");
          if (cut >= 0) {
            name = braced.slice(0, cut);
            fallback = braced.slice(cut + 2);
          }
          if (!NAME.test(name)) {
            throw new ConfigError(
              `invalid environment reference "\${${braced}}"; use \${NAME} or \${NAME:-default} (write $$ for a literal $)`,
              where,
            );
          }
        }
        const value = env[name];
        const result = value === undefined || (value === "" && fallback !== undefined)
          ? fallback
          : value;
        if (result === undefined) {
          throw new ConfigError(
            `environment variable ${name} is not set (write \${${name}:-} to allow it to be empty, or $$ for a literal $)`,
            where,
          );
        }
        if (/[\r\n]/.test(result)) {
          throw new ConfigError(
            `environment variable ${name} contains a line break; config values must fit on one line`,
            where,
          );
        }
        const wholeValue = WHOLE_BEFORE.test(line.slice(0, offset)) &&
          WHOLE_AFTER.test(line.slice(offset + whole.length));
        return wholeValue && !isPlainSafe(result) ? JSON.stringify(result) : result;
      },
    );
  }
  return lines.join("\n");
}
