// Simulcast through the SFU with real browsers: a Chromium host publishes a 640x360 camera through
// the SDK, which sends it as simulcast layers by default; the SFU's answer takes them (the
// publisher's outbound-rtp stats show more than one rid encoding). A Chromium subscriber
// receives the highest layer, drops to the lowest when it asks for `low` (its decoded height
// falls) and comes back up on `high`, decoding all along. While nobody wants the highest layer
// the SFU has the host pause it (dynacast: the encoding goes inactive and encodes nothing), and
// resume it when the viewer asks again. A headless Firefox playing the room over WHEP decodes
// video too (a player of a simulcast publisher once got audio only).
//
// Firefox pairs only loopback with loopback and needs a default route to offer any candidate:
// the namespace gets one over loopback (`Scenario.defaultRouteOverLoopback`).
import test from 'node:test';
import assert from 'node:assert/strict';
import { describeSample, expectMedia, poll, scenario } from './lib.js';

const TIMEOUT = { timeout: 150_000 };
const CAMERA = { width: 640, height: 360, frameRate: 15 };

/** The height of the host's video the viewer decodes, with its frames decoded so far. */
async function decoded(viewer) {
  const video = (await viewer.sample()).host?.video ?? {};
  return { height: video.frameHeight ?? 0, frames: video.framesDecoded ?? 0, freezes: video.totalFreezesDuration ?? 0 };
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
      const encoding = Object.entries(sent).filter(([rid, s]) => rid !== '' && s.framesEncoded > 0);
      return encoding.length >= 2 ? sent : undefined;
    });
    t.diagnostic(`host sends ${JSON.stringify(layers)}`);
    const heights = Object.values(layers).filter((s) => s.framesEncoded > 0).map((s) => s.frameHeight);
    const [lowest, highest] = [Math.min(...heights), Math.max(...heights)];
    const top = Object.keys(layers).find((rid) => rid !== '' && layers[rid].frameHeight === highest);
    assert.equal(highest, CAMERA.height, `the full-size layer is among them: ${heights}`);
    assert.ok(lowest < highest, `layers of different sizes: ${heights}`);

    const [, flowing] = await expectMedia(viewer, ['host']);
    t.diagnostic(describeSample(viewer, flowing));
    const trackId = (await viewer.evaluate(() => window.e2e.room.remoteTracks.find((r) => r.kind === 'video')?.trackId));
    assert.ok(trackId, 'the viewer receives the host video track');

    // The highest layer, then the lowest on `low`, then back up on `high`.
    await poll(20_000, `the viewer decodes the highest layer (${highest} high)`, async () => (await decoded(viewer)).height === highest);
    await viewer.evaluate((id) => window.e2e.room.setVideoQuality(id, 'low'), trackId);
    const low = await poll(15_000, `the viewer drops to the lowest layer (${lowest} high)`, async () => {
      const d = await decoded(viewer);
      return d.height === lowest ? d : undefined;
    });
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
    const high = await poll(15_000, `the viewer comes back to the highest layer (${highest} high)`, async () => {
      const d = await decoded(viewer);
      return d.height === highest ? d : undefined;
    });
    assert.ok(high.frames > low.frames, `decoding went on: ${low.frames} then ${high.frames} frames`);
    t.diagnostic(`viewer: ${low.height} then ${high.height} high, ${high.frames} frames, frozen ${high.freezes} s in all`);

    // A WHEP player of the same room gets video, not audio alone.
    const firefox = await sc.firefoxWhep(server, room.roomId, await server.token(room.roomId, 'player'));
    await firefox.next('answered', 60_000);
    const first = await firefox.until('Firefox decodes the host video', 30_000, (l) => l.step === 'stats' && l.framesDecoded > 0 && l.audioPackets > 0);
    const more = await firefox.until('Firefox goes on decoding', 10_000, (l) => l.step === 'stats' && l.framesDecoded > first.framesDecoded);
    t.diagnostic(`Firefox over WHEP: ${more.framesDecoded} frames, ${more.audioPackets} audio packets`);
  }),
);
