// Simulcast through the SFU with real browsers: a Chromium host publishes a 640x360 camera through
// the SDK, which sends it as simulcast layers by default; the SFU's answer takes them (the
// publisher's outbound-rtp stats show more than one rid encoding). A Chromium subscriber
// receives the highest layer, drops to the lowest when it asks for `low` (its decoded height
// falls) and comes back up on `high`, decoding all along. While nobody wants the highest layer
// the SFU has the host pause it (dynacast: the encoding goes inactive and encodes nothing), and
// resume it when the viewer asks again. Chromium sends each VP8 layer in three temporal layers
// (L1T3): on `frameRate: 'low'` the viewer decodes the base one only, a quarter of the frames,
// and all of them again on `high`. A headless Firefox playing the room over WHEP decodes video
// too (a player of a simulcast publisher once got audio only).
//
// The same from a second engine: headless Firefox (no driver: sdk_publisher.html, opened from its
// file, imports the SDK from the server and reports on stdout) publishes its fake 640x360 camera
// through the SDK; its outbound-rtp stats show two rid encodings, and a Chromium viewer decodes
// the highest, drops to the lowest on `low` and comes back on `high`. The SFU's `layers` message
// pauses Firefox's top encoding (its framesEncoded stops while the lowest goes on; Firefox's
// outbound-rtp has no `active`, its sender's getParameters() shows the SDK's) and resumes it.
//
// Firefox pairs only loopback with loopback and needs a default route to offer any candidate:
// the namespace gets one over loopback (`Scenario.defaultRouteOverLoopback`).
import test from 'node:test';
import assert from 'node:assert/strict';
import { describeSample, expectMedia, poll, scenario, sleep } from './lib.js';

const TIMEOUT = { timeout: 150_000 };
const CAMERA = { width: 640, height: 360, frameRate: 15 };

/** The height of the host's video the viewer decodes, with its frames decoded so far. */
async function decoded(viewer) {
  const video = (await viewer.sample()).host?.video ?? {};
  return { height: video.frameHeight ?? 0, frames: video.framesDecoded ?? 0, freezes: video.totalFreezesDuration ?? 0 };
}

/** Whether a publisher's video stats per rid show two simulcast layers or more encoding. */
function encodesLayers(sent) {
  return Object.entries(sent).filter(([rid, s]) => rid !== '' && s.framesEncoded > 0).length >= 2;
}

/**
 * The layers a publisher encodes, from its video stats per rid: the lowest and highest heights
 * and their rids. The full-size camera is among them, and they differ in size.
 */
function layerSizes(sent) {
  const encoding = Object.entries(sent).filter(([rid, s]) => rid !== '' && s.framesEncoded > 0);
  const heights = encoding.map(([, s]) => s.frameHeight);
  const [lowest, highest] = [Math.min(...heights), Math.max(...heights)];
  assert.equal(highest, CAMERA.height, `the full-size layer is among them: ${heights}`);
  assert.ok(lowest < highest, `layers of different sizes: ${heights}`);
  const rid = (height) => encoding.find(([, s]) => s.frameHeight === height)[0];
  return { lowest, highest, top: rid(highest), bottom: rid(lowest) };
}

/** The id of the host's video track the viewer receives. */
async function videoTrack(viewer) {
  const trackId = await viewer.evaluate(() => window.e2e.room.remoteTracks.find((r) => r.kind === 'video')?.trackId);
  assert.ok(trackId, 'the viewer receives the host video track');
  return trackId;
}

/** Waits until the viewer decodes the host's video `height` lines high (`what` it means); that sample. */
function decodesAt(viewer, height, what, ms = 15_000) {
  return poll(ms, `${what} (${height} high)`, async () => {
    const d = await decoded(viewer);
    return d.height === height ? d : undefined;
  });
}

test('a simulcast host reaches each viewer as the layer it asks for, and a WHEP player', TIMEOUT, (t) =>
  scenario(t, async (sc) => {
    await sc.defaultRouteOverLoopback();
    const server = await sc.server();
    const room = await server.convo('host', ['viewer', 'player']);
    const [host, viewer] = await sc.browsersOn(server, ['host', 'viewer']);
    for (const b of [host, viewer]) {
      const joined = await b.join({ serverUrl: room.serverUrl, invitationCode: room.invitationCode, peer: b.name, token: await server.token(room.roomId, b.name) });
      assert.equal(joined.ok, true, `${b.name} joins: ${JSON.stringify(joined)}`);
    }
    await host.publish(CAMERA);

    // The answer took the layers: the browser encodes more than one.
    const layers = await poll(20_000, 'the host encodes simulcast layers', async () => {
      const sent = await host.sent();
      return encodesLayers(sent) ? sent : undefined;
    });
    t.diagnostic(`host sends ${JSON.stringify(layers)}`);
    const { lowest, highest, top } = layerSizes(layers);

    const [, flowing] = await expectMedia(viewer, ['host']);
    t.diagnostic(describeSample(viewer, flowing));
    const trackId = await videoTrack(viewer);

    // The highest layer, then the lowest on `low`, then back up on `high`.
    await decodesAt(viewer, highest, 'the viewer decodes the highest layer', 20_000);
    await viewer.evaluate((id) => window.e2e.room.setVideoQuality(id, 'low'), trackId);
    const low = await decodesAt(viewer, lowest, 'the viewer drops to the lowest layer');
    // Nobody wants the top layer now: the host is told to pause it (after the SFU's 3 s hold).
    const paused = await poll(15_000, `the host pauses its ${top} layer`, async () => {
      const sent = (await host.sent())[top];
      return sent?.active === false ? sent : undefined;
    });
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const stillPaused = (await host.sent())[top];
    assert.equal(stillPaused.framesEncoded, paused.framesEncoded, `a paused layer encodes nothing: ${JSON.stringify(stillPaused)}`);
    await viewer.evaluate((id) => window.e2e.room.setVideoQuality(id, 'high'), trackId);
    await poll(10_000, `the host resumes its ${top} layer`, async () => {
      const sent = (await host.sent())[top];
      return sent?.active === true && sent.framesEncoded > paused.framesEncoded;
    });
    const high = await decodesAt(viewer, highest, 'the viewer comes back to the highest layer');
    assert.ok(high.frames > low.frames, `decoding went on: ${low.frames} then ${high.frames} frames`);
    t.diagnostic(`viewer: ${low.height} then ${high.height} high, ${high.frames} frames, frozen ${high.freezes} s in all`);

    // The base temporal layer only on `frameRate: 'low'`, every frame again without it.
    const framesIn = async (ms) => {
      const before = (await decoded(viewer)).frames;
      await sleep(ms);
      return (await decoded(viewer)).frames - before;
    };
    const full = await framesIn(2000);
    await viewer.evaluate((id) => window.e2e.room.setVideoQuality(id, 'high', { frameRate: 'low' }), trackId);
    await sleep(500);
    const base = await framesIn(2000);
    t.diagnostic(`frames decoded in 2 s: ${full} at full rate, ${base} on the base temporal layer; host sends ${JSON.stringify(await host.sent())}`);
    assert.ok(base > 0 && base <= full / 2, `fewer frames on frameRate low, decoding still: ${base} of ${full} in 2 s`);
    await viewer.evaluate((id) => window.e2e.room.setVideoQuality(id, 'high'), trackId);
    await poll(10_000, 'the viewer decodes every frame again', async () => (await framesIn(1000)) * 2 >= full * 0.8);

    // A WHEP player of the same room gets video, not audio alone.
    const firefox = await sc.firefoxWhep(server, room.roomId, await server.token(room.roomId, 'player'));
    await firefox.next('answered', 60_000);
    const first = await firefox.until('Firefox decodes the host video', 30_000, (l) => l.step === 'stats' && l.framesDecoded > 0 && l.audioPackets > 0);
    const more = await firefox.until('Firefox goes on decoding', 10_000, (l) => l.step === 'stats' && l.framesDecoded > first.framesDecoded);
    t.diagnostic(`Firefox over WHEP: ${more.framesDecoded} frames, ${more.audioPackets} audio packets`);
  }),
);

/** Firefox's fake camera (any size asked for) without a permission prompt. */
const FIREFOX_CAMERA = { 'media.navigator.streams.fake': true, 'media.navigator.permission.disabled': true };

/** The "sent" lines of the Firefox publisher page so far, oldest first. */
function sentLines(firefox) {
  return firefox.lines.filter((l) => l.startsWith('{"step":"sent"')).map((l) => JSON.parse(l));
}

/**
 * Waits for two "sent" lines of the Firefox publisher, at least a second apart and both after
 * `since` (page time), between which its layer `rid` encoded no frame: the encoding stopped.
 * Returns the two.
 */
function stopsEncoding(firefox, rid, since, ms) {
  const frames = (l) => l?.layers[rid]?.framesEncoded ?? 0;
  return poll(ms, `Firefox stops encoding its ${rid} layer`, async () => {
    const lines = sentLines(firefox).filter((l) => l.at > since);
    const last = lines.at(-1);
    const before = lines.findLast((l) => l.at <= last?.at - 1000);
    return before && frames(last) === frames(before) ? [before, last] : undefined;
  });
}

test('a Firefox simulcast host publishing through the SDK reaches a Chromium viewer as the layer it asks for', TIMEOUT, (t) =>
  scenario(t, async (sc) => {
    await sc.defaultRouteOverLoopback();
    const server = await sc.server();
    const room = await server.convo('host', ['viewer']);
    const [viewer] = await sc.browsersOn(server, ['viewer']);
    const joined = await viewer.join({ serverUrl: room.serverUrl, invitationCode: room.invitationCode, peer: 'viewer', token: await server.token(room.roomId, 'viewer') });
    assert.equal(joined.ok, true, `viewer joins: ${JSON.stringify(joined)}`);
    const firefox = await sc.firefoxPage('sdk_publisher.html', {
      sdk: `${server.origin}/uprtc.js`,
      serverUrl: room.serverUrl,
      invitationCode: room.invitationCode,
      peer: 'host',
      token: await server.token(room.roomId, 'host'),
      width: CAMERA.width,
      height: CAMERA.height,
    }, FIREFOX_CAMERA);

    const captured = await firefox.next('captured', 60_000);
    t.diagnostic(`Firefox captures ${JSON.stringify(captured.settings)}`);
    const published = await firefox.next('published', 20_000);
    t.diagnostic(`Firefox offers ${published.offer.join(' | ')}`);
    t.diagnostic(`uprtcd answers ${published.answer.join(' | ')}`);
    assert.ok(published.answer.some((l) => l.startsWith('a=simulcast:recv ')), 'the answer takes the layers');
    const fields = await firefox.next('outbound-rtp', 20_000).catch(() => null);
    t.diagnostic(`Firefox's video outbound-rtp has ${fields?.fields.join(', ')}`);

    // The answer took the layers: Firefox encodes more than one.
    const layers = await firefox.until('Firefox encodes simulcast layers', 20_000, (l) => (l.step === 'sent' && encodesLayers(l.layers) ? l : undefined));
    t.diagnostic(`Firefox sends ${JSON.stringify(layers.layers)}, encodings ${JSON.stringify(layers.encodings)}`);
    const { lowest, highest, top, bottom } = layerSizes(layers.layers);

    const [, flowing] = await expectMedia(viewer, ['host'], { audio: false });
    t.diagnostic(describeSample(viewer, flowing));
    const trackId = await videoTrack(viewer);

    await decodesAt(viewer, highest, 'the viewer decodes the highest layer', 20_000);
    await viewer.evaluate((id) => window.e2e.room.setVideoQuality(id, 'low'), trackId);
    const low = await decodesAt(viewer, lowest, 'the viewer drops to the lowest layer');
    // Nobody wants the top layer now: the SFU tells Firefox to pause it, and it stops encoding it.
    const pause = await firefox.until(`the SFU pauses Firefox's ${top} layer`, 15_000, (l) => l.step === 'layers' && !l.active.includes(top));
    assert.ok(pause.active.includes(bottom), `the lowest layer is never paused: ${JSON.stringify(pause)}`);
    const [before, paused] = await stopsEncoding(firefox, top, pause.at, 10_000);
    t.diagnostic(`after ${JSON.stringify(pause)} Firefox sends ${JSON.stringify(paused.layers)}, encodings ${JSON.stringify(paused.encodings)}`);
    assert.ok(paused.layers[bottom].framesEncoded > before.layers[bottom].framesEncoded, `the ${bottom} layer goes on: ${JSON.stringify([before.layers, paused.layers])}`);
    const pausedFrames = paused.layers[top]?.framesEncoded ?? 0;
    const meanwhile = await decoded(viewer);
    assert.ok(meanwhile.height === lowest && meanwhile.frames > low.frames, `the viewer goes on decoding the lowest layer: ${JSON.stringify([low, meanwhile])}`);

    await viewer.evaluate((id) => window.e2e.room.setVideoQuality(id, 'high'), trackId);
    const resume = await firefox.until(`the SFU resumes Firefox's ${top} layer`, 10_000, (l) => l.step === 'layers' && l.at > pause.at && l.active.includes(top));
    const resumed = await firefox.until(`Firefox encodes its ${top} layer again`, 10_000, (l) => l.step === 'sent' && l.at > resume.at && l.layers[top]?.framesEncoded > pausedFrames);
    t.diagnostic(`after ${JSON.stringify(resume)} Firefox sends ${JSON.stringify(resumed.layers)}, encodings ${JSON.stringify(resumed.encodings)}`);
    const high = await decodesAt(viewer, highest, 'the viewer comes back to the highest layer');
    assert.ok(high.frames > low.frames, `decoding went on: ${low.frames} then ${high.frames} frames`);
    t.diagnostic(`viewer: ${low.height} then ${high.height} high, ${high.frames} frames, frozen ${high.freezes} s in all`);
    const errors = firefox.lines.filter((l) => l.startsWith('{"step":"error"'));
    assert.deepEqual(errors, [], 'the SDK in Firefox reports no error');
    t.diagnostic(`uprtcd: ${await server.metric('uprtcd_layers_bound_total')} layers bound, ${await server.metric('uprtcd_layer_switches_total')} switches, ${await server.metric('uprtcd_layer_updates_total')} layers messages`);
  }),
);
