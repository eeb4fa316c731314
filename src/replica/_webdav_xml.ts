/**
 * The little XML WebDAV needs: building PROPFIND/PROPPATCH bodies and reading a 207
 * multistatus response. Deno has no DOMParser, and a multistatus is a flat, well-known shape,
 * so it is read by element local names (any namespace prefix) rather than with a full parser.
 *
 * @module
 */

/** The namespace of sluice's dead property. */
export const SLUICE_NS = "urn:x-sluice:";
/** The dead property holding a file's LTX timestamp (RFC3339Nano, like S3's metadata). */
export const TIMESTAMP_PROPERTY = "litestream-timestamp";

/** One `<response>` of a multistatus. */
export interface DavEntry {
  /** The decoded path of the href (no scheme or host). */
  path: string;
  collection: boolean;
  size?: number;
  lastModified?: Date;
  /** sluice's timestamp property, when the server stored it. */
  timestamp?: string;
}

/** PROPFIND body asking for what a listing needs. */
export const PROPFIND_BODY = `<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:" xmlns:S="${SLUICE_NS}"><D:prop><D:resourcetype/><D:getcontentlength/>` +
  `<D:getlastmodified/><S:${TIMESTAMP_PROPERTY}/></D:prop></D:propfind>`;

/** PROPPATCH body setting the timestamp property. */
export function proppatchBody(timestamp: string): string {
  return `<?xml version="1.0" encoding="utf-8"?>
<D:propertyupdate xmlns:D="DAV:" xmlns:S="${SLUICE_NS}"><D:set><D:prop>` +
    `<S:${TIMESTAMP_PROPERTY}>${escapeXML(timestamp)}</S:${TIMESTAMP_PROPERTY}>` +
    `</D:prop></D:set></D:propertyupdate>`;
}

/** Reads the responses of a multistatus body; properties are taken from 2xx propstats only. */
export function parseMultistatus(xml: string): DavEntry[] {
  const entries: DavEntry[] = [];
  for (const response of elements(xml, "response")) {
    const href = text(response, "href");
    if (href === undefined) continue;
    let path: string;
    try {
      path = decodeURIComponent(new URL(href, "http://host").pathname);
    } catch {
      continue;
    }
    const entry: DavEntry = { path, collection: false };
    for (const propstat of elements(response, "propstat")) {
      const status = text(propstat, "status") ?? "";
      if (!/\s2\d\d\s/.test(` ${status} `)) continue;
      const resourcetype = elements(propstat, "resourcetype")[0];
      if (resourcetype !== undefined && /<(?:[\w.-]+:)?collection\b/.test(resourcetype)) {
        entry.collection = true;
      }
      const size = text(propstat, "getcontentlength");
      if (size !== undefined && size.trim() !== "") entry.size = Number(size.trim());
      const modified = text(propstat, "getlastmodified");
      if (modified !== undefined && modified.trim() !== "") {
        const date = new Date(modified.trim());
        if (!Number.isNaN(date.getTime())) entry.lastModified = date;
      }
      const timestamp = text(propstat, TIMESTAMP_PROPERTY);
      if (timestamp !== undefined && timestamp.trim() !== "") entry.timestamp = timestamp.trim();
    }
    entries.push(entry);
  }
  return entries;
}

/** Whether a PROPPATCH multistatus reports every property as set. */
export function proppatchSucceeded(xml: string): boolean {
  const statuses = elements(xml, "propstat").map((p) => text(p, "status") ?? "");
  return statuses.length > 0 && statuses.every((s) => /\s2\d\d\s/.test(` ${s} `));
}

/** Inner contents of every element with this local name (any prefix), outermost first. */
function elements(xml: string, localName: string): string[] {
  const name = localName.replace(/[-.]/g, "\\$&");
  const pattern = new RegExp(
    `<((?:[\\w.-]+:)?${name})(?:\\s[^>]*)?(?:/>|>([\\s\\S]*?)</\\1\\s*>)`,
    "g",
  );
  return [...xml.matchAll(pattern)].map((m) => m[2] ?? "");
}

function text(xml: string, localName: string): string | undefined {
  const inner = elements(xml, localName)[0];
  return inner === undefined ? undefined : unescapeXML(inner.replace(/<!\[CDATA\[|\]\]>/g, ""));
}

function escapeXML(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function unescapeXML(text: string): string {
  return text.replace(/&(lt|gt|amp|quot|apos|#\d+|#x[0-9a-f]+);/gi, (_, entity: string) => {
    switch (entity.toLowerCase()) {
      case "lt":
        return "<";
      case "gt":
        return ">";
      case "amp":
        return "&";
      case "quot":
        return '"';
      case "apos":
        return "'";
    }
    const code = entity[1].toLowerCase() === "x"
      ? parseInt(entity.slice(2), 16)
      : parseInt(entity.slice(1), 10);
    return String.fromCodePoint(code);
  });
}
