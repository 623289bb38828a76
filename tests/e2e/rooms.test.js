// Room rules and the business server's events, seen by real browsers through the SDK:
// admission, kicks, room deletion, broadcast and per-peer messages. No media.
import test from 'node:test';
import assert from 'node:assert/strict';
import { poll, scenario, sleep } from './lib.js';

const TIMEOUT = { timeout: 90_000 };

/** A room with the given peers joined, one browser each. */
async function joinedRoom(sc, peers) {
  const server = await sc.server();
  const [master, ...members] = peers;
  const room = await server.convo(master, members);
  const browsers = await sc.browsersOn(server, peers);
  for (const [i, b] of browsers.entries()) {
    const joined = await b.join({
      serverUrl: room.serverUrl,
      invitationCode: room.invitationCode,
      peer: peers[i],
      token: await server.token(room.roomId, peers[i]),
      autoSubscribe: false,
    });
    assert.equal(joined.ok, true, `${peers[i]} joins: ${JSON.stringify(joined)}`);
    assert.equal(joined.roomId, room.roomId);
  }
  return { server, room, browsers };
}

test('a peer that was not invited is refused with 50003', TIMEOUT, (t) =>
  scenario(t, async (sc) => {
    const server = await sc.server();
    const room = await server.convo('alice', ['bob']);
    const [mallory] = await sc.browsersOn(server, ['mallory']);
    const refused = await mallory.join({
      serverUrl: room.serverUrl,
      invitationCode: room.invitationCode,
      peer: 'mallory',
      token: await server.token(room.roomId, 'mallory'),
    });
    assert.equal(refused.ok, false, JSON.stringify(refused));
    assert.equal(refused.code, 50003, JSON.stringify(refused));
    assert.ok(refused.msg, 'the refusal says why');
    const info = await server.ok('GET', `/room/${room.roomId}`);
    assert.equal(info.total, 0, 'nobody is connected');
  }),
);

test('a kick reaches exactly that browser, and deleting the room closes everyone', TIMEOUT, (t) =>
  scenario(t, async (sc) => {
    const { server, room, browsers } = await joinedRoom(sc, ['alice', 'bob', 'carol']);
    const [alice, bob, carol] = browsers;
    const id = room.roomId;
    await alice.waitEvent('peer-joined', { peer: 'carol' });

    await server.ok('DELETE', `/room/${id}/peer/bob`);
    await bob.waitEvent('kicked');
    await bob.waitEvent('closed');
    await alice.waitEvent('peer-left', { peer: 'bob' });
    await carol.waitEvent('peer-left', { peer: 'bob' });
    for (const b of [alice, carol]) {
      const names = (await b.events()).map((e) => e.name);
      assert.ok(!names.includes('kicked') && !names.includes('closed'), `${b.name} stays connected: ${names}`);
    }
    const info = await server.ok('GET', `/room/${id}`);
    assert.deepEqual([...info.memberIds].sort(), ['alice', 'carol']);
    assert.equal((await server.ok('GET', `/room/${id}/peer/bob`)).joined, false);
    // Those who stayed still hear the room.
    await server.ok('POST', `/room/${id}/message`, { after: 'kick' });
    await alice.waitEvent('message', { data: { after: 'kick' } });
    await carol.waitEvent('message', { data: { after: 'kick' } });

    // Bob comes back with a new token, then the room goes away under all three.
    const again = await bob.join({
      serverUrl: room.serverUrl,
      invitationCode: room.invitationCode,
      peer: 'bob',
      token: await server.token(id, 'bob'),
      autoSubscribe: false,
    });
    assert.equal(again.ok, true, JSON.stringify(again));
    await server.ok('DELETE', `/room/${id}`);
    for (const b of browsers) await b.waitEvent('room-closed');
    // Each session ends once: bob's first by the kick, every other by the room's deletion.
    const closes = { alice: 1, bob: 2, carol: 1 };
    for (const b of browsers) {
      const count = async () => (await b.events()).filter((e) => e.name === 'closed').length;
      await poll(10_000, `${b.name}'s sessions end`, async () => (await count()) === closes[b.name]);
    }
    assert.equal((await server.call('GET', `/room/${id}`)).code, 50001);
  }),
);

test('room messages reach every browser, peer messages exactly the named ones', TIMEOUT, (t) =>
  scenario(t, async (sc) => {
    const { server, room, browsers } = await joinedRoom(sc, ['alice', 'bob', 'carol']);
    const [alice, bob, carol] = browsers;
    const id = room.roomId;

    const broadcast = { hello: 'everyone', n: [1, 2, 3] };
    await server.ok('POST', `/room/${id}/message`, broadcast);
    for (const b of browsers) await b.waitEvent('message', { data: broadcast });

    await server.ok('POST', `/room/${id}/peers/message/`, { msg: 'for alice and carol', peers: ['alice', 'carol'] });
    await alice.waitEvent('message', { data: 'for alice and carol' });
    await carol.waitEvent('message', { data: 'for alice and carol' });
    // A session's events arrive in order: once bob has the next broadcast, he had all before it.
    await server.ok('POST', `/room/${id}/message`, 'last');
    await bob.waitEvent('message', { data: 'last' });
    await sleep(100);
    const seen = (await bob.events()).filter((e) => e.name === 'message').map((e) => e.payload.data);
    assert.deepEqual(seen, [broadcast, 'last'], 'bob gets the broadcasts only');
    for (const b of [alice, carol]) {
      await b.waitEvent('message', { data: 'last' });
      const got = (await b.events()).filter((e) => e.name === 'message').map((e) => e.payload.data);
      assert.deepEqual(got, [broadcast, 'for alice and carol', 'last'], `${b.name}'s messages`);
    }
  }),
);
