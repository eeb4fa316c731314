/**
 * SFTP and WebDAV replica settings: Litestream's URLs and keys parse unchanged, sluice's
 * additions (known-hosts, the URL's host-key) work, and wrong combinations fail with file:line.
 */

import assert from "node:assert/strict";
import {
  type Config,
  ConfigError,
  formatReplicaLocation,
  parseConfig,
  parseReplicaURL,
  replicaSpecFor,
} from "../src/config/mod.ts";
import { createReplicaClient } from "../src/replica/mod.ts";

function parse(text: string): Config {
  return parseConfig(text, { file: "sluice.yml", env: { HOME: "/home/u" }, baseDir: "/srv/app" });
}

function errorOf(text: string): string {
  try {
    parse(text);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.message;
  }
  return assert.fail("expected a ConfigError");
}

Deno.test("sftp: Litestream's URL and keys", () => {
  assert.deepEqual(parseReplicaURL("sftp://backup:s3cret@example.com:2222/var/backups/app"), {
    type: "sftp",
    host: "example.com:2222",
    user: "backup",
    password: "s3cret",
    path: "/var/backups/app",
  });
  const withKey = parseReplicaURL(
    "sftp://backup@example.com/db?host-key=SHA256%3Aabc&known-hosts=/etc/ssh/known_hosts",
  );
  assert.equal(withKey.type === "sftp" && withKey.hostKey, "SHA256:abc");
  assert.throws(() => parseReplicaURL("sftp://example.com/db"), /names no user/);
  assert.throws(() => parseReplicaURL("sftp://u@example.com/db?port=1"), /unknown or empty/);

  const config = parse(`
dbs:
  - path: /data/app.db
    replica:
      type: sftp
      host: example.com:2222
      user: backup
      key-path: keys/id_ed25519
      host-key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl
      concurrent-writes: false
      path: /var/backups/app
`);
  const spec = config.dbs[0].replica.spec;
  assert.deepEqual(spec, {
    type: "sftp",
    host: "example.com:2222",
    user: "backup",
    path: "/var/backups/app",
    keyPath: "/srv/app/keys/id_ed25519",
    hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
  });
  assert.equal(formatReplicaLocation(spec), "sftp://backup@example.com:2222/var/backups/app");
  const client = createReplicaClient(spec);
  assert.equal(client.type, "sftp");
  assert.equal(client.location, "sftp://backup@example.com:2222/var/backups/app");

  // A url with a password; the config's user wins over the url's, as in Litestream.
  const fromURL = parse(`
dbs:
  - path: /data/app.db
    replica:
      url: sftp://old:pw@example.com/backups
      user: new
      known-hosts: ~/.ssh/known_hosts
`).dbs[0].replica.spec;
  assert.equal(fromURL.type, "sftp");
  if (fromURL.type === "sftp") {
    assert.equal(fromURL.user, "new");
    assert.equal(fromURL.password, "pw");
    assert.equal(fromURL.knownHosts, "/home/u/.ssh/known_hosts");
  }
  // Each database of a dir entry below the remote path (an absolute path stays absolute).
  const dir = parse(`
dbs:
  - dir: /data/tenants
    pattern: "*.db"
    replica: { url: "sftp://u@h/backups" }
`).dbs[0];
  const child = replicaSpecFor("/data/tenants/a.db", dir);
  assert.equal(child.type === "sftp" && child.path, "/backups/a.db");
});

Deno.test("sftp: wrong settings fail with file:line", () => {
  assert.match(
    errorOf("dbs:\n  - path: /a.db\n    replica:\n      type: sftp\n      host: h\n"),
    /sluice\.yml:4.*needs user/,
  );
  assert.match(
    errorOf("dbs:\n  - path: /a.db\n    replica:\n      url: sftp://u@h/x\n      host: h2\n"),
    /sluice\.yml:5.*either url or host/,
  );
  assert.match(
    errorOf(
      "dbs:\n  - path: /a.db\n    replica:\n      type: sftp\n      host: h\n      user: u\n      bucket: b\n",
    ),
    /bucket.*only applies to s3/,
  );
  assert.match(
    errorOf("dbs:\n  - path: /a.db\n    replica:\n      path: /b\n      host-key: x\n"),
    /host-key.*only applies to sftp/,
  );
  // The password is a secret: a wrong type never echoes it.
  assert.ok(
    !errorOf(
      "dbs:\n  - path: /a.db\n    replica:\n      type: sftp\n      host: h\n      user: u\n      password: [hunter2]\n",
    ).includes("hunter2"),
  );
});

Deno.test("webdav: Litestream's URLs and keys", () => {
  assert.deepEqual(parseReplicaURL("webdav://alice:pw@dav.example.com:8080/backups/app"), {
    type: "webdav",
    url: "http://dav.example.com:8080",
    username: "alice",
    password: "pw",
    path: "backups/app",
  });
  const secure = parseReplicaURL("webdavs://dav.example.com/backups");
  assert.equal(secure.type === "webdav" && secure.url, "https://dav.example.com");
  assert.equal(formatReplicaLocation(secure), "webdavs://dav.example.com/backups");

  const config = parse(`
dbs:
  - path: /data/app.db
    replica:
      type: webdav
      webdav-url: https://cloud.example.com/remote.php/dav/files/alice
      webdav-username: alice
      webdav-password: pw
      path: backups/app
`);
  const spec = config.dbs[0].replica.spec;
  assert.deepEqual(spec, {
    type: "webdav",
    url: "https://cloud.example.com/remote.php/dav/files/alice",
    username: "alice",
    password: "pw",
    path: "backups/app",
  });
  const client = createReplicaClient(spec);
  assert.equal(
    client.location,
    "webdavs://cloud.example.com/remote.php/dav/files/alice/backups/app",
  );
  assert.match(
    errorOf("dbs:\n  - path: /a.db\n    replica:\n      type: webdav\n      path: x\n"),
    /needs webdav-url/,
  );
  assert.match(
    errorOf(
      "dbs:\n  - path: /a.db\n    replica:\n      url: webdav://h/x\n      webdav-url: http://h\n",
    ),
    /either url or webdav-url/,
  );
});
