// Stacks nobody here wrote, on both ends: Firefox (Debian's firefox-esr, headless, no driver:
// the page whep_player.html reports on stdout) plays over WHEP what aiortc (PyPI) or GStreamer's
// webrtcbin (Debian's, with libnice and an RSA DTLS certificate) publishes over WHIP. The player
// starts before anything is published, numbers its codecs its own way (Firefox: VP8 120, Opus
// 109; aiortc publishes VP8 97, Opus 96; the GStreamer publisher VP8 98, Opus 100), and keeps
// playing through its publisher leaving and coming back, on one WHEP session.
//
// Firefox offers a page that captures nothing only the address of its default route, and the
// suite's namespace has only loopback: the test gives the namespace a veth pair of its own (both
// ends inside it, on addresses of the test's) with a default route over it, and media goes to
// the server on the other end. Nothing leaves the machine.
import test from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { run, scenario, sleep } from './lib.js';

const TIMEOUT = { timeout: 150_000 };

/** A veth pair inside this namespace, its second end the default route; removed after `t`. */
async function defaultRoute(t) {
  const suffix = randomBytes(3).toString('hex');
  const [server, player] = [`fs${suffix}`, `fp${suffix}`];
  const [serverAddress, playerAddress] = ['10.78.0.1', '10.78.0.2'];
  t.after(() => run('ip', ['link', 'del', server]).catch(() => {}));
  await run('ip', ['link', 'add', server, 'type', 'veth', 'peer', 'name', player]);
  await run('ip', ['addr', 'add', `${serverAddress}/30`, 'dev', server]);
  await run('ip', ['addr', 'add', `${playerAddress}/30`, 'dev', player]);
  await run('ip', ['link', 'set', server, 'up']);
  await run('ip', ['link', 'set', player, 'up']);
  await run('ip', ['route', 'add', 'default', 'via', serverAddress, 'dev', player]);
  return serverAddress;
}

/** Starts headless Firefox on the player page for `room`, with its own scratch profile. */
async function firefoxPlayer(sc, server, room, peer) {
  return sc.firefoxWhep(server, room.roomId, await server.token(room.roomId, peer));
}

/** A WHIP publisher (`script`: aiortc_whip.py or gst_whip.py) on air for `seconds`, which then
 * sends its DELETE. GStreamer's bindings are Debian's (python3-gi), for Debian's interpreter,
 * which need not be the first `python3` on the PATH. */
async function whipPublisher(sc, script, server, room, peer, seconds) {
  const python = script.includes('gst') ? '/usr/bin/python3' : 'python3';
  return sc.tool(python, [
    new URL(script, import.meta.url).pathname,
    '--url', `${server.origin}/whip/${encodeURIComponent(room.roomId)}`,
    '--token', await server.token(room.roomId, peer),
    '--seconds', String(seconds),
  ]);
}

/**
 * A server whose media goes over the namespace's default route, a room with alice and bob in
 * it, and Firefox playing it as bob, started before anything is published.
 */
async function playerBeforeAnyPublisher(t, sc) {
  const mediaAddress = await defaultRoute(t);
  const server = await sc.server(['--udp-listen', `${mediaAddress}:0`, '--announced-ip', mediaAddress]);
  const room = await server.convo('alice', ['bob']);
  const player = await firefoxPlayer(sc, server, room, 'bob');
  return { server, room, player };
}

/** The player's last `stats` line. */
function latestStats(player) {
  const stats = player.lines.filter((l) => l.startsWith('{"step":"stats"'));
  return JSON.parse(stats.at(-1));
}

test('Firefox plays over WHEP, from before the publisher and through its return', TIMEOUT, (t) =>
  scenario(t, async (sc) => {
    const { server, room, player } = await playerBeforeAnyPublisher(t, sc);
    const answered = await player.next('answered', 60_000);
    t.diagnostic(`offer ${answered.offer.join(' | ')}; answer ${answered.answer.join(' | ')}`);
    assert.match(answered.answer.find((l) => l.startsWith('m=video')), /SAVPF 120\b/, 'VP8 under Firefox\'s number first');

    const first = await whipPublisher(sc, './aiortc_whip.py', server, room, 'alice', 6);
    await first.next('connected', 20_000);
    const playing = await player.until('video decoded from the first publisher', 30_000, (l) => l.step === 'stats' && l.framesDecoded >= 20 && l.audioPackets >= 20);
    t.diagnostic(`first publisher: ${JSON.stringify(playing)}`);
    await first.next('ended', 20_000);
    await sleep(1500);
    const before = latestStats(player);
    t.diagnostic(`after the first publisher left: ${JSON.stringify(before)}`);

    const second = await whipPublisher(sc, './aiortc_whip.py', server, room, 'alice', 30);
    await second.next('connected', 20_000);
    const again = await player.until('video decoded from the returning publisher', 30_000, (l) => l.step === 'stats' && l.framesDecoded >= before.framesDecoded + 40);
    t.diagnostic(`after the return: ${JSON.stringify(again)}`);
    assert.equal(again.state, 'connected', 'one WHEP session throughout');
  }),
);

test('Firefox plays over WHEP what GStreamer webrtcbin publishes over WHIP', TIMEOUT, (t) =>
  scenario(t, async (sc) => {
    const { server, room, player } = await playerBeforeAnyPublisher(t, sc);
    await player.next('answered', 60_000);
    const publisher = await whipPublisher(sc, './gst_whip.py', server, room, 'alice', 30);
    await publisher.next('connected', 30_000);
    const playing = await player.until('video decoded from GStreamer', 30_000, (l) => l.step === 'stats' && l.framesDecoded >= 30 && l.audioPackets >= 30);
    t.diagnostic(`GStreamer publisher: ${JSON.stringify(playing)}`);
  }),
);
