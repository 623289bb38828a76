// Client uploads of recordings from a real browser through the SDK's uploadRecording:
// MediaRecorder's WebM chunks streamed while recording, with the first connection cut in the
// middle (the SDK reconnects and resumes where the server says), and the same recording as a
// Blob; each download must be exactly what the browser recorded.
import test from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { scenario, within } from './lib.js';

const TIMEOUT = { timeout: 120_000 };

async function download(server, recordId) {
  const url = `http://${server.api}/uprtc/api/v2/record/download/${recordId}`;
  const response = await within(10_000, `GET ${url}`, fetch(url, { headers: { authorization: `key=${server.secret}` } }));
  assert.equal(response.status, 200, await response.clone().text());
  assert.equal(response.headers.get('content-type'), 'video/webm');
  return Buffer.from(await response.arrayBuffer());
}

test('a MediaRecorder WebM streamed with uploadRecording, cut and resumed, downloads as the same bytes', TIMEOUT, (t) =>
  scenario(t, async (sc) => {
    const server = await sc.server();
    const streamed = await server.ok('POST', '/record/client/upload');
    const asBlob = await server.ok('POST', '/record/client/upload');
    const [browser] = await sc.browsersOn(server, ['recorder']);
    const result = await browser.evaluate(async ([streamUrl, blobUrl]) => {
      const { uploadRecording } = await import('/uprtc.js');
      const media = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 320, height: 240, frameRate: 15 } });
      const recorder = new MediaRecorder(media, { mimeType: 'video/webm' });
      const recorded = [];
      const chunks = new TransformStream();
      const writer = chunks.writable.getWriter();
      recorder.ondataavailable = (e) => {
        recorded.push(e.data);
        writer.write(e.data);
      };
      recorder.onstop = () => writer.close();
      // The first upload connection is cut 1.5 s in, as a network that drops.
      const Native = window.WebSocket;
      let connections = 0;
      window.WebSocket = class extends Native {
        constructor(...args) {
          super(...args);
          if (connections++ === 0) setTimeout(() => this.close(), 1500);
        }
      };
      recorder.start(250);
      setTimeout(() => {
        recorder.stop();
        media.getTracks().forEach((track) => track.stop());
      }, 4000);
      const progress = [];
      const stored = await uploadRecording(streamUrl, chunks.readable, { onProgress: ({ sent }) => progress.push(sent) });
      window.WebSocket = Native;
      const blob = new Blob(recorded, { type: 'video/webm' });
      const hex = (buffer) => [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, '0')).join('');
      const sha256 = hex(await crypto.subtle.digest('SHA-256', await blob.arrayBuffer()));
      const fromBlob = await uploadRecording(blobUrl, blob);
      return { stored, fromBlob, size: blob.size, sha256, connections, progress: progress.length };
    }, [streamed.serverUrl, asBlob.serverUrl]);

    assert.ok(result.connections >= 2, `the upload reconnected: ${JSON.stringify(result)}`);
    assert.ok(result.size > 10_000, `something was recorded: ${JSON.stringify(result)}`);
    for (const [record, answer] of [[streamed, result.stored], [asBlob, result.fromBlob]]) {
      assert.deepEqual(answer, { recordId: record.recordId, size: result.size });
      const status = await server.ok('GET', `/record/${record.recordId}/status`);
      assert.equal(status.status, 6);
      const bytes = await download(server, record.recordId);
      assert.equal(bytes.length, result.size);
      assert.equal(createHash('sha256').update(bytes).digest('hex'), result.sha256, 'the same bytes');
    }
    assert.equal(await server.metric('uprtcd_record_client_uploads_total{result="stored"}'), 2);
  }),
);
