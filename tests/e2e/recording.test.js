// Server-side recordings of real Chromium peers (fake camera and microphone): a conversation
// recorded as a grid, then again with one peer in the centre; each MP4 is downloaded and
// checked with ffprobe (size, codecs, duration) and by the brightness of its tiles.
import test from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { expectMedia, joinAndPublish, poll, scenario, sleep } from './lib.js';

const exec = promisify(execFile);
const TIMEOUT = { timeout: 240_000 };
const [WIDTH, HEIGHT] = [1280, 720];
/** The bottom sixth, where a centred layout puts its thumbnails (a fifth of the height). */
const BOTTOM_STRIP = [0, 600, WIDTH, HEIGHT];
/** Where a centred layout's 4:3 tile is, above the thumbnails. */
const CENTRE_TILE = [256, 0, 1024, 576];

/** Waits for the recording to reach `status`; fails at once on 7, with its reason. */
async function awaitStatus(server, recordId, status, ms) {
  await poll(ms, `recording ${recordId} reaches ${status}`, async () => {
    const envelope = await server.call('GET', `/record/${recordId}/status`);
    if (envelope.data?.status === 7) throw new Error(`recording ${recordId} failed: ${envelope.msg}`);
    return envelope.data?.status === status;
  });
}

/** Records the room for `seconds` with `options`, then downloads the MP4 into `dir`. */
async function record(server, roomId, options, seconds, dir) {
  const { recordId } = await server.ok('POST', '/record/start', { roomId, ...options });
  await awaitStatus(server, recordId, 2, 15_000);
  await sleep(seconds * 1000);
  await server.ok('POST', `/record/stop/${roomId}`);
  await awaitStatus(server, recordId, 6, 120_000);
  const response = await fetch(`http://${server.api}/uprtc/api/v2/record/download/${recordId}`, {
    headers: { authorization: `key=${server.secret}` },
  });
  assert.equal(response.status, 200);
  const file = join(dir, `${recordId}.mp4`);
  await writeFile(file, Buffer.from(await response.arrayBuffer()));
  return file;
}

/** ffprobe's streams and duration of `file`. */
async function probe(file) {
  const { stdout } = await exec('ffprobe', [
    '-v', 'error', '-show_entries', 'stream=codec_type,codec_name,width,height:format=duration', '-of', 'json', file,
  ]);
  const probed = JSON.parse(stdout);
  return {
    video: probed.streams.find((s) => s.codec_type === 'video'),
    audio: probed.streams.find((s) => s.codec_type === 'audio'),
    duration: Number(probed.format.duration),
  };
}

/**
 * The share of pixels above black (luma over 24; video black is 16) in each rectangle
 * [x0, x1) × [y0, y1) of the frame at `at` seconds.
 */
async function litShare(file, at, regions) {
  const { stdout } = await exec(
    'ffmpeg',
    ['-v', 'error', '-ss', at.toFixed(2), '-i', file, '-frames:v', '1', '-f', 'rawvideo', '-pix_fmt', 'gray', '-'],
    { encoding: 'buffer', maxBuffer: 4 * WIDTH * HEIGHT },
  );
  assert.equal(stdout.length, WIDTH * HEIGHT, 'one gray frame of the recording size');
  return regions.map(([x0, y0, x1, y1]) => {
    let lit = 0;
    for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) lit += stdout[y * WIDTH + x] > 24 ? 1 : 0;
    return lit / ((x1 - x0) * (y1 - y0));
  });
}

test('two browsers recorded as a grid and with one in the centre make 720p MP4s that show them', TIMEOUT, (t) =>
  scenario(t, async (sc) => {
    const server = await sc.server();
    const room = await server.convo('alice', ['bob']);
    const browsers = await sc.browsersOn(server, ['alice', 'bob']);
    await joinAndPublish(server, room, browsers);
    await expectMedia(browsers[0], ['bob']);
    const dir = await sc.scratch('recording');

    const grid = await record(server, room.roomId, { all: true }, 10, dir);
    const probed = await probe(grid);
    t.diagnostic(`grid: ${JSON.stringify(probed)}`);
    assert.equal(probed.video?.codec_name, 'h264');
    assert.deepEqual([probed.video.width, probed.video.height], [WIDTH, HEIGHT]);
    assert.equal(probed.audio?.codec_name, 'aac', 'the two microphones, mixed');
    assert.ok(Math.abs(probed.duration - 10) <= 1.5, `about the 10 s recorded: ${probed.duration} s`);
    // Side by side: both halves show a camera.
    const [left, right, strip] = await litShare(grid, probed.duration / 2, [
      [0, 0, WIDTH / 2, HEIGHT],
      [WIDTH / 2, 0, WIDTH, HEIGHT],
      BOTTOM_STRIP,
    ]);
    t.diagnostic(`grid: share of lit pixels ${[left, right, strip].map((l) => l.toFixed(3))} (left, right, bottom)`);
    // Chromium's fake camera draws a few bright shapes on black: a tile lights a few percent of
    // its half, an empty half none. The two 4:3 tiles leave the bottom strip black.
    for (const share of [left, right]) assert.ok(share > 0.02, `a tile in each half: ${left}, ${right}`);
    assert.ok(strip < 0.001, `nothing below the grid's tiles: ${strip}`);

    const centred = await record(server, room.roomId, { all: true, layout: 'bob' }, 4, dir);
    const second = await probe(centred);
    assert.deepEqual([second.video.width, second.video.height], [WIDTH, HEIGHT]);
    // Bob large in the centre above a row of thumbnails (alice's in the bottom strip). The
    // fake camera's shapes move, so each region counts its brightest of three frames.
    const shares = await Promise.all(
      [0.3, 0.5, 0.7].map((at) => litShare(centred, second.duration * at, [CENTRE_TILE, BOTTOM_STRIP])),
    );
    const [centre, thumbnails] = [0, 1].map((i) => Math.max(...shares.map((s) => s[i])));
    t.diagnostic(`centred: share of lit pixels ${centre.toFixed(3)} (centre tile), ${thumbnails.toFixed(4)} (bottom strip)`);
    assert.ok(centre > 0.02, `a tile in the centre: ${centre}`);
    assert.ok(thumbnails > 0.001, `a thumbnail below it: ${thumbnails}`);
  }),
);
