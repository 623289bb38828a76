/**
 * uprtc.js — the uprtcd JavaScript SDK. An ES module without dependencies, served by uprtcd at
 * `GET /uprtc.js` (any origin may import it). It speaks signalling protocol v1
 * (docs/signalling.md) over one WebSocket and runs two RTCPeerConnections: one that publishes
 * (the client offers, the SFU answers) and one that subscribes (the SFU offers everything the
 * room publishes, now and later, and renegotiates on the same connection when that changes).
 *
 *   import { Room } from '/uprtc.js';
 *
 *   const room = await Room.join({ serverUrl, invitationCode, peer, token });
 *     // serverUrl and invitationCode as the REST API hands them out, token a join token
 *     // (docs/rest-api.md, "Join tokens"). Resolves on `joined`; rejects with an UprtcError
 *     // {code, msg}: the spec's code of a refused admission (50001, 50000, 50003, 50004,
 *     // 50012, 50022), or code -1 when the connection failed or timed out before an answer
 *     // (or when a page loaded over https is given a ws:// serverUrl, which browsers block).
 *     // An audience member whom a full origin node sends to a mirror on another node
 *     // (`redirect`) is connected there by join itself, at most three times; room.serverUrl
 *     // then names the node it is on.
 *     // Options: autoSubscribe (default true: subscribe() is sent on join),
 *     // rtcConfiguration (merged over the defaults below), timeoutMs (default 15000).
 *
 *   room.peer; room.roomId;
 *   room.peers;          // Set of the connected peer ids, this client's included
 *   room.published;      // [{peer, trackId, kind}]: what the other peers publish, as announced
 *   room.remoteTracks;   // [{peer, trackId, kind, mid, track}]: what this client receives
 *
 *   room.on(name, handler);   // returns room; room.off(name, handler) removes it
 *     'peer-joined'   {peer}
 *     'peer-left'     {peer}
 *     'message'       {data}          the business server's message (broadcast or to this peer)
 *     'kicked'                        DELETE /room/{id}/peer/{peerId}; 'closed' follows
 *     'room-closed'                   DELETE /room/{id}; 'closed' follows
 *     'closed'        {code, reason}  the session ended, whatever the cause (once)
 *     'track'         {peer, trackId, kind, track, stream}
 *                     a remote track arrived; `stream` is one MediaStream per remote peer
 *                     holding every track received from it. A 'track' handler added later is
 *                     called at once for each track already received.
 *     'track-added'   {peer, trackId, kind}  another peer published (media follows as 'track')
 *     'track-removed' {peer, trackId}        that track is gone (its publisher left)
 *     'speaker'       {peer, trackId}        the room's dominant speaker changed (`room.speaker`)
 *     'layers'        {mid, active}          the SFU paused or resumed published simulcast layers:
 *                                            only the rids `active` are sent now (applied already)
 *     'error'         {code, msg}     the server refused a message, or WebRTC failed here
 *                                     (code 50005)
 *
 *   await room.publish(mediaStream); // one sendonly transceiver per track; resolves once the
 *                                    // SFU's answer is applied. One publish per session.
 *                                    // Video as three simulcast layers unless
 *                                    // publish(stream, {simulcast: false}); layers that
 *                                    // nobody receives are paused (the SFU says which).
 *   room.subscribe();                // sent by join unless {autoSubscribe: false}; idempotent
 *   room.setVideoQuality(trackId, 'low'); // at most that simulcast layer of a received track
 *   room.setVideoQuality(trackId, 'high', { pinned: true }); // and its video goes first
 *   room.setVideoQuality(trackId, 'low', { frameRate: 'low' }); // a quarter of its frames
 *   await room.stats();              // {publish: RTCStatsReport|null, subscribe: RTCStatsReport|null}
 *   room.leave();                    // ends the session and closes both connections
 *
 * The SFU is ICE-lite and DTLS-passive with its candidates in the SDP, so there is no trickle
 * ICE: descriptions are sent as soon as they are set, and no ICE servers are used.
 *
 *   import { uploadRecording } from '/uprtc.js';
 *
 *   const { recordId, size } = await uploadRecording(url, blobOrStream, { onProgress });
 *     // url: serverUrl of POST /record/client/upload. Uploads a Blob, or a ReadableStream of
 *     // MediaRecorder's chunks as they come, over the upload protocol (docs/signalling.md),
 *     // reconnecting and resuming where the server says when the connection drops.
 */

/**
 * The simulcast layers a published camera is sent as, lowest first (the SFU orders `q`, `h`,
 * `f` so); the bitrates are each layer's ceiling, the browser's own estimate shares what its
 * uplink carries among them from the lowest up.
 */
const SIMULCAST_ENCODINGS = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];

/**
 * The simulcast encodings for a camera track: the full-size one and, below it, as many smaller
 * ones as its size is worth (browsers send at most two layers of a 640x360 picture and one of
 * 320x180, dropping the largest: the encodings asked for are the top ones, so that the full size
 * is always among them).
 */
function simulcastEncodings(track) {
  const { width = 0, height = 0 } = track.getSettings?.() ?? {};
  const pixels = width * height;
  const count = pixels >= 960 * 540 ? 3 : pixels >= 480 * 270 ? 2 : 1;
  return SIMULCAST_ENCODINGS.slice(SIMULCAST_ENCODINGS.length - count).map((e) => ({ ...e }));
}

/** Redirects to a mirror node one join follows at most (a loop between nodes ends). */
const MAX_REDIRECTS = 3;

const DEFAULT_RTC_CONFIGURATION = Object.freeze({
  iceServers: [],
  bundlePolicy: 'max-bundle',
  rtcpMuxPolicy: 'require',
});
const DEFAULT_TIMEOUT_MS = 15000;
/** Keeps idle proxies from closing the signalling socket. */
const PING_INTERVAL_MS = 25000;
/** The spec's "cannot establish the RTC connection": used for failures on this side. */
const RTC_FAILED = 50005;
const INVALID_REQUEST = 10003;
const INVALID_PARAMETER = 10002;
/** Not a spec code: the connection failed or timed out before the server answered. */
const NO_ANSWER = -1;

/** A refusal: the spec's `code` and a `msg` that says what was wrong. */
export class UprtcError extends Error {
  constructor(code, msg) {
    super(`${msg} (code ${code})`);
    this.name = 'UprtcError';
    this.code = code;
    this.msg = msg;
  }
}

function key(peer, trackId) {
  return `${peer}\u0000${trackId}`;
}

/**
 * Why a page cannot open `url`, or null: a page loaded over https may open wss:// only
 * (mixed content), and the browser's own error says little.
 */
function mixedContent(url) {
  if (globalThis.location?.protocol !== 'https:' || !/^ws:/i.test(url)) return null;
  return `serverUrl ${url.split('?')[0]} is ws:// but this page was loaded over https, and browsers block that: ` +
    'give the client listener a certificate (client.tls_cert and client.tls_key) so that serverUrl is wss://';
}

function signallingUrl(serverUrl, invitationCode, peer, token) {
  let base = String(serverUrl).replace(/^http(s?):/i, 'ws$1:');
  if (!base.endsWith('/')) base += '/';
  const query = new URLSearchParams({ peer, token });
  return `${base}${encodeURIComponent(String(invitationCode))}?${query}`;
}

/**
 * The tracks of an offer that names none (a server before the `tracks` field): one entry per
 * sending m-section, taken from its mid and msid; the publishing peer is unknown (null).
 */
function tracksFromSdp(sdp) {
  const tracks = [];
  for (const section of sdp.split(/\r?\nm=/).slice(1)) {
    const kind = section.split(' ', 1)[0];
    const mid = /\r?\na=mid:(\S+)/.exec(section)?.[1];
    const trackId = /\r?\na=msid:\S+ (\S+)/.exec(section)?.[1];
    if (mid !== undefined && (kind === 'audio' || kind === 'video') && !/\r?\na=inactive/.test(section)) {
      tracks.push({ mid, peer: null, trackId: trackId ?? `mid-${mid}`, kind });
    }
  }
  return tracks;
}

export class Room {
  /** Connects and resolves once admitted; see the comment at the top of this file. */
  static join(options) {
    return new Room(options)._connect();
  }

  /** Use Room.join. */
  constructor({ serverUrl, invitationCode, peer, token, autoSubscribe = true, rtcConfiguration, timeoutMs }) {
    if (!serverUrl || invitationCode === undefined || !peer || !token) {
      throw new UprtcError(INVALID_REQUEST, 'Room.join needs serverUrl, invitationCode, peer and token');
    }
    this.peer = String(peer);
    this.serverUrl = String(serverUrl);
    this.roomId = null;
    this._redirects = 0;
    this.peers = new Set();
    /** The peer the server judges the room's dominant speaker, once someone spoke. */
    this.speaker = null;
    this._url = signallingUrl(serverUrl, invitationCode, this.peer, token);
    this._autoSubscribe = autoSubscribe;
    this._rtcConfiguration = { ...DEFAULT_RTC_CONFIGURATION, ...rtcConfiguration };
    this._timeoutMs = timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this._handlers = new Map();
    this._ws = null;
    this._closed = false;
    this._pingTimer = null;
    this._publisher = null;
    this._pendingPublish = null;
    this._subscriber = null;
    this._subscribeSent = false;
    /** Offers are answered one after another, in the order they came. */
    this._offers = Promise.resolve();
    /** Changes of the published simulcast layers, applied one after the other. */
    this._layerChanges = Promise.resolve();
    /** mid → {peer, trackId, kind} of the latest offer. */
    this._offerTracks = new Map();
    /** key → {peer, trackId, kind}: announced by `joined` and `track-added`. */
    this._published = new Map();
    /** key → {peer, trackId, kind, mid, track}: received. */
    this._remote = new Map();
    /** peer → MediaStream of everything received from it. */
    this._streams = new Map();
    /** Keys the server said are gone: an offer made before it said so must not revive them. */
    this._gone = new Set();
  }

  get published() {
    return [...this._published.values()].map((t) => ({ ...t }));
  }

  get remoteTracks() {
    return [...this._remote.values()].map((t) => ({ ...t }));
  }

  on(name, handler) {
    if (!this._handlers.has(name)) this._handlers.set(name, new Set());
    this._handlers.get(name).add(handler);
    if (name === 'track') {
      for (const t of this._remote.values()) this._call(handler, this._trackEvent(t));
    }
    return this;
  }

  off(name, handler) {
    this._handlers.get(name)?.delete(handler);
    return this;
  }

  _emit(name, payload) {
    for (const handler of [...(this._handlers.get(name) ?? [])]) this._call(handler, payload);
  }

  _call(handler, payload) {
    try {
      handler(payload);
    } catch (e) {
      // One faulty handler must not stop the others nor the session.
      console.error('uprtc.js: event handler failed', e);
    }
  }

  _connect() {
    return new Promise((resolve, reject) => {
      let admitted = false;
      const refuse = (code, msg) => {
        if (admitted || this._closed) return;
        this._closed = true;
        clearTimeout(timer);
        try {
          this._ws.close();
        } catch {
          // Already closing.
        }
        reject(new UprtcError(code, msg));
      };
      const blocked = mixedContent(this._url);
      if (blocked) {
        this._closed = true;
        reject(new UprtcError(NO_ANSWER, blocked));
        return;
      }
      const timer = setTimeout(() => refuse(NO_ANSWER, `no answer from ${this._url} within ${this._timeoutMs} ms`), this._timeoutMs);
      let ws;
      try {
        ws = new WebSocket(this._url);
      } catch (e) {
        clearTimeout(timer);
        reject(new UprtcError(NO_ANSWER, `cannot connect: ${e.message ?? e}`));
        return;
      }
      this._ws = ws;
      ws.onmessage = (event) => {
        let message;
        try {
          message = JSON.parse(event.data);
        } catch {
          return;
        }
        if (admitted) {
          this._dispatch(message);
        } else if (message.type === 'joined') {
          admitted = true;
          clearTimeout(timer);
          this._joined(message);
          resolve(this);
          if (this._autoSubscribe) this.subscribe();
        } else if (message.type === 'redirect' && this._redirects < MAX_REDIRECTS) {
          // Sent instead of `joined`: join the room's mirror where the server says, anew.
          this._redirects += 1;
          clearTimeout(timer);
          ws.onclose = null;
          ws.onmessage = null;
          try {
            ws.close();
          } catch {
            // Already closing.
          }
          this.serverUrl = String(message.serverUrl);
          this._url = signallingUrl(message.serverUrl, message.invitationCode, this.peer, message.token);
          this._connect().then(resolve, reject);
        } else if (message.type === 'error') {
          refuse(message.code, message.msg);
        }
      };
      ws.onclose = (event) => {
        if (admitted) this._shutdown(event.code, event.reason);
        else refuse(NO_ANSWER, `the connection closed before admission (WebSocket code ${event.code})`);
      };
    });
  }

  _joined(message) {
    this.roomId = message.room;
    this.peer = message.peer ?? this.peer;
    this.peers = new Set(message.peers ?? []);
    for (const t of message.tracks ?? []) this._published.set(key(t.peer, t.trackId), { peer: t.peer, trackId: t.trackId, kind: t.kind });
    this._pingTimer = setInterval(() => this._send({ type: 'ping' }), PING_INTERVAL_MS);
  }

  _send(message) {
    if (this._ws && this._ws.readyState === WebSocket.OPEN) this._ws.send(JSON.stringify(message));
  }

  _dispatch(message) {
    switch (message.type) {
      case 'peer-joined':
        this.peers.add(message.peer);
        this._emit('peer-joined', { peer: message.peer });
        break;
      case 'peer-left':
        this.peers.delete(message.peer);
        // Whoever left publishes nothing any more, whether or not the server says so per track.
        for (const t of [...this._remote.values()]) if (t.peer === message.peer) this._removeRemote(t.peer, t.trackId);
        for (const [k, t] of [...this._published]) if (t.peer === message.peer) this._published.delete(k);
        this._emit('peer-left', { peer: message.peer });
        break;
      case 'message':
        this._emit('message', { data: message.data });
        break;
      case 'kicked':
      case 'room-closed':
        this._emit(message.type, {});
        break;
      case 'track-added': {
        const t = { peer: message.peer, trackId: message.trackId, kind: message.kind };
        this._gone.delete(key(t.peer, t.trackId));
        this._published.set(key(t.peer, t.trackId), t);
        this._emit('track-added', { ...t });
        break;
      }
      case 'track-removed':
        this._gone.add(key(message.peer, message.trackId));
        this._published.delete(key(message.peer, message.trackId));
        this._removeRemote(message.peer, message.trackId);
        break;
      case 'speaker':
        this.speaker = message.peer;
        this._emit('speaker', { peer: message.peer, trackId: message.trackId });
        break;
      case 'layers':
        this._layerChanges = this._layerChanges.then(() => this._sendLayers(message.mid, message.active));
        break;
      case 'offer':
        this._offers = this._offers.then(() => this._answerOffer(message));
        break;
      case 'answer':
        if (this._pendingPublish) this._pendingPublish.resolve(message.sdp);
        break;
      case 'error':
        // Errors are not tied to a request; one that comes while a publish waits is its answer.
        if (this._pendingPublish) this._pendingPublish.reject(new UprtcError(message.code, message.msg));
        this._emit('error', { code: message.code, msg: message.msg });
        break;
      default:
        // 'subscribed', 'pong' and anything newer than this SDK need nothing here.
        break;
    }
  }

  /**
   * Publishes the stream's tracks; resolves once the SFU's answer is applied. Video goes as
   * simulcast unless `{simulcast: false}`: encodings of the camera at full, half and a quarter
   * size (two of them from 480x270, three from 960x540; smaller cameras send one), of which the
   * SFU sends each subscriber the best its link carries.
   */
  async publish(stream, { simulcast = true } = {}) {
    if (this._closed) throw new UprtcError(INVALID_REQUEST, 'the session has ended');
    if (this._publisher) throw new UprtcError(INVALID_REQUEST, 'this session publishes already');
    const pc = new RTCPeerConnection(this._rtcConfiguration);
    this._publisher = pc;
    for (const track of stream.getTracks()) {
      const init = { direction: 'sendonly', streams: [stream] };
      const encodings = simulcast && track.kind === 'video' ? simulcastEncodings(track) : [];
      if (encodings.length > 1) init.sendEncodings = encodings;
      pc.addTransceiver(track, init);
    }
    await pc.setLocalDescription(await pc.createOffer());
    const sdp = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(reject, new UprtcError(NO_ANSWER, `no answer to publish within ${this._timeoutMs} ms`)), this._timeoutMs);
      const done = (settle, value) => {
        clearTimeout(timer);
        this._pendingPublish = null;
        settle(value);
      };
      this._pendingPublish = { resolve: (v) => done(resolve, v), reject: (e) => done(reject, e) };
      this._send({ type: 'publish', sdp: pc.localDescription.sdp });
    });
    try {
      await pc.setRemoteDescription({ type: 'answer', sdp });
    } catch (e) {
      throw new UprtcError(RTC_FAILED, `cannot apply the SFU's answer: ${e.message ?? e}`);
    }
  }

  /**
   * Sends only the simulcast layers (rids) `active` of the published section `mid`: the SFU
   * pauses the layers nobody receives and resumes them when somebody could.
   */
  async _sendLayers(mid, active) {
    const transceiver = this._publisher?.getTransceivers().find((t) => t.mid === mid);
    if (!transceiver || !Array.isArray(active)) return;
    const params = transceiver.sender.getParameters();
    if (!params.encodings?.some((e) => e.rid)) return;
    for (const encoding of params.encodings) encoding.active = active.includes(encoding.rid);
    try {
      await transceiver.sender.setParameters(params);
      this._emit('layers', { mid, active: [...active] });
    } catch (e) {
      if (!this._closed) this._emit('error', { code: RTC_FAILED, msg: `cannot change the simulcast layers sent: ${e.message ?? e}` });
    }
  }

  /**
   * The highest simulcast layer wanted of a received video track: 'low', 'medium' or 'high'
   * (the default). `{frameRate}`: 'low', 'medium' or 'high' (the default), a quarter, half or
   * all of the layer's frames when its publisher sends VP8 temporal layers. `{pinned: true}`:
   * the track's view matters most (pinned, or the main one), so its video takes this client's
   * bandwidth before the others'. A track without layers ignores it.
   */
  setVideoQuality(trackId, quality, { frameRate = 'high', pinned = false } = {}) {
    const levels = ['low', 'medium', 'high'];
    if (!levels.includes(quality)) throw new UprtcError(INVALID_PARAMETER, `quality is low, medium or high, not ${quality}`);
    if (!levels.includes(frameRate)) throw new UprtcError(INVALID_PARAMETER, `frameRate is low, medium or high, not ${frameRate}`);
    this._send({ type: 'video-quality', trackId, quality, frameRate, pinned: Boolean(pinned) });
  }

  /** Asks for everything the room publishes, now and later. */
  subscribe() {
    if (this._subscribeSent || this._closed) return;
    this._subscribeSent = true;
    this._send({ type: 'subscribe' });
  }

  async _answerOffer({ sdp, tracks }) {
    if (this._closed) return;
    try {
      if (!this._subscriber) {
        this._subscriber = new RTCPeerConnection(this._rtcConfiguration);
        this._subscriber.ontrack = (event) => {
          const info = this._offerTracks.get(event.transceiver?.mid);
          if (info) this._addRemote(info, event.track, event.transceiver.mid);
        };
      }
      const pc = this._subscriber;
      this._offerTracks = new Map((tracks ?? tracksFromSdp(sdp)).map((t) => [String(t.mid), t]));
      await pc.setRemoteDescription({ type: 'offer', sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      this._send({ type: 'answer', sdp: pc.localDescription.sdp });
      this._reconcile(pc);
    } catch (e) {
      if (!this._closed) this._emit('error', { code: RTC_FAILED, msg: `cannot answer the SFU's offer: ${e.message ?? e}` });
    }
  }

  /** Makes the received tracks match the latest offer, whatever 'track' events fired. */
  _reconcile(pc) {
    const offered = new Set();
    for (const transceiver of pc.getTransceivers()) {
      const info = transceiver.mid === null ? undefined : this._offerTracks.get(transceiver.mid);
      if (!info || transceiver.stopped) continue;
      offered.add(key(info.peer, info.trackId));
      this._addRemote(info, transceiver.receiver.track, transceiver.mid);
    }
    for (const t of [...this._remote.values()]) {
      if (!offered.has(key(t.peer, t.trackId))) this._removeRemote(t.peer, t.trackId);
    }
  }

  _addRemote(info, track, mid) {
    const k = key(info.peer, info.trackId);
    if (this._gone.has(k) || this._closed) return;
    const known = this._remote.get(k);
    if (known && known.track === track) return;
    if (known) this._removeRemote(info.peer, info.trackId);
    const entry = { peer: info.peer, trackId: info.trackId, kind: info.kind ?? track.kind, mid, track };
    this._remote.set(k, entry);
    let stream = this._streams.get(info.peer);
    if (!stream) {
      stream = new MediaStream();
      this._streams.set(info.peer, stream);
    }
    stream.addTrack(track);
    this._emit('track', this._trackEvent(entry));
  }

  _trackEvent(entry) {
    const { peer, trackId, kind, track } = entry;
    return { peer, trackId, kind, track, stream: this._streams.get(peer) };
  }

  _removeRemote(peer, trackId) {
    const k = key(peer, trackId);
    const entry = this._remote.get(k);
    if (!entry) return;
    this._remote.delete(k);
    const stream = this._streams.get(peer);
    if (stream) {
      stream.removeTrack(entry.track);
      if (stream.getTracks().length === 0) this._streams.delete(peer);
    }
    this._emit('track-removed', { peer, trackId });
  }

  async stats() {
    const [publish, subscribe] = await Promise.all([
      this._publisher ? this._publisher.getStats() : null,
      this._subscriber ? this._subscriber.getStats() : null,
    ]);
    return { publish, subscribe };
  }

  /** Ends the session: tells the server, closes the socket and both connections. */
  leave() {
    if (this._closed) return;
    this._send({ type: 'leave' });
    try {
      this._ws.close(1000, 'left');
    } catch {
      // Already closing.
    }
    this._shutdown(1000, 'left');
  }

  _shutdown(code, reason) {
    if (this._closed) return;
    this._closed = true;
    clearInterval(this._pingTimer);
    this._pendingPublish?.reject(new UprtcError(INVALID_REQUEST, 'the session has ended'));
    for (const pc of [this._publisher, this._subscriber]) pc?.close();
    this._emit('closed', { code, reason });
  }
}

/** Bytes per binary frame of a client upload (the server takes up to 1 MiB). */
const UPLOAD_FRAME_BYTES = 256 * 1024;
/** Frames the socket may hold unsent before the upload waits for it to drain. */
const UPLOAD_HIGH_WATER_BYTES = 4 * UPLOAD_FRAME_BYTES;
/** While a stream has nothing new, an empty frame this often keeps the upload from idling out. */
const UPLOAD_KEEPALIVE_MS = 10000;
/** Waits between attempts of an upload, the last repeated. */
const UPLOAD_RETRY_MS = [250, 500, 1000, 2000, 4000];
/** Close reasons after which trying again cannot help. */
const UPLOAD_FINAL = new Set(['bad_token', 'expired_token', 'wrong_record', 'too_large', 'not_media', 'failed']);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function asBytes(value) {
  if (value instanceof ArrayBuffer) return Promise.resolve(new Uint8Array(value));
  if (ArrayBuffer.isView(value)) return Promise.resolve(new Uint8Array(value.buffer, value.byteOffset, value.byteLength));
  if (value instanceof Blob) return value.arrayBuffer().then((b) => new Uint8Array(b));
  return Promise.reject(new TypeError('a stream given to uploadRecording must yield Blobs, ArrayBuffers or typed arrays'));
}

/** The bytes of a Blob, read from any offset. */
function blobSource(blob) {
  return {
    total: blob.size,
    release() {},
    async at(position) {
      if (position >= blob.size) return null;
      return new Uint8Array(await blob.slice(position, position + UPLOAD_FRAME_BYTES).arrayBuffer());
    },
  };
}

/**
 * The bytes of a ReadableStream (or async iterable), read once; what the server has not yet
 * said it received is kept, so that a resume can send it again.
 */
function streamSource(stream) {
  const iterator = typeof stream.getReader === 'function'
    ? (async function* chunks(reader) {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        yield value;
      }
    })(stream.getReader())
    : stream[Symbol.asyncIterator]();
  const kept = []; // [{start, bytes}] in order, from `keptFrom` to `read`
  let keptFrom = 0;
  let read = 0;
  let ended = false;
  let pending = null; // the stream's next chunk, awaited by whoever asks next
  return {
    total: null,
    release(offset) {
      while (kept.length && kept[0].start + kept[0].bytes.byteLength <= offset) {
        keptFrom = kept[0].start + kept[0].bytes.byteLength;
        kept.shift();
      }
    },
    /** The frame at `position`, null at the end, or undefined when nothing came within `waitMs`. */
    async at(position, waitMs) {
      if (position < keptFrom) throw new UprtcError(INVALID_REQUEST, `cannot resume at byte ${position}`);
      while (position >= read) {
        if (ended) return null;
        if (!pending) {
          pending = iterator.next().then(async (got) => {
            if (got.done) {
              ended = true;
            } else {
              const bytes = await asBytes(got.value);
              if (bytes.byteLength) kept.push({ start: read, bytes });
              read += bytes.byteLength;
            }
            pending = null;
          });
        }
        if (await Promise.race([pending.then(() => true), sleep(waitMs).then(() => false)]) === false) return undefined;
      }
      const chunk = kept.find((c) => c.start + c.bytes.byteLength > position);
      const from = position - chunk.start;
      return chunk.bytes.subarray(from, Math.min(chunk.bytes.byteLength, from + UPLOAD_FRAME_BYTES));
    },
  };
}

/** One connection of an upload: resolves with `stored`, rejects with an UprtcError whose `retry` says whether another connection may succeed. */
function uploadOnce(url, source, onProgress, timeoutMs) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    let refusal = null;
    let settled = false;
    const timer = setTimeout(() => ws.close(), timeoutMs);
    const settle = (f) => { if (!settled) { settled = true; clearTimeout(timer); f(); } };
    async function pump(offset) {
      let position = offset;
      for (;;) {
        const bytes = await source.at(position, UPLOAD_KEEPALIVE_MS);
        if (ws.readyState !== WebSocket.OPEN) return;
        if (bytes === null) break;
        ws.send(bytes ?? new Uint8Array(0));
        position += bytes?.byteLength ?? 0;
        onProgress?.({ sent: position, total: source.total });
        while (ws.bufferedAmount > UPLOAD_HIGH_WATER_BYTES && ws.readyState === WebSocket.OPEN) await sleep(20);
      }
      ws.send(JSON.stringify({ type: 'done', size: position }));
    }
    ws.onmessage = (event) => {
      if (typeof event.data !== 'string') return;
      const message = JSON.parse(event.data);
      if (message.type === 'upload') {
        clearTimeout(timer);
        pump(message.offset).catch((e) => { settle(() => reject(e)); ws.close(); });
      } else if (message.type === 'received') {
        source.release(message.offset);
      } else if (message.type === 'stored') {
        settle(() => resolve({ recordId: message.recordId, size: message.size }));
      } else if (message.type === 'error') {
        refusal = message;
      }
    };
    ws.onclose = (event) => settle(() => {
      const error = new UprtcError(refusal?.code ?? NO_ANSWER, refusal?.msg ?? `the upload connection closed (${event.code})`);
      error.retry = !UPLOAD_FINAL.has(event.reason);
      reject(error);
    });
  });
}

/**
 * Uploads a recording to the WebSocket URL of `POST /record/client/upload` (docs/sdk.md): a Blob
 * (a File, a recorded Blob) or a ReadableStream / async iterable of Blobs or byte arrays (e.g.
 * MediaRecorder's chunks as they come). Reconnects when the connection drops and resumes at the
 * offset the server announces. Resolves with {recordId, size} once the server stored the file
 * (status 6); rejects with an UprtcError: 50000 (the URL's token is wrong or expired), 10002
 * (not media, or over the size cap), 10003, or -1 when no connection succeeded.
 * Options: onProgress({sent, total}) after each frame (total null for a stream),
 * timeoutMs per connection attempt (default 15000), attempts (default 8).
 */
export async function uploadRecording(url, source, { onProgress, timeoutMs = DEFAULT_TIMEOUT_MS, attempts = 8 } = {}) {
  const blocked = mixedContent(url);
  if (blocked) throw new UprtcError(NO_ANSWER, blocked);
  const input = source instanceof Blob ? blobSource(source) : streamSource(source);
  for (let attempt = 0; ; attempt++) {
    try {
      return await uploadOnce(url, input, onProgress, timeoutMs);
    } catch (error) {
      if (!error.retry || attempt + 1 >= attempts) throw error;
    }
    await sleep(UPLOAD_RETRY_MS[Math.min(attempt, UPLOAD_RETRY_MS.length - 1)]);
  }
}
