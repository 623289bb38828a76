// Shared harness of the end-to-end tests: starts the real uprtcd binary and headless Chromium
// (Debian's /usr/bin/chromium, driven by playwright-core over the DevTools protocol), talks to
// the REST API, and drives the SDK inside pages of the client listener's origin. Headless
// Firefox (Debian's firefox-esr, which playwright-core cannot drive) runs a page of this
// directory that reports by itself on stdout (`Scenario.firefoxPage`).
//
// Rules every test keeps through `scenario`:
// - each test starts its own uprtcd and its own browsers, and the after hook ends exactly those
//   (by handle and PID), failing or not; a process-exit hook SIGKILLs any PID still alive;
// - everything listens on 127.0.0.1 with port 0, and the runner (./run) puts the whole suite
//   in a network namespace that has only a loopback interface;
// - waits are generous and bounded; no timing is a pass/fail criterion;
// - a failure carries the server's log tail, the pages' console and the SDK's event log.
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

export { sleep };

/** Runs a command to its end (`ip` to set up a test's links); rejects when it fails. */
export const run = promisify(execFile);

const BIN = process.env.UPRTCD_BIN;
const IO_BACKEND = process.env.UPRTCD_TEST_IO_BACKEND || '';
const CHROMIUM = process.env.UPRTCD_E2E_CHROMIUM || '/usr/bin/chromium';
const FIREFOX = process.env.UPRTCD_E2E_FIREFOX || '/usr/bin/firefox-esr';
const READY_TIMEOUT_MS = 20_000;
const PREFIX = '/uprtc/api/v2';

/** The flags known to work here (shared/DESIGN.md), plus autoplay for the demo page's videos;
 * names resolve to nothing, and of addresses only 127.0.0.1 and 127.0.0.2 (a cluster's second
 * node) are reached as themselves (the rules apply to address literals too). */
const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE 127.0.0.2',
  '--disable-features=WebRtcHideLocalIpsWithMdns,MediaRouter,DialMediaRouteProvider,GlobalMediaControls',
  '--autoplay-policy=no-user-gesture-required',
];

/** PIDs this process started and has not seen exit. */
const living = new Set();
process.on('exit', () => {
  for (const pid of living) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
});

/** Ends a process this module started (`{child, pid, exited}`): SIGTERM, SIGKILL after 5 s. */
async function terminate({ child, pid, exited }) {
  if (!living.has(pid)) return;
  child.kill('SIGTERM');
  if (!(await Promise.race([exited.then(() => true), sleep(5000).then(() => false)]))) {
    child.kill('SIGKILL');
    await exited;
  }
}

/** Rejects after `ms` with `what` unless `promise` settles first. */
export async function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `probe` (async, returns a value or undefined/false) until truthy or `ms` pass. */
export async function poll(ms, what, probe, every = 250) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await probe();
    if (last) return last;
    if (Date.now() >= deadline) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(every);
  }
}

// ---------------------------------------------------------------------------------------------
// uprtcd

export class Server {
  constructor(child, dataDir, secret, secure) {
    this.child = child;
    this.secure = secure;
    this.pid = child.pid;
    this.dataDir = dataDir;
    this.secret = secret;
    this.lines = [];
    this.api = null;
    this.client = null;
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  }

  /**
   * `secure`: the client listener has TLS (its configuration says so), so pages are https.
   * `secret`: the AppSecret, when several servers must share one (a cluster's nodes); by
   * default one of its own.
   */
  static async start(extraArgs = [], { secure = false, secret = Server.secret() } = {}) {
    if (!BIN) throw new Error('UPRTCD_BIN is not set: run the suite through tests/e2e/run');
    const dataDir = await mkdtemp(join(tmpdir(), 'uprtcd-e2e-'));
    // Loopback and one worker (a 2-core machine pins one per core) unless a test asks for
    // other values, as one whose client listens on a veth address of its own namespace does.
    const defaults = [
      ['--api-listen', '127.0.0.1:0'],
      ['--client-listen', '127.0.0.1:0'],
      ['--udp-listen', '127.0.0.1:0'],
      ['--announced-ip', '127.0.0.1'],
      ['--workers', '1'],
    ].filter(([flag]) => !extraArgs.includes(flag));
    const args = [
      ...defaults.flat(),
      '--app-secret', secret,
      '--data-dir', join(dataDir, 'data'),
      ...(IO_BACKEND ? ['--io-backend', IO_BACKEND] : []),
      ...extraArgs,
    ];
    const child = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { RUST_LOG: 'info', ...process.env } });
    living.add(child.pid);
    const server = new Server(child, dataDir, secret, secure);
    server.exited.then(() => living.delete(child.pid));
    const ready = new Promise((resolve, reject) => {
      let buffered = '';
      const take = (chunk) => {
        buffered += chunk;
        let newline;
        while ((newline = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, newline);
          buffered = buffered.slice(newline + 1);
          server.lines.push(line);
          let m;
          if ((m = /^uprtcd: api listening on (\S+)/.exec(line))) server.api = m[1];
          else if ((m = /^uprtcd: client listening on (\S+)/.exec(line))) server.client = m[1];
          else if (line.trim() === 'uprtcd: ready') resolve();
        }
      };
      child.stdout.setEncoding('utf8').on('data', take);
      child.stderr.setEncoding('utf8').on('data', take);
      server.exited.then(({ code, signal }) => reject(new Error(`uprtcd exited (${code ?? signal}) before ready:\n${server.log()}`)));
    });
    try {
      await within(READY_TIMEOUT_MS, 'uprtcd: ready', ready);
    } catch (e) {
      await server.stop();
      throw e;
    }
    const host = (flag) => {
      const asked = extraArgs.indexOf(flag);
      return asked >= 0 ? extraArgs[asked + 1].split(':')[0] : '127.0.0.1';
    };
    if (!server.api?.startsWith(`${host('--api-listen')}:`) || !server.client?.startsWith(`${host('--client-listen')}:`)) {
      await server.stop();
      throw new Error(`uprtcd said ready without the listening lines asked for:\n${server.log()}`);
    }
    return server;
  }

  /** A fresh AppSecret. */
  static secret() {
    return `e2e-secret-${randomBytes(16).toString('hex')}`;
  }

  log(lines = 80) {
    return this.lines.slice(-lines).join('\n');
  }

  /** `http://<client>` (`https://` with TLS): the origin of the pages and the SDK. */
  get origin() {
    return `${this.secure ? 'https' : 'http'}://${this.client}`;
  }

  /** A REST call with the AppSecret; returns the envelope. */
  async call(method, path, body) {
    const init = { method, headers: { authorization: `key=${this.secret}` } };
    if (body !== undefined) {
      init.headers['content-type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const response = await within(10_000, `${method} ${path}`, fetch(`http://${this.api}${PREFIX}${path}`, init));
    const text = await response.text();
    try {
      return JSON.parse(text);
    } catch {
      throw new Error(`${method} ${path}: HTTP ${response.status}, not JSON: ${text}`);
    }
  }

  /** A REST call that must succeed (code 0); returns `data`. */
  /** The sum over workers (or labels) of the Prometheus counter `name` (the workers' are
   * published about once a second). */
  async metric(name) {
    const text = await (await within(10_000, 'GET /metrics', fetch(`http://${this.api}/metrics`))).text();
    return text
      .split('\n')
      .filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
      .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
  }

  async ok(method, path, body) {
    const envelope = await this.call(method, path, body);
    if (envelope.code !== 0) throw new Error(`${method} ${path} ${JSON.stringify(body)}: ${JSON.stringify(envelope)}`);
    return envelope.data;
  }

  /** A conversation room: `{roomId, invitationCode, serverUrl, ...}`. */
  convo(master, members, extra = {}) {
    return this.ok('POST', '/room/convo', { masterId: master, memberIds: members, ...extra });
  }

  async token(roomId, peer) {
    return (await this.ok('POST', `/room/${encodeURIComponent(roomId)}/token`, { peerId: peer })).token;
  }

  /** SIGTERM, then SIGKILL after 5 s; removes the data dir. */
  async stop() {
    await terminate(this);
    await rm(this.dataDir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// browsers

export class Browser {
  constructor(name, child, profile, browser, page) {
    this.name = name;
    this.child = child;
    this.pid = child.pid;
    this.profile = profile;
    this.browser = browser;
    this.page = page;
    this.console = [];
    this.exited = new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve();
      else child.once('exit', resolve);
    });
  }

  /**
   * A fresh Chromium with its own new profile, started here (so its flags are exactly ours and
   * its PID is known) and driven over the DevTools protocol on a loopback port it picks.
   */
  static async launch(name, flags = []) {
    const profile = await mkdtemp(join(tmpdir(), `uprtcd-e2e-chromium-${name}-`));
    const args = [...CHROMIUM_FLAGS, ...flags, `--user-data-dir=${profile}`, '--remote-debugging-address=127.0.0.1', '--remote-debugging-port=0', 'about:blank'];
    const child = spawn(CHROMIUM, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    living.add(child.pid);
    child.once('exit', () => living.delete(child.pid));
    const output = [];
    let browser;
    try {
      const endpoint = await within(
        30_000,
        `${CHROMIUM} prints its DevTools address`,
        new Promise((resolve, reject) => {
          let buffered = '';
          child.stderr.setEncoding('utf8').on('data', (chunk) => {
            buffered += chunk;
            const m = /DevTools listening on (ws:\/\/\S+)/.exec(buffered);
            if (m) resolve(m[1]);
            output.push(chunk);
          });
          child.once('exit', (code, signal) => reject(new Error(`chromium exited (${code ?? signal}): ${output.join('')}`)));
        }),
      );
      browser = await within(30_000, 'connect to chromium', chromium.connectOverCDP(endpoint));
    } catch (e) {
      child.kill('SIGKILL');
      await rm(profile, { recursive: true, force: true });
      throw e;
    }
    // Keep draining stderr so that Chromium never blocks on a full pipe.
    child.stderr.resume();
    const context = browser.contexts()[0] ?? (await browser.newContext());
    const page = await context.newPage();
    const b = new Browser(name, child, profile, browser, page);
    page.on('console', (m) => b.console.push(`[${m.type()}] ${m.text()}`));
    page.on('pageerror', (e) => b.console.push(`[pageerror] ${e.message}`));
    page.setDefaultTimeout(30_000);
    return b;
  }

  /** Opens `url` (a page of the client listener) and loads the SDK's test helpers into it. */
  async open(url) {
    await this.page.goto(url, { waitUntil: 'load' });
    await this.page.evaluate(installHelpers);
  }

  evaluate(fn, arg) {
    return this.page.evaluate(fn, arg);
  }

  /** Joins with the SDK; resolves to `{ok: true, peers}` or `{ok: false, code, msg}`. */
  join(options) {
    return this.evaluate((o) => window.e2e.join(o), options);
  }

  /**
   * Fake camera and microphone through `room.publish`: `video` the camera's constraints (320x240
   * at 15 fps by default), `options` those of `room.publish`.
   */
  publish(video = { width: 320, height: 240, frameRate: 15 }, options = {}) {
    return this.evaluate((a) => window.e2e.publish(a.video, a.options), { video, options });
  }

  /** Event names (and their JSON payloads) the SDK emitted so far. */
  events() {
    return this.evaluate(() => window.e2e.events);
  }

  /** Waits (bounded) for an SDK event `name` whose payload passes `match` (a JSON subset). */
  async waitEvent(name, match = {}, ms = 10_000) {
    try {
      await this.page.waitForFunction(
        ([n, m]) => window.e2e.events.some((e) => e.name === n && Object.entries(m).every(([k, v]) => JSON.stringify(e.payload?.[k]) === JSON.stringify(v))),
        [name, match],
        { timeout: ms, polling: 100 },
      );
    } catch {
      throw new Error(`${this.name}: no '${name}' event matching ${JSON.stringify(match)} within ${ms} ms; events: ${JSON.stringify(await this.events())}`);
    }
  }

  /** Per remote peer, the subscribe connection's inbound-rtp counters (and, for video, the
   * size of the last decoded frame) by kind. */
  sample() {
    return this.evaluate(() => window.e2e.sample());
  }

  /** What this browser publishes, per simulcast layer: `{rid: {framesEncoded, frameHeight, active}}`. */
  sent() {
    return this.evaluate(() => window.e2e.sent());
  }

  diagnostics() {
    return this.evaluate(() => window.e2e.diagnostics()).catch((e) => `(no diagnostics: ${e.message})`);
  }

  /** Disconnects, then ends the process: SIGTERM, SIGKILL after 5 s; removes the profile. */
  async close() {
    await Promise.race([this.browser.close().catch(() => {}), sleep(5000)]);
    await terminate(this);
    // Its helper processes may still be writing for a moment after the browser exits.
    await rm(this.profile, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 }).catch(() => {});
  }
}

/**
 * Runs inside the page (serialised by playwright: it must use nothing from this module):
 * imports the SDK from the server and keeps one room and its event log on `window.e2e`.
 */
async function installHelpers() {
  const { Room } = await import('/uprtc.js');
  const events = [];
  const e2e = {
    Room,
    room: null,
    local: null,
    events,
    async join(options) {
      try {
        e2e.room = await Room.join(options);
      } catch (e) {
        return { ok: false, code: e.code, msg: e.msg ?? String(e) };
      }
      for (const name of ['peer-joined', 'peer-left', 'message', 'kicked', 'room-closed', 'closed', 'track', 'track-added', 'track-removed', 'error']) {
        e2e.room.on(name, (payload = {}) => {
          const { track, stream, ...rest } = payload;
          events.push({ name, payload: rest, at: performance.now() });
        });
      }
      return { ok: true, peers: [...e2e.room.peers], roomId: e2e.room.roomId };
    },
    async publish(video, options) {
      e2e.local = await navigator.mediaDevices.getUserMedia({ audio: true, video });
      await e2e.room.publish(e2e.local, options);
      return e2e.local.getTracks().map((t) => t.kind);
    },
    async sample() {
      const { subscribe } = await e2e.room.stats();
      const byMid = new Map(e2e.room.remoteTracks.map((t) => [t.mid, t]));
      const out = {};
      subscribe?.forEach((r) => {
        if (r.type !== 'inbound-rtp') return;
        const peer = byMid.get(r.mid)?.peer ?? `mid ${r.mid}`;
        out[peer] ??= {};
        out[peer][r.kind] = {
          framesDecoded: r.framesDecoded ?? 0,
          frameWidth: r.frameWidth ?? 0,
          frameHeight: r.frameHeight ?? 0,
          packetsReceived: r.packetsReceived ?? 0,
          bytesReceived: r.bytesReceived ?? 0,
          freezeCount: r.freezeCount ?? 0,
          totalFreezesDuration: r.totalFreezesDuration ?? 0,
        };
      });
      return out;
    },
    /** What the publisher sends, per simulcast layer (rid; '' without simulcast). */
    async sent() {
      const { publish } = await e2e.room.stats();
      const out = {};
      publish?.forEach((r) => {
        if (r.type === 'outbound-rtp' && r.kind === 'video') {
          out[r.rid ?? ''] = {
            framesEncoded: r.framesEncoded ?? 0,
            frameHeight: r.frameHeight ?? 0,
            active: r.active,
            limitation: r.qualityLimitationReason,
            targetBitrate: r.targetBitrate,
            scalabilityMode: r.scalabilityMode,
          };
        }
      });
      return out;
    },
    async diagnostics() {
      const room = e2e.room;
      const pcs = { publish: room?._publisher, subscribe: room?._subscriber };
      const out = { events, remoteTracks: room?.remoteTracks.map(({ track, ...t }) => t), published: room?.published };
      for (const [name, pc] of Object.entries(pcs)) {
        if (!pc) continue;
        out[name] = { connectionState: pc.connectionState, iceConnectionState: pc.iceConnectionState, signalingState: pc.signalingState, pairs: [] };
        const stats = await pc.getStats();
        stats.forEach((r) => {
          if (r.type === 'candidate-pair' && r.nominated) {
            const local = stats.get(r.localCandidateId);
            const remote = stats.get(r.remoteCandidateId);
            out[name].pairs.push({ state: r.state, local: `${local?.protocol} ${local?.address}:${local?.port}`, remote: `${remote?.protocol} ${remote?.address}:${remote?.port}` });
          }
          if (r.type === 'transport') out[name].dtlsState = r.dtlsState;
        });
      }
      return out;
    },
  };
  window.e2e = e2e;
}

// ---------------------------------------------------------------------------------------------
// a test's resources

/** What one test started; `scenario` ends all of it. */
export class Scenario {
  constructor() {
    this.servers = [];
    this.browsers = [];
    this.tools = [];
    this.dirs = [];
    this.routes = [];
  }

  /**
   * Starts another client program (`command args`) whose stdout is one JSON object per line;
   * returns it with `next(step, ms)`, which waits for the line whose `step` is `step`.
   */
  tool(command, args) {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    living.add(child.pid);
    const tool = { child, pid: child.pid, lines: [], errors: [] };
    tool.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    tool.exited.then(() => living.delete(child.pid));
    let buffered = '';
    child.stdout.on('data', (chunk) => {
      buffered += chunk;
      let newline;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        tool.lines.push(buffered.slice(0, newline));
        buffered = buffered.slice(newline + 1);
      }
    });
    child.stderr.on('data', (chunk) => tool.errors.push(String(chunk)));
    // A step the tool reports as failed ends the wait at once. Lines that are not JSON are
    // the program's own chatter (a browser's), kept for the report only.
    const failed = new Set(['refused', 'not-connected']);
    const steps = () => tool.lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
    tool.until = (what, ms, found) =>
      poll(ms, `${command}: ${what}`, async () => {
        const all = steps();
        if (all.some((l) => failed.has(l.step))) throw new Error(`${command}: ${tool.lines.join(' ')}`);
        return all.find(found);
      });
    tool.next = (step, ms) => tool.until(`step ${step}`, ms, (l) => l.step === step);
    this.tools.push(tool);
    return tool;
  }

  /** A scratch directory, removed when the test ends. */
  async scratch(name) {
    const dir = await mkdtemp(join(tmpdir(), `uprtcd-e2e-${name}-`));
    this.dirs.push(dir);
    return dir;
  }

  async server(extraArgs, options) {
    const s = await Server.start(extraArgs, options);
    this.servers.push(s);
    return s;
  }

  /**
   * Launches browsers named `names` in parallel, each on a blank page of `server`'s origin,
   * with `flags` besides the usual ones.
   */
  async browsersOn(server, names, path = '/healthz', { flags = [] } = {}) {
    const launched = await Promise.all(
      names.map(async (name) => {
        const b = await Browser.launch(name, flags);
        this.browsers.push(b);
        return b;
      }),
    );
    await Promise.all(launched.map((b) => b.open(`${server.origin}${path}`)));
    return launched;
  }

  async report() {
    const parts = [];
    for (const b of this.browsers) {
      parts.push(`--- ${b.name}: console ---\n${b.console.slice(-30).join('\n')}`);
      parts.push(`--- ${b.name}: SDK ---\n${JSON.stringify(await within(5000, 'diagnostics', b.diagnostics()).catch((e) => e.message))}`);
    }
    for (const s of this.servers) parts.push(`--- uprtcd ${s.client} log ---\n${s.log(60)}`);
    for (const t of this.tools) parts.push(`--- ${t.child.spawnfile} ---\n${t.lines.join('\n')}\n${t.errors.join('').slice(-3000)}`);
    return parts.join('\n');
  }

  /**
   * A default route for this namespace over loopback, from 127.0.0.1, removed when the test
   * ends: what is sent to any other address comes back into the namespace as if addressed to
   * it (to a socket on 0.0.0.0 and that port, if any; else refused), so still nothing leaves.
   * Firefox offers a page that captures nothing only the address of its default route, and
   * none at all without one; with this it offers 127.0.0.1, which it pairs only with loopback
   * addresses (127.0.0.0/8) of the server.
   */
  async defaultRouteOverLoopback() {
    await run('ip', ['route', 'add', 'default', 'dev', 'lo', 'src', '127.0.0.1']);
    this.routes.push(['default', 'dev', 'lo']);
  }

  /**
   * Headless Firefox (Debian's firefox-esr, a scratch profile of its own with FIREFOX_PREFS and
   * `prefs`) on the page `name` of this directory, opened from its file with `params` as its
   * query: a tool whose lines are what the page reports through dump(), one JSON object each.
   * The page's origin is opaque ("null"), which the server's CORS (any origin) lets fetch from
   * it and import the SDK. Firefox needs a default route to offer any candidate
   * (`defaultRouteOverLoopback`) and a server whose media is on a loopback address.
   */
  async firefoxPage(name, params, prefs = {}) {
    const profile = await this.scratch('firefox');
    const lines = Object.entries({ ...FIREFOX_PREFS, ...prefs }).map(([k, v]) => `user_pref(${JSON.stringify(k)}, ${JSON.stringify(v)});`);
    await writeFile(join(profile, 'user.js'), `${lines.join('\n')}\n`);
    const page = new URL(name, import.meta.url);
    for (const [k, v] of Object.entries(params)) page.searchParams.set(k, v);
    return this.tool(FIREFOX, ['--headless', '--no-remote', '--profile', profile, page.href]);
  }

  /**
   * Headless Firefox on whep_player.html playing `roomId` over WHEP at `server`'s client
   * listener as `token`'s peer (`firefoxPage`): its lines are "answered" or "refused", then
   * "stats" twice a second with `framesDecoded` and `audioPackets`.
   */
  firefoxWhep(server, roomId, token) {
    return this.firefoxPage('whep_player.html', { whep: `${server.origin}/whep/${encodeURIComponent(roomId)}`, token });
  }

  async close() {
    await Promise.all(this.tools.map((t) => terminate(t)));
    await Promise.all(this.browsers.map((b) => b.close()));
    await Promise.all(this.servers.map((s) => s.stop()));
    await Promise.all(this.dirs.map((d) => rm(d, { recursive: true, force: true })));
    await Promise.all(this.routes.map((r) => run('ip', ['route', 'del', ...r]).catch(() => {})));
  }
}

// What a Firefox test profile needs: dump() on stdout, host candidates on loopback under their
// real addresses, no first-run pages, updates or telemetry.
const FIREFOX_PREFS = {
  'browser.dom.window.dump.enabled': true,
  'media.peerconnection.ice.loopback': true,
  'media.peerconnection.ice.obfuscate_host_addresses': false,
  'media.autoplay.default': 0,
  'browser.shell.checkDefaultBrowser': false,
  'browser.aboutwelcome.enabled': false,
  'datareporting.policy.dataSubmissionEnabled': false,
  'toolkit.telemetry.reportingpolicy.firstRun': false,
  'app.update.disabledForTesting': true,
  'network.captive-portal-service.enabled': false,
  'network.connectivity-service.enabled': false,
};

/** Runs `body(scenario)` and always ends what it started; failures carry the diagnostics. */
export async function scenario(t, body) {
  const sc = new Scenario();
  t.after(() => sc.close());
  try {
    await body(sc);
  } catch (e) {
    const report = await sc.report().catch((r) => `(no report: ${r.message})`);
    e.message = `${e.message}\n${report}`;
    throw e;
  }
}

/** Joins each browser as its own peer (subscribing), then publishes from all of them. */
export async function joinAndPublish(server, room, browsers) {
  for (const b of browsers) {
    const joined = await b.join({
      serverUrl: room.serverUrl,
      invitationCode: room.invitationCode,
      peer: b.name,
      token: await server.token(room.roomId, b.name),
    });
    if (!joined.ok) throw new Error(`${b.name} joins: ${JSON.stringify(joined)}`);
  }
  const kinds = await Promise.all(browsers.map((b) => b.publish()));
  for (const k of kinds) {
    if ([...k].sort().join() !== 'audio,video') throw new Error(`published ${[...k]}, not audio and video`);
  }
}

/**
 * Waits (up to `ms`) until `browser` decodes video from and receives audio of every peer of
 * `from`, then checks over a second sample a second later that both still grow. Returns the
 * two samples.
 */
export async function expectMedia(browser, from, { ms = 20_000, audio = true } = {}) {
  const flowing = (s) =>
    from.every((p) => s[p]?.video?.framesDecoded > 0 && (!audio || s[p]?.audio?.packetsReceived > 0));
  let first;
  try {
    first = await poll(ms, 'media', async () => {
      const s = await browser.sample();
      return flowing(s) ? s : undefined;
    });
  } catch {
    throw new Error(`${browser.name}: no decoded video${audio ? ' and audio' : ''} from ${from.join(', ')} within ${ms} ms; last sample ${JSON.stringify(await browser.sample())}`);
  }
  await sleep(1000);
  const second = await browser.sample();
  for (const p of from) {
    if (!(second[p]?.video?.framesDecoded > first[p].video.framesDecoded)) {
      throw new Error(`${browser.name}: video from ${p} stopped: framesDecoded ${first[p].video.framesDecoded} then ${second[p]?.video?.framesDecoded}`);
    }
    if (audio && !(second[p]?.audio?.packetsReceived > first[p].audio.packetsReceived)) {
      throw new Error(`${browser.name}: audio from ${p} stopped: packetsReceived ${first[p].audio.packetsReceived} then ${second[p]?.audio?.packetsReceived}`);
    }
  }
  return [first, second];
}

/** One line of what `browser` received in `sample`, for the test's diagnostics. */
export function describeSample(browser, sample) {
  const parts = Object.entries(sample).map(
    ([peer, kinds]) => `${peer}: ${kinds.video?.framesDecoded ?? 0} frames decoded, ${kinds.audio?.packetsReceived ?? 0} audio packets`,
  );
  return `${browser.name} received ${parts.join('; ') || 'nothing'}`;
}
