// An independent RTP stack through uprtcd: aiortc (PyPI) publishes a generated video stream
// and a tone over WHIP, and a Chromium subscriber on the SDK decodes them.
import test from 'node:test';
import { describeSample, expectMedia, scenario } from './lib.js';

const TIMEOUT = { timeout: 120_000 };

test('an aiortc WHIP publisher is decoded by a Chromium subscriber', TIMEOUT, (t) =>
  scenario(t, async (sc) => {
    const server = await sc.server();
    const room = await server.convo('alice', ['bob']);
    const [bob] = await sc.browsersOn(server, ['bob']);
    await bob.join({
      serverUrl: room.serverUrl,
      invitationCode: room.invitationCode,
      peer: 'bob',
      token: await server.token(room.roomId, 'bob'),
    });
    const publisher = sc.tool('python3', [
      new URL('./aiortc_whip.py', import.meta.url).pathname,
      '--url', `${server.origin}/whip/${encodeURIComponent(room.roomId)}`,
      '--token', await server.token(room.roomId, 'alice'),
      '--seconds', '60',
    ]);
    await publisher.next('connected', 20_000);
    const [, second] = await expectMedia(bob, ['alice']);
    t.diagnostic(describeSample(bob, second));
  }),
);
