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
 *     'error'         {code, msg}     the server refused a message, or WebRTC failed here
 *                                     (code 50005)
 *
 *   await room.publish(mediaStream); // one sendonly transceiver per track; resolves once the
 *                                    // SFU's answer is applied. One publish per session.
 *   room.subscribe();                // sent by join unless {autoSubscribe: false}; idempotent
 *   await room.stats();              // {publish: RTCStatsReport|null, subscribe: RTCStatsReport|null}
 *   room.leave();                    // ends the session and closes both connections
 *
 * The SFU is ICE-lite and DTLS-passive with its candidates in the SDP, so there is no trickle
 * ICE: descriptions are sent as soon as they are set, and no ICE servers are used.
 */

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
    this.roomId = null;
    this.peers = new Set();
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

  /** Publishes the stream's tracks; resolves once the SFU's answer is applied. */
  async publish(stream) {
    if (this._closed) throw new UprtcError(INVALID_REQUEST, 'the session has ended');
    if (this._publisher) throw new UprtcError(INVALID_REQUEST, 'this session publishes already');
    const pc = new RTCPeerConnection(this._rtcConfiguration);
    this._publisher = pc;
    for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
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
