// A userspace network impairment for the end-to-end tests (this kernel has no `tc netem`):
// a bottleneck model in virtual time (Shaper), a UDP relay that puts one WebRTC client behind
// two of them (ImpairedPath), and a page hook that makes Chromium reach the SFU only through
// such a relay (impairPage). No dependencies beyond Node; the relay never parses what it carries
// (STUN, DTLS and SRTP pass byte for byte).
//
//   import { ImpairedPath, impairPage } from './impair.js';
//
//   const path = await ImpairedPath.open();           // unlimited both ways until told otherwise
//   await impairPage(browser.page, path);             // before the page loads the SDK...
//   await browser.open(`${server.origin}/healthz`);   // ...so (re)load it afterwards
//   // join, subscribe: every UDP candidate the page is given now names the relay
//   path.set({ down: { rateKbps: 400, delayMs: 20 } }); // SFU -> client through 400 kbit/s
//   path.set({ down: { loss: 1 } });                   // ... or drop everything
//   path.set({ down: { rateKbps: 0, loss: 0 } });      // lift it (0 or Infinity: unlimited)
//   path.stats();  // { down: {forwarded, droppedLoss, droppedQueue, bytes, ...}, up: {...}, ... }
//   await path.close();                                // sockets and timers freed
//
// How the relay learns where the SFU's media is: from the page. The SFU is ICE-lite with its
// candidates in the SDP (the SDK does not trickle), so the init script wraps
// RTCPeerConnection.prototype.setRemoteDescription (and addIceCandidate, for any trickled
// candidate) and asks the test process, through a binding (page.exposeBinding), for the relay
// address of each UDP candidate's address and port: `path.route(address, port)` binds (once
// per distinct SFU address, e.g. one per worker) a client-facing socket on 127.0.0.1 that
// forwards there, and the candidate is rewritten to it. TCP candidates are dropped, so the only
// way to the SFU is through the relay. Nothing has to know the SFU's UDP port in advance;
// a test that drives a plain socket calls `route` itself (or passes `target` to `open`).
//
// Per client source address (each RTCPeerConnection of the page has its own local port) the
// relay opens its own upstream socket, so the SFU sees the relay as that client. Both
// directions share one Shaper each (`down`: SFU -> client, `up`: client -> SFU): the page's
// connections sit behind one bottleneck, as behind one access link.
import dgram from 'node:dgram';
import { performance } from 'node:perf_hooks';

/** mulberry32: a small, fast, seeded PRNG in [0, 1). */
export function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SHAPER_DEFAULTS = Object.freeze({ rateKbps: 0, delayMs: 0, loss: 0, queueMs: 200, seed: 1 });

/**
 * One direction of a bottleneck link, in virtual time (milliseconds the caller passes in; the
 * shaper never reads a clock). A packet offered at `now` is first lost at random with
 * probability `loss` (a seeded PRNG: the same seed gives the same losses), then waits in a
 * drop-tail FIFO that holds at most `queueMs` of backlog at the current rate, is serialised at
 * `rateKbps` (kbit/s, 1000 bit; 0 or Infinity: unlimited), and arrives `delayMs` after its last
 * bit left the bottleneck. Order is kept (a shorter delay set later does not overtake).
 *
 * `offer(now, bytes, item)` returns `{deliverAtMs}` (as scheduled at the current parameters) or
 * `{dropped: 'loss' | 'queue'}`. `set({...})` changes parameters; a rate change applies to the
 * packets not yet serialised (they are rescheduled), a packet on the wire finishes at the
 * rate it started with. `take(now)` returns the items due by `now` (in order) and
 * `nextDueMs()` when the next one is due (Infinity: none), for a driver such as ImpairedPath.
 * `counters`: forwarded and bytes (accepted packets), droppedLoss, droppedQueue, dropped bytes.
 */
export class Shaper {
  constructor(options = {}) {
    this.params = { ...SHAPER_DEFAULTS };
    this.random = mulberry32(options.seed ?? SHAPER_DEFAULTS.seed);
    /** Accepted, not yet serialised: {bytes, item, arrival}. */
    this.waiting = [];
    /** Serialised (their arrival time fixed), not yet taken: {at, item}, in order. */
    this.inFlight = [];
    /** When the bottleneck finishes the packet it serialises last. */
    this.linkFreeAt = -Infinity;
    /** The latest delivery time handed out (order is kept). */
    this.lastAt = -Infinity;
    this.counters = { forwarded: 0, bytes: 0, droppedLoss: 0, droppedQueue: 0, droppedBytes: 0 };
    this.set(options);
  }

  /**
   * Changes any of rateKbps, delayMs, loss, queueMs (seed: restarts the PRNG). With `nowMs`,
   * what started serialising by then does so under the old parameters first.
   */
  set(options = {}, nowMs) {
    if (nowMs !== undefined) this.advance(nowMs);
    for (const key of Object.keys(options)) {
      if (!(key in SHAPER_DEFAULTS)) throw new Error(`Shaper: unknown parameter ${key}`);
    }
    const { seed, ...rest } = options;
    for (const [key, value] of Object.entries(rest)) {
      if (value === undefined) continue;
      if (typeof value !== 'number' || Number.isNaN(value) || value < 0) throw new Error(`Shaper: ${key} must be a number >= 0, not ${value}`);
      if (key === 'loss' && value > 1) throw new Error(`Shaper: loss is a probability (0..1), not ${value}`);
    }
    Object.assign(this.params, Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== undefined)));
    if (seed !== undefined) this.random = mulberry32(seed);
    return this;
  }

  get unlimited() {
    const r = this.params.rateKbps;
    return !r || r === Infinity;
  }

  /** Milliseconds `bytes` take through the bottleneck at the current rate. */
  txMs(bytes) {
    return this.unlimited ? 0 : (bytes * 8) / this.params.rateKbps;
  }

  /** Starts serialising, in order, every waiting packet whose turn has come by `now`. */
  advance(now) {
    while (this.waiting.length) {
      const head = this.waiting[0];
      const start = Math.max(this.linkFreeAt, head.arrival);
      if (start > now) break;
      this.waiting.shift();
      this.linkFreeAt = start + this.txMs(head.bytes);
      const at = Math.max(this.linkFreeAt + this.params.delayMs, this.lastAt);
      this.lastAt = at;
      this.inFlight.push({ at, item: head.item });
    }
  }

  /** Backlog at `now` in ms at the current rate: what is on the wire and what waits. */
  backlogMs(now) {
    let ms = Math.max(0, this.linkFreeAt - now);
    for (const w of this.waiting) ms += this.txMs(w.bytes);
    return ms;
  }

  offer(now, bytes, item) {
    this.advance(now);
    // Drawn for every packet, so the losses depend on the seed and the packet count alone.
    const lost = this.random() < this.params.loss;
    if (lost) {
      this.counters.droppedLoss++;
      this.counters.droppedBytes += bytes;
      return { dropped: 'loss' };
    }
    const backlog = this.backlogMs(now);
    if (backlog > 0 && backlog + this.txMs(bytes) > this.params.queueMs) {
      this.counters.droppedQueue++;
      this.counters.droppedBytes += bytes;
      return { dropped: 'queue' };
    }
    this.counters.forwarded++;
    this.counters.bytes += bytes;
    this.waiting.push({ bytes, item, arrival: now });
    this.advance(now);
    if (this.waiting.length === 0) return { deliverAtMs: this.inFlight[this.inFlight.length - 1].at };
    // Still waiting: as the current parameters would have it.
    let finish = Math.max(this.linkFreeAt, now);
    for (const w of this.waiting) finish += this.txMs(w.bytes);
    return { deliverAtMs: Math.max(finish + this.params.delayMs, this.lastAt) };
  }

  /** The items due by `now`, in order. */
  take(now) {
    this.advance(now);
    let n = 0;
    while (n < this.inFlight.length && this.inFlight[n].at <= now) n++;
    return this.inFlight.splice(0, n).map((p) => p.item);
  }

  /** When the next packet is due (virtual ms), Infinity when none is queued. */
  nextDueMs() {
    if (this.inFlight.length) return this.inFlight[0].at;
    if (this.waiting.length) {
      const head = this.waiting[0];
      const finish = Math.max(this.linkFreeAt, head.arrival) + this.txMs(head.bytes);
      return Math.max(finish + this.params.delayMs, this.lastAt);
    }
    return Infinity;
  }

  /** Packets accepted but not yet taken. */
  get pending() {
    return this.waiting.length + this.inFlight.length;
  }

  /** Forgets every packet not yet taken (their counters stay). */
  clear() {
    this.waiting = [];
    this.inFlight = [];
  }
}

const bindUdp = (host) =>
  new Promise((resolve, reject) => {
    const socket = dgram.createSocket('udp4');
    socket.once('error', reject);
    socket.bind(0, host, () => {
      socket.off('error', reject);
      resolve(socket);
    });
  });

/**
 * A UDP relay between one client (a page) and the SFU, on `host` (127.0.0.1). See the header.
 * `ImpairedPath.open({ down, up, target, host })`: `down` and `up` the Shapers' initial
 * parameters, `target` ({address, port}) an SFU media address to route at once.
 */
export class ImpairedPath {
  static async open({ down = {}, up = {}, target, host = '127.0.0.1' } = {}) {
    const path = new ImpairedPath(host, down, up);
    // The first client-facing socket is bound now, so `path.port` is known from the start;
    // it serves the first target routed.
    path.spare = await bindUdp(host);
    path.address = host;
    path.port = path.spare.address().port;
    if (target) await path.route(target.address, target.port);
    return path;
  }

  constructor(host, down, up) {
    this.host = host;
    this.down = new Shaper(down);
    this.up = new Shaper(up);
    /** SFU address "ip:port" -> {socket (client-facing), target: {address, port}}. */
    this.lanes = new Map();
    /** "lane|client ip:port" -> {upstream socket, lane, client: {address, port}}. */
    this.clients = new Map();
    this.timer = null;
    this.timerAt = Infinity;
    this.closed = false;
    this.ignored = 0;
    this.sendErrors = 0;
    this.epoch = performance.now();
  }

  now() {
    return performance.now() - this.epoch;
  }

  /**
   * The relay address ({address, port}) that leads to the SFU media address `address:port`
   * (UDP); the first target gets the socket bound at open, each other one a socket of its own.
   */
  async route(address, port) {
    if (this.closed) throw new Error('ImpairedPath: closed');
    const key = `${address}:${port}`;
    let lane = this.lanes.get(key);
    if (!lane) {
      let socket = this.spare;
      this.spare = null;
      if (!socket) socket = await bindUdp(this.host);
      // Another call may have made it meanwhile.
      lane = this.lanes.get(key);
      if (lane) {
        socket.close();
      } else {
        lane = { key, socket, target: { address, port: Number(port) } };
        this.lanes.set(key, lane);
        socket.on('message', (data, from) => this.fromClient(lane, data, from));
        socket.on('error', () => this.sendErrors++);
      }
    }
    return { address: this.host, port: lane.socket.address().port };
  }

  fromClient(lane, data, from) {
    if (this.closed) return;
    const key = `${lane.key}|${from.address}:${from.port}`;
    let client = this.clients.get(key);
    if (!client) {
      // A socket of its own towards the SFU, bound on `host` (sends wait in node's queue until
      // the bind completes).
      const upstream = dgram.createSocket('udp4');
      client = { upstream, lane, client: { address: from.address, port: from.port } };
      this.clients.set(key, client);
      upstream.bind(0, this.host);
      upstream.on('error', () => this.sendErrors++);
      upstream.on('message', (reply, source) => {
        if (this.closed) return;
        if (source.address !== lane.target.address || source.port !== lane.target.port) {
          this.ignored++;
          return;
        }
        this.offer(this.down, reply, lane.socket, client.client);
      });
    }
    this.offer(this.up, data, client.upstream, lane.target);
  }

  offer(shaper, data, socket, to) {
    shaper.offer(this.now(), data.length, { data, socket, to });
    this.flush();
  }

  /** Sends what is due on both directions, then sets the timer for the next packet due. */
  flush() {
    if (this.closed) return;
    const now = this.now();
    for (const shaper of [this.up, this.down]) {
      for (const { data, socket, to } of shaper.take(now)) {
        try {
          socket.send(data, to.port, to.address, (err) => {
            if (err) this.sendErrors++;
          });
        } catch {
          this.sendErrors++; // a socket closed meanwhile
        }
      }
    }
    const due = Math.min(this.up.nextDueMs(), this.down.nextDueMs());
    if (due === Infinity) {
      clearTimeout(this.timer);
      this.timer = null;
      this.timerAt = Infinity;
      return;
    }
    // One timer for everything due next (ms resolution; what falls due together goes in one
    // batch); kept when it fires early enough already.
    if (this.timer && this.timerAt <= due) return;
    clearTimeout(this.timer);
    this.timerAt = due;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.timerAt = Infinity;
      this.flush();
    }, Math.max(0, Math.ceil(due - now)));
  }

  /** `{down: {...}, up: {...}}`: Shaper parameters for either direction, at once. */
  set({ down, up } = {}) {
    const now = this.now();
    // What started serialising by now does so under the old parameters.
    if (down) this.down.set(down, now);
    if (up) this.up.set(up, now);
    clearTimeout(this.timer);
    this.timer = null;
    this.timerAt = Infinity;
    this.flush();
    return this;
  }

  stats() {
    return {
      down: { ...this.down.counters, queued: this.down.pending, params: { ...this.down.params } },
      up: { ...this.up.counters, queued: this.up.pending, params: { ...this.up.params } },
      lanes: [...this.lanes.values()].map((l) => ({ relay: `${this.host}:${l.socket.address().port}`, target: `${l.target.address}:${l.target.port}` })),
      clients: [...this.clients.values()].map((c) => `${c.client.address}:${c.client.port}`),
      ignored: this.ignored,
      sendErrors: this.sendErrors,
    };
  }

  /** Frees every socket and the timer; packets not yet delivered are dropped. */
  async close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = null;
    this.down.clear();
    this.up.clear();
    const sockets = [this.spare, ...[...this.lanes.values()].map((l) => l.socket), ...[...this.clients.values()].map((c) => c.upstream)].filter(Boolean);
    await Promise.all(sockets.map((s) => new Promise((resolve) => {
      try {
        s.close(resolve);
      } catch {
        resolve(); // closed already
      }
    })));
  }
}

/**
 * Runs in the page before any of its scripts (serialised by playwright: it uses nothing from
 * this module): rewrites the SFU's UDP candidates to the relay's, drops its TCP candidates.
 */
function pageHook(bindingName) {
  const state = { rewritten: [], droppedTcp: 0 };
  window.__uprtcImpair = state;
  const route = (address, port) => window[bindingName](address, port);
  // a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> ...
  const parse = (line) => {
    const m = /^(a=)?candidate:(\S+) (\d+) (\S+) (\d+) (\S+) (\d+) typ (\S+)(.*)$/i.exec(line.trim());
    return m && { prefix: m[1] ?? '', foundation: m[2], component: m[3], transport: m[4].toLowerCase(), priority: m[5], address: m[6], port: m[7], type: m[8], rest: m[9] };
  };
  const rewrite = async (c) => {
    const relay = await route(c.address, Number(c.port));
    state.rewritten.push({ from: `${c.address}:${c.port}`, to: `${relay.address}:${relay.port}` });
    return { relay, line: `${c.prefix}candidate:${c.foundation} ${c.component} ${c.transport} ${c.priority} ${relay.address} ${relay.port} typ ${c.type}${c.rest}` };
  };
  const rewriteSdp = async (sdp) => {
    const lines = sdp.split(/\r\n|\n/);
    const out = [];
    const moved = new Map(); // "address port" of an original candidate -> its relay
    for (const line of lines) {
      const c = line.startsWith('a=candidate:') ? parse(line) : null;
      if (!c) {
        out.push(line);
        continue;
      }
      if (c.transport === 'tcp') {
        state.droppedTcp++;
        continue;
      }
      const { relay, line: rewritten } = await rewrite(c);
      moved.set(`${c.address} ${c.port}`, relay);
      out.push(rewritten);
    }
    // The m= port and c= address where they named a candidate (informative for ICE, kept
    // consistent all the same).
    let media = -1;
    for (let i = 0; i < out.length; i++) {
      if (out[i].startsWith('m=')) media = i;
      const conn = /^c=IN IP4 (\S+)$/.exec(out[i]);
      const m = media >= 0 ? /^(m=\S+ )(\d+)( .*)$/.exec(out[media]) : null;
      const relay = conn && m && moved.get(`${conn[1]} ${m[2]}`);
      if (relay) {
        out[i] = `c=IN IP4 ${relay.address}`;
        out[media] = `${m[1]}${relay.port}${m[3]}`;
      }
    }
    return out.join('\r\n');
  };
  const proto = RTCPeerConnection.prototype;
  const setRemoteDescription = proto.setRemoteDescription;
  proto.setRemoteDescription = async function (description, ...rest) {
    if (description && typeof description.sdp === 'string' && description.sdp) {
      description = { type: description.type, sdp: await rewriteSdp(description.sdp) };
    }
    return setRemoteDescription.call(this, description, ...rest);
  };
  const addIceCandidate = proto.addIceCandidate;
  proto.addIceCandidate = async function (candidate, ...rest) {
    const text = typeof candidate === 'string' ? candidate : candidate?.candidate;
    const c = text ? parse(text) : null;
    if (c && c.transport === 'tcp') {
      state.droppedTcp++;
      return undefined;
    }
    if (c) {
      const { line } = await rewrite(c);
      const init = typeof candidate === 'string' ? { candidate: line, sdpMid: '0' } : { candidate: line, sdpMid: candidate.sdpMid, sdpMLineIndex: candidate.sdpMLineIndex, usernameFragment: candidate.usernameFragment };
      return addIceCandidate.call(this, init, ...rest);
    }
    return addIceCandidate.call(this, candidate, ...rest);
  };
}

/**
 * Makes `page` (playwright) reach the SFU through `path` only: from its next navigation on,
 * every UDP candidate its peer connections are given names the relay (routed by the test
 * process, see the header) and TCP candidates are dropped. `window.__uprtcImpair` in the page
 * lists the rewrites. One path per page.
 */
export async function impairPage(page, path) {
  const binding = '__uprtcImpairRoute';
  await page.exposeBinding(binding, (_source, address, port) => path.route(address, port));
  await page.addInitScript(pageHook, binding);
}
