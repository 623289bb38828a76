// Live rooms with real Chromium: a host and a co-host watched by an audience spread over two
// workers, the co-host taken off the air; three merged rooms whose audience decodes every
// host, one merged track paused and resumed, and a separation; a playback room whose host is
// an uploaded recording. Each check reads what the
// receiving browser decoded (getStats).
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describeSample, expectMedia, poll, run, scenario } from './lib.js';

const TIMEOUT = { timeout: 150_000 };

/** A live room mastered by `host`, with its invitation code. */
async function liveRoom(server, host) {
  const { roomId, serverUrl } = await server.ok('POST', '/room/live', { masterId: host });
  const { invitationCode } = await server.ok('GET', `/room/${encodeURIComponent(roomId)}`);
  return { roomId, serverUrl, invitationCode };
}

async function joinAs(server, room, browser) {
  const joined = await browser.join({
    serverUrl: room.serverUrl,
    invitationCode: room.invitationCode,
    peer: browser.name,
    token: await server.token(room.roomId, browser.name),
  });
  assert.equal(joined.ok, true, `${browser.name} joins: ${JSON.stringify(joined)}`);
}

/** Video frames `browser` decoded from `peer` so far. */
async function framesFrom(browser, peer) {
  return (await browser.sample())[peer]?.video?.framesDecoded ?? 0;
}

/** The track id `browser` receives `peer`'s `kind` as. */
async function trackOf(browser, peer, kind) {
  const tracks = await browser.evaluate(() => window.e2e.room.remoteTracks.map(({ track, ...t }) => t));
  const found = tracks.find((t) => t.peer === peer && t.kind === kind);
  assert.ok(found, `${browser.name} receives ${peer}'s ${kind}: ${JSON.stringify(tracks)}`);
  return found.trackId;
}

test('a host and a co-host reach an audience on two workers; the removed co-host goes off the air', TIMEOUT, (t) =>
  scenario(t, async (sc) => {
    const server = await sc.server(['--workers', '2']);
    const room = await liveRoom(server, 'host');
    await server.ok('POST', `/room/${encodeURIComponent(room.roomId)}/live/member`, { peerId: 'cohost', kind: 'video' });
    const { serverAlias } = await server.ok('GET', `/room/${encodeURIComponent(room.roomId)}`);
    await server.ok('POST', `/room/${encodeURIComponent(room.roomId)}/live/mirror`, { serverAlias });
    const [host, cohost, viewer1, viewer2] = await sc.browsersOn(server, ['host', 'cohost', 'viewer1', 'viewer2']);
    for (const b of [host, cohost, viewer1, viewer2]) await joinAs(server, room, b);
    await Promise.all([host.publish(), cohost.publish()]);

    for (const viewer of [viewer1, viewer2]) {
      const [, second] = await expectMedia(viewer, ['host', 'cohost']);
      t.diagnostic(describeSample(viewer, second));
    }
    const mirrors = await server.ok('GET', `/room/${encodeURIComponent(room.roomId)}/live/mirrors`);
    assert.equal(mirrors.length, 1, JSON.stringify(mirrors));
    await poll(5000, "one viewer is served by the mirror's worker, fed by relayed packets", async () =>
      (await server.metric('uprtcd_worker_relayed_packets_in_total')) > 0);

    await server.ok('DELETE', `/room/${encodeURIComponent(room.roomId)}/live/member/cohost`);
    for (const viewer of [viewer1, viewer2]) {
      await viewer.waitEvent('track-removed', { peer: 'cohost' });
      const before = await framesFrom(viewer, 'host');
      await poll(10_000, `${viewer.name} keeps decoding the host`, async () => (await framesFrom(viewer, 'host')) > before);
    }
    const published = await cohost.evaluate(() => window.e2e.events.filter((e) => e.name === 'error').length);
    assert.equal(published, 0, 'the former co-host stays connected, without errors');
  }),
);

test('three merged rooms: the audience decodes every host, a paused merged track stops and resumes, a separated host leaves', TIMEOUT, (t) =>
  scenario(t, async (sc) => {
    const server = await sc.server();
    const rooms = await Promise.all(['anna', 'ben', 'cleo'].map((h) => liveRoom(server, h)));
    const [anna, ben, cleo, viewer] = await sc.browsersOn(server, ['anna', 'ben', 'cleo', 'viewer']);
    await Promise.all([anna, ben, cleo].map((b, i) => joinAs(server, rooms[i], b)));
    await Promise.all([anna, ben, cleo].map((b) => b.publish()));
    await joinAs(server, rooms[0], viewer);

    const merge = (a, b) =>
      server.ok('POST', `/room/${encodeURIComponent(rooms[a].roomId)}/live/merge`, { roomId: rooms[b].roomId });
    await merge(0, 1);
    await merge(1, 2);
    const [, second] = await expectMedia(viewer, ['anna', 'ben', 'cleo']);
    t.diagnostic(describeSample(viewer, second));

    const benVideo = await trackOf(viewer, 'ben', 'video');
    const mergeTrack = (action) =>
      server.ok('POST', `/room/${encodeURIComponent(rooms[0].roomId)}/live/${action}/mergeTrack/${benVideo}`);
    await mergeTrack('pause');
    // Frames already in the jitter buffer may still be decoded just after the pause.
    await sleep(1000);
    const paused = await framesFrom(viewer, 'ben');
    await sleep(2000);
    assert.equal(await framesFrom(viewer, 'ben'), paused, "ben's video stopped for room A's audience");
    assert.ok((await framesFrom(viewer, 'anna')) > 0, "anna's goes on");
    await mergeTrack('resume');
    await poll(10_000, "ben's video resumes", async () => (await framesFrom(viewer, 'ben')) > paused);

    await server.ok('POST', `/room/${encodeURIComponent(rooms[1].roomId)}/live/separate`, { roomId: rooms[2].roomId });
    await poll(10_000, "cleo's tracks leave the viewer", async () => {
      const tracks = await viewer.evaluate(() => window.e2e.room.remoteTracks.map((r) => r.peer));
      return !tracks.includes('cleo');
    });
    const [, after] = await expectMedia(viewer, ['anna', 'ben']);
    t.diagnostic(describeSample(viewer, after));
  }),
);

test('a playback room: a Chromium audience decodes the recording, and hears the room close', TIMEOUT, (t) =>
  scenario(t, async (sc) => {
    const server = await sc.server();
    const clip = join(server.dataDir, 'clip.webm');
    await run('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-y',
      '-f', 'lavfi', '-i', 'testsrc2=size=320x240:rate=25:duration=3',
      '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000:duration=3',
      '-c:v', 'libvpx', '-deadline', 'realtime', '-cpu-used', '8', '-b:v', '300k', '-c:a', 'libopus', clip]);
    const form = new FormData();
    form.append('file', new Blob([await readFile(clip)]), 'clip.webm');
    const uploaded = await (await fetch(`http://${server.api}/uprtc/api/v2/record/upload`, {
      method: 'POST', headers: { authorization: `key=${server.secret}` }, body: form,
    })).json();
    assert.equal(uploaded.code, 0, JSON.stringify(uploaded));
    const { recordId } = uploaded.data;
    // Looped, so that the browser has the time to start; the room is closed by hand below.
    const room = await server.ok('POST', '/record/playback', { recordId, loopPlay: true, endTime: Date.now() + 120_000 });
    const [viewer] = await sc.browsersOn(server, ['viewer']);
    await joinAs(server, room, viewer);
    const [, second] = await expectMedia(viewer, [recordId]);
    t.diagnostic(describeSample(viewer, second));
    await server.ok('DELETE', `/room/${encodeURIComponent(room.roomId)}`);
    await viewer.waitEvent('room-closed');
  }),
);
