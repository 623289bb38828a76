// Clients that vanish, through real stacks: a Chromium WHIP publisher killed with SIGKILL
// leaves its room when its ICE consent expires and may publish again at once; a signalling
// client in a network namespace of its own whose link goes down leaves within the ping
// timeout, while one that answers pings stays.
import test from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { expectMedia, poll, run, scenario, sleep } from './lib.js';

const TIMEOUT = { timeout: 180_000 };

/** Whether `peer` is connected to `roomId`, as the REST API says. */
async function joined(server, roomId, peer) {
  return (await server.ok('GET', `/room/${encodeURIComponent(roomId)}/peer/${encodeURIComponent(peer)}`)).joined;
}

/**
 * Publishes the page's fake camera and microphone over WHIP, as any WHIP encoder does
 * (runs in the page): resolves to the HTTP status, or `connected` once ICE and DTLS are up.
 */
async function whipPublish({ url, token }) {
  const pc = new RTCPeerConnection();
  const media = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 320, height: 240, frameRate: 15 } });
  for (const track of media.getTracks()) pc.addTransceiver(track, { direction: 'sendonly' });
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') resolve();
    pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve());
  });
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/sdp', authorization: `Bearer ${token}` },
    body: pc.localDescription.sdp,
  });
  if (response.status !== 201) return { status: response.status, body: await response.text() };
  await pc.setRemoteDescription({ type: 'answer', sdp: await response.text() });
  await new Promise((resolve, reject) => {
    const check = () => {
      if (pc.connectionState === 'connected') resolve();
      if (pc.connectionState === 'failed') reject(new Error('the WHIP connection failed'));
    };
    pc.addEventListener('connectionstatechange', check);
    check();
  });
  window.whip = pc;
  return { status: 201, connected: true };
}

test('a killed Chromium WHIP publisher leaves within the consent timeout and publishes again at once', TIMEOUT, (t) =>
  scenario(t, async (sc) => {
    const server = await sc.server();
    const room = await server.convo('alice', ['bob']);
    const url = `${server.origin}/whip/${encodeURIComponent(room.roomId)}`;
    const [alice, bob] = await sc.browsersOn(server, ['alice', 'bob']);
    await bob.join({ serverUrl: room.serverUrl, invitationCode: room.invitationCode, peer: 'bob', token: await server.token(room.roomId, 'bob') });
    assert.deepEqual(await alice.evaluate(whipPublish, { url, token: await server.token(room.roomId, 'alice') }), { status: 201, connected: true });
    await expectMedia(bob, ['alice']);

    // Killed: no DELETE, no DTLS close alert, no more consent checks.
    alice.child.kill('SIGKILL');
    await alice.exited;
    await bob.waitEvent('peer-left', { peer: 'alice' }, 45_000);
    assert.equal(await joined(server, room.roomId, 'alice'), false);
    assert.equal(await server.metric('uprtcd_transports_closed_total'), 1, 'one transport closed: the publisher\'s, by its consent');

    const [again] = await sc.browsersOn(server, ['alice-again']);
    assert.deepEqual(await again.evaluate(whipPublish, { url, token: await server.token(room.roomId, 'alice') }), { status: 201, connected: true });
    await bob.waitEvent('peer-joined', { peer: 'alice' });
    assert.equal(await joined(server, room.roomId, 'alice'), true);
  }),
);

test('a signalling client whose link goes down leaves within the ping timeout', TIMEOUT, (t) =>
  scenario(t, async (sc) => {
    // The client's own namespace, linked to this one by a veth pair on addresses of the test's
    // own: nothing leaves the machine.
    const suffix = randomBytes(3).toString('hex');
    const [serverLink, clientLink] = [`vs${suffix}`, `vc${suffix}`];
    const [serverAddress, clientAddress] = ['10.77.0.1', '10.77.0.2'];
    const dir = await mkdtemp(join(tmpdir(), 'uprtcd-e2e-link-'));
    t.after(async () => {
      await run('ip', ['link', 'del', serverLink]).catch(() => {});
      await rm(dir, { recursive: true, force: true });
    });
    const config = join(dir, 'uprtcd.toml');
    await writeFile(config, '[client]\nping_timeout_ms = 3000\n');

    // The client waits in its namespace for its end of the link, then for the room's URL.
    const urlFile = join(dir, 'url');
    const bob = sc.tool('unshare', ['--net', '--', 'python3', new URL('./ws_client.py', import.meta.url).pathname,
      '--link', clientLink, '--address', `${clientAddress}/30`, '--url-file', urlFile]);
    await run('ip', ['link', 'add', serverLink, 'type', 'veth', 'peer', 'name', clientLink, 'netns', String(bob.pid)]);
    await run('ip', ['addr', 'add', `${serverAddress}/30`, 'dev', serverLink]);
    await run('ip', ['link', 'set', serverLink, 'up']);
    await bob.next('link-up', 20_000);
    const server = await sc.server(['--config', config, '--client-listen', `${serverAddress}:0`]);
    const room = await server.convo('alice', ['bob']);
    const token = await server.token(room.roomId, 'bob');
    await writeFile(urlFile, `ws://${server.client}/${room.invitationCode}?peer=bob&token=${token}`);
    await bob.next('joined', 20_000);

    // Answering pings, it stays past the ping timeout.
    await sleep(5_000);
    assert.equal(await joined(server, room.roomId, 'bob'), true, 'a client that answers pings stays');

    // Its link goes down (a phone leaving the Wi-Fi): no FIN, no RST, just silence.
    await run('ip', ['link', 'set', serverLink, 'down']);
    await poll(20_000, 'bob to leave', async () => !(await joined(server, room.roomId, 'bob')));
    assert.equal(await server.metric('uprtcd_signalling_ping_timeouts_total'), 1);
  }),
);
