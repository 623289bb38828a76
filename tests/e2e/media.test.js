// Media through uprtcd between real Chromium peers (fake camera and microphone): the SDK in a
// three-way conversation, a TCP-only room, WHIP/WHEP with plain fetch, and the demo page.
// Each check reads what the receiving browser decoded (getStats), never a timing.
import test from 'node:test';
import assert from 'node:assert/strict';
import { describeSample, expectMedia, joinAndPublish, poll, scenario } from './lib.js';

const TIMEOUT = { timeout: 120_000 };

/** The selected candidate pair of the SDK's `which` connection ('publish' or 'subscribe'). */
function selectedPair(browser, which) {
  return browser.evaluate(async (w) => {
    const report = (await window.e2e.room.stats())[w];
    let pair = null;
    report?.forEach((r) => {
      if (r.type === 'transport' && r.selectedCandidatePairId) pair = report.get(r.selectedCandidatePairId);
    });
    if (!pair) return null;
    const side = (id) => {
      const c = report.get(id);
      return { protocol: c?.protocol, type: c?.candidateType, address: c?.address, port: c?.port, tcpType: c?.tcpType };
    };
    return { state: pair.state, local: side(pair.localCandidateId), remote: side(pair.remoteCandidateId) };
  }, which);
}

test('three browsers in a conversation each decode the video and receive the audio of the other two', TIMEOUT, (t) =>
  scenario(t, async (sc) => {
    const server = await sc.server();
    const peers = ['alice', 'bob', 'carol'];
    const room = await server.convo('alice', ['bob', 'carol']);
    const browsers = await sc.browsersOn(server, peers);
    await joinAndPublish(server, room, browsers);
    const samples = await Promise.all(browsers.map((b) => expectMedia(b, peers.filter((p) => p !== b.name))));
    for (const [i, b] of browsers.entries()) t.diagnostic(describeSample(b, samples[i][1]));
  }),
);

test('a TCP-only room (protocol 1) carries media over TCP', TIMEOUT, (t) =>
  scenario(t, async (sc) => {
    const server = await sc.server();
    const room = await server.convo('alice', ['bob'], { protocol: 1 });
    const browsers = await sc.browsersOn(server, ['alice', 'bob']);
    await joinAndPublish(server, room, browsers);
    const [alice, bob] = browsers;
    t.diagnostic(describeSample(bob, (await expectMedia(bob, ['alice']))[1]));
    t.diagnostic(describeSample(alice, (await expectMedia(alice, ['bob']))[1]));
    for (const b of browsers) {
      for (const which of ['publish', 'subscribe']) {
        const pair = await selectedPair(b, which);
        t.diagnostic(`${b.name} ${which}: ${pair?.local.protocol} ${pair?.local.type} -> ${pair?.remote.protocol} ${pair?.remote.address}:${pair?.remote.port}`);
        assert.equal(pair?.remote.protocol, 'tcp', `${b.name}'s ${which} connection must run over TCP: ${JSON.stringify(pair)}`);
      }
    }
  }),
);

test('WHIP publishes and WHEP plays with plain fetch, and DELETE on their Location ends them', TIMEOUT, (t) =>
  scenario(t, async (sc) => {
    const server = await sc.server();
    const room = await server.convo('alice', ['bob']);
    const [publisher, player] = await sc.browsersOn(server, ['whip', 'whep']);

    // The whole of a WHIP or WHEP client in plain page code: one peer connection, one fetch.
    const negotiate = async ({ kind, roomId, token }) => {
      const pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: 'max-bundle' });
      if (kind === 'whip') {
        const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 320, height: 240, frameRate: 15 } });
        for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
      } else {
        pc.addTransceiver('audio', { direction: 'recvonly' });
        pc.addTransceiver('video', { direction: 'recvonly' });
      }
      await pc.setLocalDescription(await pc.createOffer());
      const r = await fetch(`/${kind}/${encodeURIComponent(roomId)}`, {
        method: 'POST',
        headers: { 'content-type': 'application/sdp', authorization: `Bearer ${token}` },
        body: pc.localDescription.sdp,
      });
      const body = await r.text();
      const result = { status: r.status, location: r.headers.get('location'), contentType: r.headers.get('content-type'), body: body.slice(0, 400) };
      if (r.status === 201) await pc.setRemoteDescription({ type: 'answer', sdp: body });
      window[kind] = { pc, token, url: result.location && new URL(result.location, location.href).href };
      return result;
    };

    const whip = await publisher.evaluate(negotiate, { kind: 'whip', roomId: room.roomId, token: await server.token(room.roomId, 'alice') });
    assert.equal(whip.status, 201, `WHIP POST: ${JSON.stringify(whip)}`);
    assert.ok(whip.location, `WHIP answers a Location: ${JSON.stringify(whip)}`);
    assert.match(whip.contentType ?? '', /^application\/sdp/, 'WHIP answers SDP');
    assert.match(whip.body, /^v=0/, 'WHIP answers SDP');

    const whep = await player.evaluate(negotiate, { kind: 'whep', roomId: room.roomId, token: await server.token(room.roomId, 'bob') });
    assert.equal(whep.status, 201, `WHEP POST: ${JSON.stringify(whep)}`);
    assert.ok(whep.location, `WHEP answers a Location: ${JSON.stringify(whep)}`);
    assert.match(whep.body, /^v=0/, 'WHEP answers SDP');

    const decoded = () =>
      player.evaluate(async () => {
        let frames = 0;
        (await window.whep.pc.getStats()).forEach((r) => {
          if (r.type === 'inbound-rtp' && r.kind === 'video') frames += r.framesDecoded ?? 0;
        });
        return frames;
      });
    const first = await poll(20_000, 'WHEP player decodes frames', async () => {
      const frames = await decoded();
      return frames > 0 && frames;
    }).catch(async (e) => {
      const state = await player.evaluate(() => ({ ice: window.whep.pc.iceConnectionState, connection: window.whep.pc.connectionState }));
      throw new Error(`${e.message}: ${JSON.stringify(state)}`);
    });
    await poll(5000, 'WHEP frames keep coming', async () => (await decoded()) > first);
    t.diagnostic(`the WHEP player decoded ${await decoded()} frames`);

    const remove = (b, which) =>
      b.evaluate(async (w) => {
        const session = window[w];
        const r = await fetch(session.url, { method: 'DELETE', headers: { authorization: `Bearer ${session.token}` } });
        session.pc.close();
        return r.status;
      }, which);
    const deleted = [await remove(player, 'whep'), await remove(publisher, 'whip')];
    for (const status of deleted) assert.ok(status === 200 || status === 204, `DELETE Location answers ${deleted}`);
  }),
);

test('the demo page: one creates a room, the other joins with its code, both see both videos', TIMEOUT, (t) =>
  scenario(t, async (sc) => {
    const server = await sc.server();
    const [alice, bob] = await sc.browsersOn(server, ['alice', 'bob'], '/demo');
    await alice.page.fill('#peer', 'alice');
    await alice.page.click('#create');
    await alice.page.waitForFunction(() => document.querySelector('#code').textContent.trim() !== '', null, { timeout: 20_000 });
    const code = (await alice.page.textContent('#code')).trim();
    assert.match(code, /^[0-9]{9}$/);
    await bob.page.fill('#peer', 'bob');
    await bob.page.fill('#invitation', code);
    await bob.page.click('#join');

    const playing = (b) =>
      b.page
        .waitForFunction(
          () => {
            const tiles = [...document.querySelectorAll('#grid figure')];
            const ok = tiles.length === 2 && tiles.every((f) => {
              const v = f.querySelector('video');
              return v.videoWidth > 0 && v.currentTime > 0 && !v.paused;
            });
            return ok && tiles.map((f) => f.dataset.peer).sort().join(',');
          },
          null,
          { timeout: 25_000, polling: 250 },
        )
        .then((h) => h.jsonValue())
        .catch(async () => {
          const state = await b.page.evaluate(() => ({
            status: document.querySelector('#status').textContent,
            tiles: [...document.querySelectorAll('#grid figure')].map((f) => {
              const v = f.querySelector('video');
              return { peer: f.dataset.peer, width: v.videoWidth, time: v.currentTime, paused: v.paused };
            }),
          }));
          throw new Error(`${b.name}'s demo page does not play both videos: ${JSON.stringify(state)}`);
        });
    assert.deepEqual(await Promise.all([playing(alice), playing(bob)]), ['alice,bob', 'alice,bob']);
    // The remote video keeps playing.
    for (const b of [alice, bob]) {
      const other = b.name === 'alice' ? 'bob' : 'alice';
      const time = () => b.page.evaluate((p) => document.querySelector(`figure[data-peer="${p}"] video`).currentTime, other);
      const before = await time();
      await poll(5000, `${b.name} keeps playing ${other}`, async () => (await time()) > before);
    }
    await bob.page.click('#leave');
    await alice.page.waitForFunction(() => document.querySelectorAll('#grid figure').length === 1, null, { timeout: 10_000 });
  }),
);
