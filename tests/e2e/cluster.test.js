// A cluster of two real nodes with real browsers on both ends: rtc-1 on 127.0.0.1 and rtc-2 on
// 127.0.0.2 (each as if on a machine of its own), one Redis of the test's own (Debian's
// redis-server on a free loopback port, nothing saved). A Chromium host publishes into a live
// room at rtc-1 through the SDK; the room is mirrored on rtc-2 by a call to rtc-2's API, which
// passes it to the origin; rtc-2's audience, fed over the SRTP node link between the nodes,
// is a Chromium joined through the SDK at rtc-2's serverUrl and a headless Firefox playing over
// WHEP at rtc-2, each checked by what it decoded. Closing the room at the origin closes the
// mirror: its audience hears it and rtc-2 holds no room any more.
//
// Firefox offers only the address of its default route, and pairs a loopback address only
// with another: the namespace gets a default route over loopback from 127.0.0.1
// (`Scenario.defaultRouteOverLoopback`), and nothing but loopback is involved.
import test from 'node:test';
import assert from 'node:assert/strict';
import { createConnection, createServer } from 'node:net';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Server, describeSample, expectMedia, poll, scenario } from './lib.js';

const TIMEOUT = { timeout: 150_000 };

/** A TCP port free on `host` just now. */
function freePort(host) {
  return new Promise((resolve, reject) => {
    const probe = createServer().once('error', reject);
    probe.listen(0, host, () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** Whether a Redis on `port` answers PING. */
function pong(port) {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    let answer = '';
    const done = (ok) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      answer += chunk;
      if (answer.includes('\r\n')) done(answer.startsWith('+PONG'));
    });
  });
}

/** Debian's redis-server on a free loopback port, saving nothing; ended with the scenario. */
async function redis(sc) {
  const port = await freePort('127.0.0.1');
  sc.tool('redis-server', [
    ['--bind', '127.0.0.1'],
    ['--port', String(port)],
    ['--save', ''],
    ['--appendonly', 'no'],
    ['--protected-mode', 'no'],
    ['--loglevel', 'warning'],
  ].flat());
  await poll(10_000, `redis-server answers on port ${port}`, () => pong(port), 100);
  return `redis://127.0.0.1:${port}/`;
}

/** Node `alias` of the cluster on `redisUrl`, everything on loopback address `ip`, with `extra` configuration. */
async function node(sc, redisUrl, ip, alias, secret, extra = '') {
  const config = join(await sc.scratch(alias), 'uprtcd.toml');
  await writeFile(config, `${extra}\n[cluster]\nredis_url = "${redisUrl}"\n`);
  return sc.server(
    [
      ['--api-listen', `${ip}:0`],
      ['--client-listen', `${ip}:0`],
      ['--udp-listen', `${ip}:0`],
      ['--announced-ip', ip],
      ['--server-alias', alias],
      ['--config', config],
    ].flat(),
    { secret },
  );
}

/** The remote addresses of `browser`'s nominated candidate pairs for what it receives. */
async function subscribedFrom(browser) {
  const { subscribe } = await browser.diagnostics();
  return subscribe?.pairs?.map((p) => p.remote) ?? [];
}

test('a live room mirrored on another node: Chromium and Firefox audiences there decode the host, and hear the room close', TIMEOUT, (t) =>
  scenario(t, async (sc) => {
    await sc.defaultRouteOverLoopback();
    const redisUrl = await redis(sc);
    const secret = Server.secret();
    const [one, two] = await Promise.all([
      node(sc, redisUrl, '127.0.0.1', 'rtc-1', secret),
      node(sc, redisUrl, '127.0.0.2', 'rtc-2', secret),
    ]);
    for (const server of [one, two]) {
      await poll(15_000, `${server.api} sees both nodes`, async () => (await server.metric('uprtcd_cluster_nodes')) === 2);
    }

    // The room at the origin, its host publishing there.
    const { roomId, serverUrl, serverAlias } = await one.ok('POST', '/room/live', { masterId: 'host' });
    assert.equal(serverAlias, 'rtc-1', 'the room opens on the node called');
    const id = encodeURIComponent(roomId);
    const { invitationCode } = await one.ok('GET', `/room/${id}`);
    const [host] = await sc.browsersOn(one, ['host']);
    const hosting = await host.join({ serverUrl, invitationCode, peer: 'host', token: await one.token(roomId, 'host') });
    assert.equal(hosting.ok, true, `the host joins at rtc-1: ${JSON.stringify(hosting)}`);
    assert.deepEqual([...(await host.publish())].sort(), ['audio', 'video']);

    // The mirror, asked of rtc-2, which passes the call to the origin.
    const forwarded = 'uprtcd_cluster_forwarded_total{result="ok"}';
    const received = 'uprtcd_cluster_forwarded_total{result="received"}';
    const [forwardedBefore, receivedBefore] = [await two.metric(forwarded), await one.metric(received)];
    await two.ok('POST', `/room/${id}/live/mirror`, { serverAlias: 'rtc-2' });
    assert.ok((await two.metric(forwarded)) > forwardedBefore, 'rtc-2 passed the mirror call on');
    assert.ok((await one.metric(received)) > receivedBefore, 'rtc-1 took it');
    const mirrors = await two.ok('GET', `/room/${id}/live/mirrors`);
    const mirror = mirrors.find((m) => m.serverAlias === 'rtc-2');
    assert.ok(mirror, `rtc-2 mirrors the room: ${JSON.stringify(mirrors)}`);
    assert.ok(mirror.serverUrl.startsWith('ws://127.0.0.2:'), `the mirror is joined at rtc-2: ${mirror.serverUrl}`);
    assert.deepEqual((await two.ok('GET', `/room/${id}`)).mirrorServers, ['rtc-2']);

    // rtc-2's audience: Firefox over WHEP (started first: it takes the longest to come up) and
    // Chromium through the SDK, each with a join token of the room.
    const firefox = await sc.firefoxWhep(two, roomId, await two.token(roomId, 'firefox'));
    const [viewer] = await sc.browsersOn(two, ['viewer']);
    const watching = await viewer.join({ serverUrl: mirror.serverUrl, invitationCode, peer: 'viewer', token: await two.token(roomId, 'viewer') });
    assert.equal(watching.ok, true, `the viewer joins at rtc-2: ${JSON.stringify(watching)}`);
    const [, second] = await expectMedia(viewer, ['host']);
    const { frameWidth, frameHeight } = second.host.video;
    t.diagnostic(`${describeSample(viewer, second)}, ${frameWidth}x${frameHeight}`);
    assert.ok(frameWidth > 0 && frameHeight > 0, `the viewer decodes pictures: ${frameWidth}x${frameHeight}`);
    const pairs = await subscribedFrom(viewer);
    assert.ok(pairs.length > 0 && pairs.every((p) => p.includes('127.0.0.2:')), `the viewer receives from rtc-2: ${pairs}`);
    await firefox.next('answered', 60_000);
    const first = await firefox.until('Firefox decodes video from the mirror', 30_000, (l) => l.step === 'stats' && l.framesDecoded > 0 && l.audioPackets > 0);
    const more = await firefox.until('Firefox goes on decoding', 10_000, (l) => l.step === 'stats' && l.framesDecoded > first.framesDecoded && l.audioPackets > first.audioPackets);
    t.diagnostic(`Firefox at rtc-2: ${JSON.stringify(more)}`);

    // Closed at the origin, the room closes at rtc-2 too.
    assert.equal((await two.ok('GET', '/server/room/num')).num, 1, 'rtc-2 holds the mirror');
    await one.ok('DELETE', `/room/${id}`);
    await viewer.waitEvent('room-closed');
    await poll(10_000, 'rtc-2 holds no room any more', async () => (await two.ok('GET', '/server/room/num')).num === 0);
  }),
);

test('a full origin sends a Chromium audience member to a mirror it opens on another node: the SDK follows the redirect and decodes there', TIMEOUT, (t) =>
  scenario(t, async (sc) => {
    const redisUrl = await redis(sc);
    const secret = Server.secret();
    const [one, two] = await Promise.all([
      node(sc, redisUrl, '127.0.0.1', 'rtc-1', secret, '[rooms]\nmax_audience_per_node = 1\n'),
      node(sc, redisUrl, '127.0.0.2', 'rtc-2', secret),
    ]);
    for (const server of [one, two]) {
      await poll(15_000, `${server.api} sees both nodes`, async () => (await server.metric('uprtcd_cluster_nodes')) === 2);
    }
    const { roomId, serverUrl } = await one.ok('POST', '/room/live', { masterId: 'host' });
    const id = encodeURIComponent(roomId);
    const { invitationCode } = await one.ok('GET', `/room/${id}`);
    const [host, stays, moves] = await sc.browsersOn(one, ['host', 'stays', 'moves']);
    const join = async (browser, peer) => {
      const joined = await browser.join({ serverUrl, invitationCode, peer, token: await one.token(roomId, peer) });
      assert.equal(joined.ok, true, `${peer} joins: ${JSON.stringify(joined)}`);
    };
    await join(host, 'host');
    assert.deepEqual([...(await host.publish())].sort(), ['audio', 'video']);

    // The origin takes one of the audience; the next one, given rtc-1's serverUrl like the
    // first, is sent to a mirror rtc-1 opens on rtc-2, and the SDK goes there by itself.
    await join(stays, 'stays');
    await expectMedia(stays, ['host']);
    await join(moves, 'moves');
    const [, there] = await expectMedia(moves, ['host']);
    const { frameWidth, frameHeight } = there.host.video;
    t.diagnostic(`${describeSample(moves, there)}, ${frameWidth}x${frameHeight}`);
    assert.ok(frameWidth > 0 && frameHeight > 0, `the redirected viewer decodes pictures: ${frameWidth}x${frameHeight}`);
    const movedPairs = await subscribedFrom(moves);
    assert.ok(movedPairs.length > 0 && movedPairs.every((p) => p.includes('127.0.0.2:')), `it receives from rtc-2: ${movedPairs}`);
    const stayedPairs = await subscribedFrom(stays);
    assert.ok(stayedPairs.every((p) => p.includes('127.0.0.1:')), `the first stays at rtc-1: ${stayedPairs}`);
    assert.equal(await one.metric('uprtcd_cluster_redirects_total'), 1);
    assert.deepEqual((await one.ok('GET', `/room/${id}`)).mirrorServers, ['rtc-2'], 'rtc-1 opened the mirror itself');
  }),
);
