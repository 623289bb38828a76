// The SDK over wss:// in real Chromium: uprtcd's client listener serves a certificate that a
// certificate authority made here (openssl) signed for 127.0.0.1, pages and the SDK come over
// https, signalling over wss://, and two browsers exchange media. Chromium trusts that one
// certificate by the SHA-256 of its public key (--ignore-certificate-errors-spki-list), the
// supported way to trust a single certificate in automation.
import test from 'node:test';
import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describeSample, expectMedia, run, scenario } from './lib.js';

const TIMEOUT = { timeout: 120_000 };

/** A CA and a server certificate it signs for 127.0.0.1 and localhost, in `dir`. */
async function issueCertificate(dir) {
  const at = (name) => join(dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-noenc'];
  await run('openssl', ['req', '-x509', ...ec, '-keyout', at('ca-key.pem'), '-out', at('ca.pem'), '-days', '2', '-subj', '/CN=uprtcd e2e CA']);
  await run('openssl', ['req', ...ec, '-keyout', at('key.pem'), '-out', at('server.csr'), '-subj', '/CN=127.0.0.1']);
  await writeFile(at('ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  await run('openssl', ['x509', '-req', '-in', at('server.csr'), '-CA', at('ca.pem'), '-CAkey', at('ca-key.pem'), '-CAcreateserial', '-days', '2', '-extfile', at('ext.cnf'), '-out', at('cert.pem')]);
  return { cert: at('cert.pem'), key: at('key.pem') };
}

/** What Chromium's --ignore-certificate-errors-spki-list takes: base64 of SHA-256 of the SPKI. */
async function spkiHash(certPath) {
  const spki = new X509Certificate(await readFile(certPath)).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('base64');
}

test('two browsers on https pages join over wss:// through the SDK and exchange media', TIMEOUT, (t) =>
  scenario(t, async (sc) => {
    const dir = await sc.scratch('tls');
    const { cert, key } = await issueCertificate(dir);
    const config = join(dir, 'uprtcd.toml');
    await writeFile(config, `[client]\ntls_cert = ${JSON.stringify(cert)}\ntls_key = ${JSON.stringify(key)}\n`);
    const server = await sc.server(['--config', config], { secure: true });
    const room = await server.convo('alice', ['bob']);
    assert.match(room.serverUrl, /^wss:\/\/127\.0\.0\.1:\d+\/$/, `serverUrl: ${JSON.stringify(room)}`);

    const flags = [`--ignore-certificate-errors-spki-list=${await spkiHash(cert)}`];
    const browsers = await sc.browsersOn(server, ['alice', 'bob'], '/healthz', { flags });
    for (const b of browsers) {
      assert.equal(await b.evaluate(() => location.protocol), 'https:', `${b.name}'s page and SDK come over https`);
      // Pages over HTTP/2 (ALPN); the WebSocket below gets a connection of its own, on HTTP/1.1.
      assert.equal(await b.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol), 'h2');
      const joined = await b.join({ serverUrl: room.serverUrl, invitationCode: room.invitationCode, peer: b.name, token: await server.token(room.roomId, b.name) });
      assert.equal(joined.ok, true, `${b.name} joins over wss: ${JSON.stringify(joined)}`);
      assert.match(await b.evaluate(() => window.e2e.room._ws.url), /^wss:\/\//);
    }
    await Promise.all(browsers.map((b) => b.publish()));
    const [alice, bob] = browsers;
    t.diagnostic(describeSample(bob, (await expectMedia(bob, ['alice']))[1]));
    t.diagnostic(describeSample(alice, (await expectMedia(alice, ['bob']))[1]));

    // The page cannot open ws:// (mixed content); the SDK says why instead of failing vaguely.
    const insecure = await alice.evaluate(async (o) => {
      try {
        await window.e2e.Room.join(o);
        return { ok: true };
      } catch (e) {
        return { ok: false, code: e.code, msg: e.msg };
      }
    }, { serverUrl: room.serverUrl.replace(/^wss:/, 'ws:'), invitationCode: room.invitationCode, peer: 'alice', token: 'unused' });
    assert.equal(insecure.ok, false);
    assert.equal(insecure.code, -1);
    assert.match(insecure.msg, /loaded over https.*client\.tls_cert/, JSON.stringify(insecure));
  }),
);
