// Load generator for bench_signaling.py: N WebSocket clients (the `ws` package) in
// rooms of ROOM_SIZE, each sending ice-candidate (or offer) messages to the next member
// of its room, with a send timestamp embedded in the candidate / SDP string.
//
// Phase 1 (saturation, closed loop): every client keeps `inflight` messages in flight;
// each delivery triggers the sender's next message.  After `warmup` seconds, deliveries
// are counted and latencies recorded for `duration` seconds.
// Phase 2 (paced, open loop): `pacedRate` messages/s in total, round-robin over the
// clients, for `pacedDuration` seconds: latency when the server is not saturated.
//
// Usage: node loadgen.js '<json config>'  (see DEFAULTS); prints one JSON line.
// Talks only to the URL it is given; exits by itself after `timeout` seconds.
'use strict';

const fs = require('fs');
const { performance } = require('perf_hooks');
const WebSocket = require('ws');

const DEFAULTS = {
  url: 'ws://127.0.0.1:8080/signal',
  clients: 200,
  roomSize: 2,
  inflight: 4, // messages in flight per client in the saturation phase
  warmup: 2.0,
  duration: 5.0,
  pacedRate: 10000,
  pacedDuration: 3.0,
  mix: 'ice', // 'ice': ice-candidate only; 'offer': offers only; 'mixed': 1 offer in 8
  connectConcurrency: 64,
  serverPid: 0, // when set, the server's CPU time is sampled from /proc over the window
  clkTck: 100,
  verifyEvery: 64, // fully JSON.parse and check one delivery in this many
  timeout: 120,
};
const cfg = Object.assign({}, DEFAULTS, JSON.parse(process.argv[2] || '{}'));
if (!/^ws:\/\/127\.0\.0\.1:\d+\//.test(cfg.url)) {
  fail(`refusing to connect to ${cfg.url}: only ws://127.0.0.1 is allowed`);
}

const hardStop = setTimeout(() => fail(`timed out after ${cfg.timeout} s`), cfg.timeout * 1000);

function fail(message) {
  process.stdout.write(JSON.stringify({ error: message }) + '\n');
  process.exit(2);
}

const N = cfg.clients;
const K = cfg.roomSize;
if (N % K !== 0) fail(`clients (${N}) must be a multiple of roomSize (${K})`);

// --- messages -----------------------------------------------------------------------

const MARK = '@ts=';
// A realistic ~1.1 KB audio+video offer body, JSON-escaped (\r\n).
const SDP_BODY = [
  'v=0', 'o=- 4611731400430051336 2 IN IP4 127.0.0.1', 's=-', 't=0 0',
  'a=group:BUNDLE 0 1', 'a=extmap-allow-mixed', 'a=msid-semantic: WMS stream',
  'm=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126', 'c=IN IP4 0.0.0.0',
  'a=rtcp:9 IN IP4 0.0.0.0', 'a=ice-ufrag:EsAw', 'a=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y',
  'a=ice-options:trickle', 'a=fingerprint:sha-256 ' +
    '7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08',
  'a=setup:actpass', 'a=mid:0', 'a=sendrecv', 'a=msid:stream audio0', 'a=rtcp-mux',
  'a=rtpmap:111 opus/48000/2', 'a=rtcp-fb:111 transport-cc', 'a=fmtp:111 minptime=10;useinbandfec=1',
  'm=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99', 'c=IN IP4 0.0.0.0', 'a=rtcp:9 IN IP4 0.0.0.0',
  'a=ice-ufrag:EsAw', 'a=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y', 'a=ice-options:trickle',
  'a=setup:actpass', 'a=mid:1', 'a=sendrecv', 'a=msid:stream video0', 'a=rtcp-mux', 'a=rtcp-rsize',
  'a=rtpmap:96 VP8/90000', 'a=rtcp-fb:96 goog-remb', 'a=rtcp-fb:96 transport-cc',
  'a=rtcp-fb:96 ccm fir', 'a=rtcp-fb:96 nack', 'a=rtcp-fb:96 nack pli', 'a=rtpmap:97 rtx/90000',
  'a=fmtp:97 apt=96', 'a=rtpmap:98 H264/90000',
  'a=fmtp:98 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f',
  'a=rtpmap:99 rtx/90000', 'a=fmtp:99 apt=98', 'a=ssrc-group:FID 2231627014 632943048',
  'a=ssrc:2231627014 cname:4TOk42mSjXCkVIa6', 'a=ssrc:632943048 cname:4TOk42mSjXCkVIa6', '',
].join('\\r\\n');

function targetOf(i) {
  const base = i - (i % K);
  return base + ((i - base + 1) % K);
}
function senderOf(j) {
  const base = j - (j % K);
  return base + ((j - base + K - 1) % K);
}

// Each client's two messages are prebuilt buffers; send() writes the timestamp into
// them in place (fixed width, zero-padded), and ws copies them as it masks the frame.
const STAMP_WIDTH = 14; // milliseconds since the generator started, 3 decimals
const ICE_SUFFIX = '","sdpMid":"0","sdpMLineIndex":0}}';
const OFFER_SUFFIX = '"}}';
const iceBufs = [];
const offerBufs = [];
const iceStampAt = [];
const offerStampAt = [];
for (let i = 0; i < N; i++) {
  const to = `u${targetOf(i)}`;
  const ice =
    `{"type":"ice-candidate","to":"${to}","candidate":{"candidate":"candidate:${1000000 + i} 1 ` +
    `udp 2122260223 192.168.${i >> 8}.${i & 255} ${50000 + (i % 10000)} typ host generation 0 ` +
    `ufrag EsAw network-id 1 network-cost 10 ${MARK}`;
  const offer = `{"type":"offer","to":"${to}","sdp":{"type":"offer","sdp":"${SDP_BODY}${MARK}`;
  iceStampAt.push(ice.length);
  offerStampAt.push(offer.length);
  iceBufs.push(Buffer.from(ice + '0'.repeat(STAMP_WIDTH) + ICE_SUFFIX, 'latin1'));
  offerBufs.push(Buffer.from(offer + '0'.repeat(STAMP_WIDTH) + OFFER_SUFFIX, 'latin1'));
}

const sockets = new Array(N);
const sentCount = new Uint32Array(N);
const inflight = new Int32Array(N);
const TEXT = { binary: false };

function send(i) {
  let offer = false;
  if (cfg.mix === 'offer') offer = true;
  else if (cfg.mix === 'mixed') offer = (sentCount[i] & 7) === 0;
  sentCount[i]++;
  inflight[i]++;
  const buf = offer ? offerBufs[i] : iceBufs[i];
  const ts = performance.now().toFixed(3).padStart(STAMP_WIDTH, '0');
  buf.latin1Write(ts, offer ? offerStampAt[i] : iceStampAt[i], STAMP_WIDTH);
  if (!corked[i]) {
    // Messages a client sends within one tick leave in one write (one syscall).
    corked[i] = 1;
    sockets[i]._socket.cork();
    corkedList.push(i);
    if (corkedList.length === 1) process.nextTick(uncorkAll);
  }
  sockets[i].send(buf, TEXT);
}

const corked = new Uint8Array(N);
let corkedList = [];
function uncorkAll() {
  const list = corkedList;
  corkedList = [];
  for (const i of list) {
    corked[i] = 0;
    sockets[i]._socket.uncork();
  }
}

// --- delivery accounting --------------------------------------------------------------

let mode = 'setup'; // setup | saturate | drain | paced | done
let recording = false;
let delivered = 0;
let bytesDelivered = 0;
let latencies = [];
let verified = 0;
let errors = [];
let seen = 0;

const MARK_BUF = Buffer.from(MARK, 'latin1');

// The send timestamp, parsed straight from the bytes after MARK (digits and a dot).
function parseStamp(buf, i) {
  let value = 0;
  let scale = 0;
  for (let c = buf[i]; c !== undefined; c = buf[++i]) {
    if (c >= 48 && c <= 57) {
      value = value * 10 + (c - 48);
      scale *= 10;
    } else if (c === 46 && scale === 0) {
      scale = 1;
    } else {
      break;
    }
  }
  return scale ? value / scale : value;
}

function onRelayed(j, data, idx) {
  const now = performance.now();
  const ts = parseStamp(data, idx + MARK_BUF.length);
  const s = senderOf(j);
  inflight[s]--;
  if (recording) {
    delivered++;
    bytesDelivered += data.length;
    latencies.push(now - ts);
  }
  if (++seen % cfg.verifyEvery === 0) {
    const text = data.toString();
    const msg = JSON.parse(text);
    if (msg.from !== `u${s}` || msg.to !== `u${j}` ||
        (msg.type !== 'ice-candidate' && msg.type !== 'offer') ||
        Math.abs(parseFloat(text.slice(text.lastIndexOf(MARK) + MARK.length)) - ts) > 1e-6) {
      errors.push(`bad relayed message at u${j}: ${text.slice(0, 200)}`);
    } else {
      verified++;
    }
  }
  if (mode === 'saturate') send(s);
}

function onControl(j, text, joined) {
  let msg;
  try {
    msg = JSON.parse(text);
  } catch {
    errors.push(`unparsable message at u${j}: ${text.slice(0, 200)}`);
    return;
  }
  if (msg.type === 'room-joined') joined();
  else if (msg.type === 'error') errors.push(`error at u${j}: ${text.slice(0, 200)}`);
}

function connect(i) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(cfg.url, { perMessageDeflate: false, skipUTF8Validation: true });
    sockets[i] = ws;
    let joined = false;
    ws.on('open', () => {
      ws.send(JSON.stringify({ type: 'join', roomId: `r${Math.floor(i / K)}`, userId: `u${i}` }));
    });
    ws.on('message', (data) => {
      const idx = data.lastIndexOf(MARK_BUF);
      if (idx >= 0) onRelayed(i, data, idx);
      else onControl(i, data.toString(), () => { joined = true; resolve(); });
    });
    ws.on('error', (err) => {
      if (!joined) reject(err);
      else errors.push(`socket u${i}: ${err.message}`);
    });
    ws.on('close', (code) => {
      if (!joined) reject(new Error(`u${i} closed (${code}) before joining`));
      else if (mode !== 'done') errors.push(`socket u${i} closed with ${code} during the run`);
    });
  });
}

async function connectAll() {
  let next = 0;
  async function worker() {
    while (next < N) await connect(next++);
  }
  await Promise.all(Array.from({ length: Math.min(cfg.connectConcurrency, N) }, worker));
}

// --- helpers ---------------------------------------------------------------------------

const sleep = (s) => new Promise((r) => setTimeout(r, s * 1000));

function serverCpuSeconds() {
  if (!cfg.serverPid) return NaN;
  try {
    const stat = fs.readFileSync(`/proc/${cfg.serverPid}/stat`, 'latin1');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / cfg.clkTck; // utime + stime
  } catch {
    return NaN;
  }
}

// Busy CPU time of the whole machine (all cores), in seconds, from /proc/stat.
function machineBusySeconds() {
  try {
    const line = fs.readFileSync('/proc/stat', 'latin1').split('\n', 1)[0];
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0); // user..steal
    return (total - v[3] - v[4]) / cfg.clkTck; // minus idle and iowait
  } catch {
    return NaN;
  }
}

function summary(values) {
  const a = Float64Array.from(values).sort();
  const q = (p) => (a.length ? a[Math.min(a.length - 1, Math.floor(p * a.length))] : NaN);
  return { n: a.length, p50: q(0.5), p90: q(0.9), p99: q(0.99), p999: q(0.999), max: a.length ? a[a.length - 1] : NaN };
}

async function waitDrained(maxSeconds) {
  const end = performance.now() + maxSeconds * 1000;
  while (performance.now() < end) {
    let pending = 0;
    for (let i = 0; i < N; i++) pending += inflight[i];
    if (pending === 0) return 0;
    await sleep(0.02);
  }
  let pending = 0;
  for (let i = 0; i < N; i++) pending += inflight[i];
  return pending;
}

// --- main --------------------------------------------------------------------------------

async function main() {
  const t0 = performance.now();
  await connectAll();
  const setupSeconds = (performance.now() - t0) / 1000;

  // Phase 1: saturation.
  mode = 'saturate';
  for (let w = 0; w < cfg.inflight; w++) for (let i = 0; i < N; i++) send(i);
  await sleep(cfg.warmup);
  recording = true;
  const cpu0 = process.cpuUsage();
  const srv0 = serverCpuSeconds();
  const busy0 = machineBusySeconds();
  const w0 = performance.now();
  await sleep(cfg.duration);
  recording = false;
  const window = (performance.now() - w0) / 1000;
  const cpu1 = process.cpuUsage(cpu0);
  const srv1 = serverCpuSeconds();
  const busy1 = machineBusySeconds();
  mode = 'drain';
  const saturated = {
    rate: delivered / window,
    mbps: (bytesDelivered * 8) / window / 1e6,
    delivered,
    window,
    latencyMs: summary(latencies),
    generatorCpu: (cpu1.user + cpu1.system) / 1e6 / window,
    serverCpu: (srv1 - srv0) / window,
    // Everything else the machine did meanwhile (other processes, and kernel network
    // work not charged to either process), in cores.
    otherCpu: (busy1 - busy0 - (srv1 - srv0)) / window - (cpu1.user + cpu1.system) / 1e6 / window,
  };
  latencies = [];
  const stuck = await waitDrained(10);
  if (stuck) errors.push(`${stuck} messages were never delivered`);

  // Phase 2: paced open loop.
  let paced = null;
  if (cfg.pacedDuration > 0 && cfg.pacedRate > 0) {
    mode = 'paced';
    delivered = 0;
    const settle = Math.min(0.5, cfg.pacedDuration / 4);
    const start = performance.now();
    const end = start + cfg.pacedDuration * 1000;
    let sent = 0;
    let rr = 0;
    let recStart = 0;
    while (performance.now() < end) {
      const now = performance.now();
      if (!recording && now - start >= settle * 1000) {
        recording = true;
        recStart = now;
      }
      const due = Math.floor(((now - start) / 1000) * cfg.pacedRate) - sent;
      for (let k = 0; k < due; k++) {
        send(rr);
        rr = (rr + 1) % N;
      }
      sent += Math.max(0, due);
      await new Promise((r) => setImmediate(r)); // yield to receive deliveries
    }
    recording = false;
    const recWindow = (performance.now() - recStart) / 1000;
    paced = { target: cfg.pacedRate, rate: delivered / recWindow, latencyMs: summary(latencies) };
    const left = await waitDrained(10);
    if (left) errors.push(`${left} paced messages were never delivered`);
  }

  mode = 'done';
  clearTimeout(hardStop);
  const result = { clients: N, roomSize: K, inflight: cfg.inflight, mix: cfg.mix, setupSeconds,
    saturated, paced, verified, errors: errors.slice(0, 10), errorCount: errors.length };
  process.stdout.write(JSON.stringify(result) + '\n');
  for (const ws of sockets) ws.terminate();
  process.exit(0);
}

main().catch((err) => fail(String(err && err.stack ? err.stack : err)));
