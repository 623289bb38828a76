// The userspace network impairment of the e2e harness (impair.js): the Shaper in virtual time
// (deterministic, no clock), the UDP relay with plain sockets on loopback, and one real
// Chromium subscriber behind the relay whose video stops while everything is dropped, comes
// back when the link is clean again, and overflows a narrow bottleneck. Checks read counters
// and what the browser decoded, never a timing of the host.
import test from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { ImpairedPath, Shaper, impairPage } from './impair.js';
import { describeSample, expectMedia, poll, scenario, sleep } from './lib.js';

/**
 * Runs `shaper` in virtual time, one ms a step, from 0 to `untilMs` inclusive: `offers(t)`
 * returns the sizes offered at t; returns what was taken, as {t, bytes, sent}.
 */
function simulate(shaper, untilMs, offers) {
  const delivered = [];
  for (let t = 0; t <= untilMs; t++) {
    for (const bytes of offers(t)) shaper.offer(t, bytes, { bytes, sent: t });
    for (const item of shaper.take(t)) delivered.push({ t, ...item });
  }
  return delivered;
}

const kbps = (packets, fromMs, toMs) =>
  (packets.filter((p) => p.t > fromMs && p.t <= toMs).reduce((s, p) => s + p.bytes, 0) * 8) / (toMs - fromMs);

test('Shaper: a saturated 400 kbit/s bottleneck carries 400 kbit/s (± 2 %) over 10 virtual s and drops the excess at the queue', () => {
  const shaper = new Shaper({ rateKbps: 400 });
  // 1200 bytes every 12 ms: 800 kbit/s offered.
  const delivered = simulate(shaper, 10_000, (t) => (t % 12 === 0 ? [1200] : []));
  const rate = kbps(delivered, 0, 10_000);
  assert.ok(Math.abs(rate - 400) <= 8, `throughput ${rate} kbit/s`);
  assert.ok(shaper.counters.droppedQueue > 0, 'the excess is dropped');
  assert.equal(shaper.counters.droppedLoss, 0);
  // The queue never holds more than ~200 ms: the latest packets waited at most that long.
  const worst = Math.max(...delivered.map((p) => p.t - p.sent));
  assert.ok(worst <= 200 + 24 + 1, `queueing delay up to ${worst} ms`);
  assert.ok(worst >= 150, `a saturated queue fills up (${worst} ms)`);
});

test('Shaper: delay is added after serialisation, and order is kept', () => {
  const shaper = new Shaper({ rateKbps: 400, delayMs: 50 });
  // 1200 bytes at 400 kbit/s: 24 ms on the wire.
  assert.deepEqual(shaper.offer(1000, 1200), { deliverAtMs: 1074 });
  assert.deepEqual(shaper.offer(1000, 1200), { deliverAtMs: 1098 });
  assert.deepEqual(shaper.take(1073), []);
  assert.equal(shaper.take(1074).length, 1);
  assert.equal(shaper.take(1097).length, 0);
  assert.equal(shaper.take(1098).length, 1);
  // A shorter delay set later does not let a packet overtake one sent before.
  const ordered = new Shaper({ rateKbps: 400, delayMs: 50 });
  assert.deepEqual(ordered.offer(0, 1200), { deliverAtMs: 74 });
  ordered.set({ delayMs: 0 });
  assert.deepEqual(ordered.offer(30, 1200), { deliverAtMs: 74 });
  const delayOnly = new Shaper({ delayMs: 80 });
  assert.deepEqual(delayOnly.offer(5, 1500), { deliverAtMs: 85 });
});

test('Shaper: a burst beyond queueMs of backlog is dropped at the tail and counted', () => {
  const shaper = new Shaper({ rateKbps: 400, queueMs: 200 });
  // 1000 bytes = 20 ms each: one on the wire, then up to 200 ms of backlog in all.
  const results = Array.from({ length: 100 }, () => shaper.offer(0, 1000));
  const accepted = results.filter((r) => r.deliverAtMs !== undefined).length;
  assert.equal(accepted, 10);
  assert.equal(shaper.counters.droppedQueue, 90);
  assert.ok(results.slice(accepted).every((r) => r.dropped === 'queue'), 'drop-tail: the latest are the ones dropped');
  assert.equal(shaper.counters.forwarded, 10);
  assert.equal(shaper.counters.bytes, 10_000);
  // Once drained, it takes packets again.
  assert.ok(shaper.offer(200, 1000).deliverAtMs === 220);
});

test('Shaper: seeded loss of 10 % drops 10 % (± 2 %) of 10,000 packets, the same ones for the same seed', () => {
  const outcomes = (seed) => {
    const shaper = new Shaper({ loss: 0.1, seed });
    const dropped = Array.from({ length: 10_000 }, (_, i) => shaper.offer(i, 1000).dropped === 'loss');
    return { dropped, shaper };
  };
  const a = outcomes(42);
  const lost = a.dropped.filter(Boolean).length;
  assert.ok(lost >= 800 && lost <= 1200, `${lost} of 10,000 lost`);
  assert.equal(a.shaper.counters.droppedLoss, lost);
  assert.equal(a.shaper.counters.forwarded, 10_000 - lost);
  assert.deepEqual(outcomes(42).dropped, a.dropped, 'the same seed gives the same losses');
  assert.notDeepEqual(outcomes(43).dropped, a.dropped, 'another seed gives other losses');
  const all = new Shaper({ loss: 1 });
  assert.ok(Array.from({ length: 100 }, (_, i) => all.offer(i, 100)).every((r) => r.dropped === 'loss'));
});

test('Shaper: a rate change mid-stream takes effect, for the packets queued already too', () => {
  const shaper = new Shaper({ rateKbps: 400, queueMs: 500 });
  const offers = (t) => (t % 12 === 0 ? [1200] : []); // 800 kbit/s offered
  const delivered = [];
  for (let t = 0; t <= 10_000; t++) {
    if (t === 5000) {
      // The queue holds ~500 ms of backlog at 400 kbit/s: it drains at the new rate.
      shaper.set({ rateKbps: 100 });
    }
    if (t === 10_000) shaper.set({ rateKbps: 1600 });
    for (const bytes of offers(t)) shaper.offer(t, bytes, { bytes, sent: t });
    for (const item of shaper.take(t)) delivered.push({ t, ...item });
  }
  for (let t = 10_001; t <= 12_000; t++) {
    for (const bytes of offers(t)) shaper.offer(t, bytes, { bytes, sent: t });
    for (const item of shaper.take(t)) delivered.push({ t, ...item });
  }
  const before = kbps(delivered, 1000, 5000);
  const after = kbps(delivered, 5000, 10_000);
  const faster = kbps(delivered, 10_500, 12_000);
  assert.ok(Math.abs(before - 400) <= 8, `before: ${before} kbit/s`);
  assert.ok(Math.abs(after - 100) <= 4, `after the change to 100: ${after} kbit/s`);
  assert.ok(Math.abs(faster - 800) <= 16, `at 1600 it carries all 800 offered: ${faster} kbit/s`);
  // A packet queued before the change leaves at the new rate: the scheduled time moves.
  const s = new Shaper({ rateKbps: 400 });
  s.offer(0, 1200);
  const queued = s.offer(0, 1200).deliverAtMs; // 48 at 400 kbit/s
  assert.equal(queued, 48);
  s.set({ rateKbps: 100 });
  assert.equal(s.take(24).length, 1);
  assert.equal(s.take(48).length, 0, 'not at the old time');
  assert.equal(s.take(24 + 96 - 1).length, 0);
  assert.equal(s.take(24 + 96).length, 1, 'at the new rate');
});

test('Shaper: unlimited (rate 0 or Infinity) passes everything, at the delay only', () => {
  for (const rateKbps of [0, Infinity]) {
    const shaper = new Shaper({ rateKbps, delayMs: 30 });
    for (let i = 0; i < 10_000; i++) assert.deepEqual(shaper.offer(7, 1500), { deliverAtMs: 37 });
    assert.equal(shaper.take(36).length, 0);
    assert.equal(shaper.take(37).length, 10_000);
    assert.deepEqual(shaper.counters, { forwarded: 10_000, bytes: 15_000_000, droppedLoss: 0, droppedQueue: 0, droppedBytes: 0 });
  }
});

// ---------------------------------------------------------------------------------------------

const udp = async () => {
  const s = dgram.createSocket('udp4');
  s.bind(0, '127.0.0.1');
  await once(s, 'listening');
  return s;
};
const next = (socket, ms = 2000) =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no datagram within 2 s')), ms);
    socket.once('message', (data, from) => {
      clearTimeout(timer);
      resolve({ data, from });
    });
  });

test('ImpairedPath: datagrams pass byte for byte both ways, each client source gets its own upstream socket, close() frees the port', async (t) => {
  const server = await udp();
  const [a, b] = [await udp(), await udp()];
  t.after(() => [server, a, b].forEach((s) => s.close()));
  const path = await ImpairedPath.open({ target: { address: '127.0.0.1', port: server.address().port } });
  const relay = path.port;
  assert.notEqual(relay, server.address().port);
  assert.deepEqual(await path.route('127.0.0.1', server.address().port), { address: '127.0.0.1', port: relay });

  const payload = (n) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + n) & 0xff));
  // Up: a -> relay -> server, seen from an upstream socket of the relay, not from a.
  a.send(payload(1200), relay, '127.0.0.1');
  const upA = await next(server);
  assert.deepEqual(upA.data, payload(1200));
  assert.notEqual(upA.from.port, a.address().port);
  assert.notEqual(upA.from.port, relay);
  b.send(payload(77), relay, '127.0.0.1');
  const upB = await next(server);
  assert.deepEqual(upB.data, payload(77));
  assert.notEqual(upB.from.port, upA.from.port, 'another client, another upstream socket');
  // Down: server -> that upstream socket -> relay -> the client it stands for.
  server.send(payload(999), upB.from.port, '127.0.0.1');
  const downB = await next(b);
  assert.deepEqual(downB.data, payload(999));
  assert.equal(downB.from.port, relay, 'the client hears the relay');
  server.send(payload(3), upA.from.port, '127.0.0.1');
  assert.deepEqual((await next(a)).data, payload(3));
  // A second datagram from a takes the same upstream socket.
  a.send(payload(5), relay, '127.0.0.1');
  assert.equal((await next(server)).from.port, upA.from.port);

  // Loss down: the server's datagrams are counted and dropped; up still passes.
  path.set({ down: { loss: 1 } });
  server.send(payload(10), upA.from.port, '127.0.0.1');
  a.send(payload(11), relay, '127.0.0.1');
  assert.deepEqual((await next(server)).data, payload(11));
  await poll(2000, 'the drop is counted', () => path.stats().down.droppedLoss === 1);
  // A rate limit down: a burst of 20 x 1000 bytes at 400 kbit/s takes ~400 ms of serialisation;
  // it all arrives, in order, and more than a burst's worth of serialisation time is counted.
  path.set({ down: { loss: 0, rateKbps: 400, queueMs: 1000 } });
  const got = [];
  a.on('message', (d) => got.push(d[0]));
  for (let i = 0; i < 20; i++) server.send(Buffer.alloc(1000, i), upA.from.port, '127.0.0.1');
  await poll(5000, 'the burst arrives', () => got.length === 20);
  assert.deepEqual(got, Array.from({ length: 20 }, (_, i) => i));
  const stats = path.stats();
  assert.equal(stats.down.droppedLoss, 1);
  assert.equal(stats.down.forwarded, 2 + 20);
  assert.equal(stats.up.forwarded, 4);
  assert.equal(stats.clients.length, 2);

  await path.close();
  // The relay's port is free again: it can be bound.
  const again = dgram.createSocket('udp4');
  again.bind(relay, '127.0.0.1');
  await once(again, 'listening');
  again.close();
});

test('ImpairedPath: a rate limit paces a flood in real time', async (t) => {
  // Not a timing criterion of the host: the shaper's pacing is what is checked (bytes delivered
  // cannot exceed what the rate allows since the first one, plus one packet).
  const server = await udp();
  const client = await udp();
  t.after(() => [server, client].forEach((s) => s.close()));
  const path = await ImpairedPath.open({ target: { address: '127.0.0.1', port: server.address().port }, down: { rateKbps: 800, queueMs: 10_000 } });
  t.after(() => path.close());
  client.send(Buffer.from('hello'), path.port, '127.0.0.1');
  const { from } = await next(server);
  const arrivals = [];
  client.on('message', (d) => arrivals.push({ at: performance.now(), bytes: d.length }));
  for (let i = 0; i < 50; i++) server.send(Buffer.alloc(1000), from.port, '127.0.0.1');
  await poll(10_000, 'the flood arrives', () => arrivals.length === 50);
  // 50 kB at 800 kbit/s is 500 ms of serialisation: the last came at least ~490 ms after the first.
  const span = arrivals[49].at - arrivals[0].at;
  assert.ok(span >= 480, `the flood took ${span} ms, not paced at 800 kbit/s`);
});

// ---------------------------------------------------------------------------------------------

/** Video frames `browser` decoded from `peer` so far, and packets and bytes of both kinds. */
async function received(browser, peer) {
  const s = (await browser.sample())[peer] ?? {};
  return {
    frames: s.video?.framesDecoded ?? 0,
    packets: (s.video?.packetsReceived ?? 0) + (s.audio?.packetsReceived ?? 0),
    bytes: (s.video?.bytesReceived ?? 0) + (s.audio?.bytesReceived ?? 0),
  };
}

test('a Chromium subscriber behind an ImpairedPath decodes video, none while the path drops everything, again once it is clean, and overflows a narrow bottleneck', { timeout: 90_000 }, (t) =>
  scenario(t, async (sc) => {
    const server = await sc.server();
    const room = await server.convo('alice', ['bob']);
    const [alice, bob] = await sc.browsersOn(server, ['alice', 'bob']);
    const path = await ImpairedPath.open();
    t.after(() => path.close());
    await impairPage(bob.page, path);
    await bob.open(`${server.origin}/healthz`); // again, with the hook installed
    for (const b of [alice, bob]) {
      const joined = await b.join({ serverUrl: room.serverUrl, invitationCode: room.invitationCode, peer: b.name, token: await server.token(room.roomId, b.name) });
      assert.equal(joined.ok, true, `${b.name} joins: ${JSON.stringify(joined)}`);
    }
    await alice.publish();

    // Clean: bob decodes alice, over the relay and nothing else.
    const [, clean] = await expectMedia(bob, ['alice']);
    t.diagnostic(`clean: ${describeSample(bob, clean)}; relay ${JSON.stringify(path.stats())}`);
    const hook = await bob.evaluate(() => window.__uprtcImpair);
    assert.ok(hook.rewritten.length > 0, `the page's candidates were rewritten: ${JSON.stringify(hook)}`);
    const pair = await bob.evaluate(async () => {
      const report = (await window.e2e.room.stats()).subscribe;
      let found = null;
      report.forEach((r) => {
        if (r.type === 'transport' && r.selectedCandidatePairId) {
          const p = report.get(r.selectedCandidatePairId);
          const c = report.get(p.remoteCandidateId);
          found = { protocol: c.protocol, address: c.address, port: c.port };
        }
      });
      return found;
    });
    assert.deepEqual(pair, { protocol: 'udp', address: '127.0.0.1', port: path.port }, 'the subscription runs through the relay');
    const before = path.stats();
    const media = (k) => (clean.alice?.[k]?.bytesReceived ?? 0);
    // All the RTP payload bytes the page counted came through the relay (with their headers).
    assert.ok(before.down.bytes > media('video') + media('audio'), `the relay carried the media: ${JSON.stringify(before.down)}, the page received ${media('video')} + ${media('audio')} bytes`);
    assert.ok(before.up.forwarded > 0, 'and the page\'s side up');

    // Everything down is lost: once what was in the jitter buffer is played out, no frame more.
    path.set({ down: { loss: 1 } });
    let last = await received(bob, 'alice');
    const stalled = await poll(10_000, 'bob stops decoding', async () => {
      await sleep(700);
      const now = await received(bob, 'alice');
      const still = now.frames === last.frames && now.packets === last.packets;
      last = now;
      return still && now;
    });
    const { droppedLoss: droppedAtStall, forwarded: forwardedAtStall } = path.stats().down;
    await sleep(2000);
    const during = await received(bob, 'alice');
    const lossy = path.stats();
    const ice = () => bob.evaluate(() => `${window.e2e.room._subscriber.iceConnectionState}/${window.e2e.room._subscriber.connectionState}`);
    t.diagnostic(`bob's subscription while everything is dropped: ${await ice()}`);
    t.diagnostic(`100 % loss down: frames ${stalled.frames} then ${during.frames}, packets ${stalled.packets} then ${during.packets}; relay dropped ${lossy.down.droppedLoss}`);
    assert.equal(during.frames, stalled.frames, 'no frame decoded while everything is dropped');
    assert.equal(during.packets, stalled.packets, 'no packet received while everything is dropped');
    assert.ok(lossy.down.droppedLoss > droppedAtStall, `the relay keeps dropping what the SFU sends: ${JSON.stringify(lossy.down)}`);
    assert.equal(lossy.down.forwarded, forwardedAtStall, 'nothing forwarded down meanwhile');
    assert.ok(lossy.up.forwarded > before.up.forwarded, 'the page still talks to the SFU (RTCP, consent)');

    // Clean again: frames resume.
    path.set({ down: { loss: 0 } });
    const resumed = await poll(20_000, 'bob decodes again', async () => {
      const now = await received(bob, 'alice');
      return now.frames > during.frames + 10 && now;
    });
    const after = path.stats();
    t.diagnostic(`clean again: ${resumed.frames} frames, ${await ice()}; relay ${JSON.stringify(after.down)}`);
    assert.ok(after.down.forwarded > lossy.down.forwarded, 'the relay forwards again');

    // A bottleneck well below what the SFU sends (320x240 at 15 fps is ~150 kbit/s): the queue
    // overflows, and what it lets through stays within the rate (an upper bound: a slow host
    // only makes the window longer).
    const rateKbps = 48;
    const start = performance.now();
    const limited0 = path.stats().down;
    path.set({ down: { rateKbps } });
    const limited = await poll(10_000, 'the bottleneck drops at its queue', async () => {
      await sleep(500);
      const down = path.stats().down;
      return down.droppedQueue > limited0.droppedQueue + 5 && down;
    });
    const elapsed = performance.now() - start;
    const passed = limited.bytes - limited0.bytes;
    const allowed = (rateKbps / 8) * (elapsed + limited.params.queueMs) + 1500;
    t.diagnostic(`${rateKbps} kbit/s down: ${passed} bytes passed in ${Math.round(elapsed)} ms (at most ${Math.round(allowed)}), ${limited.droppedQueue - limited0.droppedQueue} dropped at the queue`);
    assert.ok(passed <= allowed, `the bottleneck let ${passed} bytes through in ${elapsed} ms, more than ${rateKbps} kbit/s allows`);
    assert.ok(passed > 0, 'and some');
    path.set({ down: { rateKbps: 0 } });
  }),
);
