// Per-subscriber adaptation with real Chromium on a real (userspace) bottleneck: a host
// publishes a 960x540 camera through the SDK (simulcast: 135, 270 and 540 lines); two
// subscribers receive it, `open` directly and `narrow` through an ImpairedPath (impair.js).
// Squeezing narrow's downlink to 400 kbit/s makes the SFU's estimate of it fall, and narrow
// decodes a lower layer while open keeps the highest and decodes on undisturbed; lifting the
// limit brings narrow back up within 10 s, neither stopping for a second while it switches up.
// (At the onset of the bottleneck narrow's own picture may stop until its estimate falls and
// a key frame of the lower layer comes: that freeze is reported in the diagnostics.)
// Checks read what the browsers decoded and counted, never a timing of the host.
import test from 'node:test';
import assert from 'node:assert/strict';
import { ImpairedPath, impairPage } from './impair.js';
import { describeSample, expectMedia, poll, scenario, sleep } from './lib.js';

const CAMERA = { width: 960, height: 540, frameRate: 15 };

/** What the server's congestion control decided for each subscriber (GET /debug/congestion). */
async function congestion(server) {
  const response = await fetch(`http://${server.api}/debug/congestion`, { headers: { authorization: `key=${server.secret}` } });
  const subscribers = await response.json();
  return subscribers.map((s) => `${s.peerId}: ${s.estimateBps} bit/s, allocated ${s.allocatedBps}, wanted ${s.wantedBps}, layers ${JSON.stringify(s.streams.map((l) => [l.current, l.pending, l.affordable]))}`).join('; ');
}

/** What `viewer` decodes of the host's video now. */
async function decoded(viewer) {
  const video = (await viewer.sample()).host?.video ?? {};
  return { height: video.frameHeight ?? 0, frames: video.framesDecoded ?? 0 };
}

/**
 * Samples `viewers` every 250 ms until `done(samples)` says so or `ms` pass, and returns the
 * samples, the longest stretch each decoded no new frame and how long it took, in samples' time.
 */
async function watch(viewers, ms, done) {
  const last = new Map();
  const longest = viewers.map(() => 0);
  const started = Date.now();
  for (;;) {
    const now = Date.now();
    const samples = await Promise.all(viewers.map((v) => decoded(v)));
    viewers.forEach((v, i) => {
      const seen = last.get(v.name);
      if (!seen || samples[i].frames > seen.frames) last.set(v.name, { frames: samples[i].frames, at: now });
      else longest[i] = Math.max(longest[i], now - seen.at);
    });
    if (done(samples)) return { samples, longest, elapsed: now - started };
    if (now - started > ms) throw new Error(`not within ${ms} ms; last ${JSON.stringify(samples)}`);
    await sleep(250);
  }
}

test('a subscriber behind a 400 kbit/s bottleneck gets a lower layer while another keeps the highest, and comes back up when it lifts', { timeout: 180_000 }, (t) =>
  scenario(t, async (sc) => {
    const server = await sc.server();
    const room = await server.convo('host', ['open', 'narrow']);
    const [host, open, narrow] = await sc.browsersOn(server, ['host', 'open', 'narrow']);
    const path = await ImpairedPath.open();
    t.after(() => path.close());
    await impairPage(narrow.page, path);
    await narrow.open(`${server.origin}/healthz`); // again, with the hook installed
    for (const b of [host, open, narrow]) {
      const joined = await b.join({ serverUrl: room.serverUrl, invitationCode: room.invitationCode, peer: b.name, token: await server.token(room.roomId, b.name) });
      assert.equal(joined.ok, true, `${b.name} joins: ${JSON.stringify(joined)}`);
    }
    await host.publish(CAMERA);
    for (const viewer of [open, narrow]) {
      const [, flowing] = await expectMedia(viewer, ['host']);
      t.diagnostic(describeSample(viewer, flowing));
    }
    const layers = await host.sent();
    t.diagnostic(`host sends ${JSON.stringify(layers)}`);

    // Both reach the highest layer on open links.
    const top = CAMERA.height;
    let run = await watch([open, narrow], 30_000, ([a, b]) => a.height === top && b.height === top);
    t.diagnostic(`both at ${top} lines; longest gaps ${run.longest} ms`);

    // 400 kbit/s down to narrow: it drops to a lower layer, open stays, undisturbed. Narrow's
    // own picture may freeze at the onset (the link overflows until its estimate falls and
    // the lower layer's key frame comes): reported, not judged.
    path.set({ down: { rateKbps: 400, queueMs: 300 } });
    run = await watch([open, narrow], 20_000, ([, b]) => b.height > 0 && b.height < top);
    const [openDuring, narrowDuring] = run.samples;
    t.diagnostic(`limited: narrow at ${narrowDuring.height} lines after ${run.elapsed} ms, open at ${openDuring.height}; longest gaps ${run.longest} ms; relay ${JSON.stringify(path.stats().down)}`);
    t.diagnostic(`congestion control: ${await congestion(server)}`);
    assert.equal(openDuring.height, top, 'the open subscriber keeps the highest layer');
    assert.ok(run.longest[0] < 1000, `the open subscriber decodes on: its longest gap ${run.longest[0]} ms`);
    await sleep(3000);
    const settled = await decoded(narrow);
    assert.ok(settled.height > 0 && settled.height < top, `narrow stays below the highest layer while limited: ${settled.height}`);
    assert.ok(settled.frames > narrowDuring.frames, `narrow decodes on: ${narrowDuring.frames} then ${settled.frames} frames`);
    assert.equal((await decoded(open)).height, top);

    // The limit lifts: narrow is back at the highest layer within 10 s.
    t.diagnostic(`host sends ${JSON.stringify(await host.sent())}`);
    t.diagnostic(`congestion control: ${await congestion(server)}`);
    path.set({ down: { rateKbps: 0 } });
    const timer = setInterval(async () => t.diagnostic(`congestion control: ${await congestion(server).catch((e) => e.message)}`), 2000);
    try {
      run = await watch([open, narrow], 10_000, ([, b]) => b.height === top);
    } finally {
      clearInterval(timer);
    }
    t.diagnostic(`lifted: narrow back at ${top} lines after ${run.elapsed} ms; longest gaps ${run.longest} ms`);
    assert.ok(run.longest.every((gap) => gap < 1000), `no decoding gap of a second while switching up: ${run.longest} ms`);
  }),
);
