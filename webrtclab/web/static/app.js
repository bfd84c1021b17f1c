// webrtclab web client: the seed's video room (src/lib/webrtc.ts, VideoRoom.tsx and its
// data-channel, TURN and diagnostics snippets) as one plain ES module, no build step.
//
// Protocol: the lab's signaling server at same-origin /signal (join, offer, answer,
// ice-candidate, leave; the server sets `from`).  Mesh: the newcomer offers to everyone in
// `room-joined`, as the seed and webrtclab's aiortc peers do.  Data-channel messages are the
// JSON that webrtclab/peer.py sends and expects: chat {type, text, seq, sent_ms} on `chat`
// (reliable, ordered; `webrtclab peer` bots echo it with echo: true, from), cursor
// {type, x, y, seq, sent_ms} on `cursors` (unordered, maxRetransmits 0).
//
// Automation (Playwright, webrtclab.browser.BrowserPeer) uses window.webrtclab: join(),
// state(), stats(), sendChat(), sendCursor(), messages(), shareScreen(), stopScreenShare(),
// startRecording(), stopRecording(), restart(), leave().

const CHAT_HIGH_WATER = 1024 * 1024; // as CHAT_HIGH_WATER in peer.py
const CHAT_LOW_WATER = 256 * 1024; // bufferedAmountLowThreshold of `chat`
const CURSOR_HIGH_WATER = 64 * 1024; // the seed's cursor back-pressure bound
const MAX_EARLY_CANDIDATES = 64; // per remote that trickles before its offer (a flood bound)
const MAX_MESSAGES = 10000; // kept for messages(); the oldest go first
const STATS_PERIOD_MS = 1000;

const $ = (id) => document.getElementById(id);

const room = {
  config: null, // {room, user, token, relay, width, height, fps, epochMs, iceServers?}
  ws: null,
  joined: false,
  leaving: false,
  localStream: null,
  camera: null, // the camera's video track (kept alive while the screen is shared)
  screen: null, // the screen track while sharing
  iceServers: [],
  remotes: new Map(), // peerId -> Remote
  early: new Map(), // peerId -> candidates that came before the offer
  queue: Promise.resolve(), // signaling messages are handled one at a time, in order
  messages: [],
  errors: [],
  error: null,
  statsTimer: null,
};

// --- time, errors, events -----------------------------------------------------------------

// ms on the lab clock when the lab gave its epoch (wall-clock ms of its start), else wall ms.
function nowMs() {
  return performance.timeOrigin + performance.now() - (room.config?.epochMs ?? 0);
}

function showError(message) {
  room.error = message;
  room.errors.push(message);
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  room.error = null;
  $("error").hidden = true;
}

// Lab hook: BrowserPeer exposes window.webrtclabEvent to log events on the lab clock.
function emit(remote, event, detail = "") {
  try {
    // A binding returns a promise, which rejects once the page is closing: ignore that.
    window.webrtclabEvent?.(remote, event, String(detail))?.catch?.(() => {});
  } catch {
    // The hook is optional: a page outside a lab has none.
  }
}

function setStatus(text) {
  $("status").textContent = text;
}

// --- signaling ------------------------------------------------------------------------------

function send(message) {
  if (room.ws?.readyState === WebSocket.OPEN) room.ws.send(JSON.stringify(message));
}

function signalUrl(token) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  return `${scheme}//${location.host}/signal${query}`;
}

// TURN as in the seed's /api/turn-credentials, with the join token as a bearer token.
async function fetchIceServers(token) {
  if (!token) return [];
  const response = await fetch("/api/turn-credentials", {
    headers: { Authorization: `Bearer ${token}` },
    cache: "no-store",
  });
  if (response.status === 404) return []; // the server has no TURN configured
  if (!response.ok) {
    let reason = "";
    try {
      reason = (await response.json()).error ?? "";
    } catch {
      reason = await response.text().catch(() => "");
    }
    throw new Error(
      `TURN credentials refused: HTTP ${response.status}${reason ? ` (${reason})` : ""}` +
        (response.status === 401 ? ": the token is missing, invalid or expired" : ""),
    );
  }
  const body = await response.json();
  if (!Array.isArray(body.iceServers)) throw new Error("TURN credentials: no iceServers in reply");
  return body.iceServers;
}

function openSignaling(config) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(signalUrl(config.token));
    room.ws = ws;
    let settled = false;
    const settle = (fn, value) => {
      if (!settled) {
        settled = true;
        fn(value);
      }
    };
    ws.onopen = () => send({ type: "join", roomId: config.room, userId: config.user });
    ws.onclose = (event) => {
      const why = `signaling connection closed (code ${event.code}${event.reason ? `: ${event.reason}` : ""})`;
      if (!settled) {
        // A refused upgrade (401 bad token, 403 origin) only shows as a close here.
        settle(reject, new Error(`${why}; the server refused or dropped the connection`));
      } else if (!room.leaving) {
        showError(why);
        setStatus("disconnected");
      }
    };
    ws.onmessage = (event) => {
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        return;
      }
      if (!room.joined) {
        if (msg.type === "room-joined") {
          room.joined = true;
          settle(resolve, msg.peers);
        } else if (msg.type === "error") {
          settle(reject, new Error(`cannot join: ${msg.code}: ${msg.message}`));
          ws.close();
          return;
        }
      }
      room.queue = room.queue.then(() => handle(msg)).catch((err) => {
        showError(`${msg.type}: ${err?.message ?? err}`);
      });
    };
  });
}

async function handle(msg) {
  switch (msg.type) {
    case "room-joined":
      for (const peerId of msg.peers) {
        // One member's failure must not keep the others from getting an offer.
        await new Remote(peerId, true).offer().catch((err) => showError(`${peerId}: ${err.message}`));
      }
      break;
    case "peer-joined":
      emit(msg.peerId, "peer-joined");
      break; // the newcomer offers: nothing to do until its offer comes
    case "offer":
      await (room.remotes.get(msg.from) ?? new Remote(msg.from, false)).acceptOffer(msg.sdp);
      break;
    case "answer":
      await room.remotes.get(msg.from)?.acceptAnswer(msg.sdp);
      break;
    case "ice-candidate": {
      const remote = room.remotes.get(msg.from);
      if (remote) {
        await remote.addCandidate(msg.candidate);
      } else {
        // Trickled ahead of its offer: keep it for the connection the offer creates.
        const early = room.early.get(msg.from) ?? [];
        if (early.length < MAX_EARLY_CANDIDATES) early.push(msg.candidate);
        room.early.set(msg.from, early);
      }
      break;
    }
    case "peer-left":
      emit(msg.peerId, "peer-left");
      room.early.delete(msg.peerId);
      room.remotes.get(msg.peerId)?.close();
      break;
    case "error":
      showError(`server: ${msg.code}: ${msg.message}`);
      break;
  }
}

// --- one remote member: its connection, channels and tile -----------------------------------

// aiortc does not trickle and has no ICE restart; browsers advertise trickle (RFC 8840).
function peerTypeOf(sdp) {
  return /^a=ice-options:.*\btrickle\b/m.test(sdp ?? "") ? "browser" : "aiortc";
}

class Remote {
  constructor(peerId, initiator) {
    this.peerId = peerId;
    this.initiator = initiator;
    this.peerType = "unknown";
    this.pending = room.early.get(peerId) ?? [];
    room.early.delete(peerId);
    this.channels = {};
    this.chatQueue = [];
    this.seq = { chat: 0, cursors: 0 };
    this.restarts = 0;
    this.recovering = false;
    this.closed = false;
    this.summary = {};
    this.previous = null;
    this.video = { frames: 0, width: 0, height: 0 };
    this.recorder = null;
    this.tile = this.makeTile();
    room.remotes.set(peerId, this);
    this.newConnection();
  }

  newConnection() {
    const pc = new RTCPeerConnection({
      iceServers: room.iceServers,
      iceTransportPolicy: room.config.relay ? "relay" : "all",
    });
    this.pc = pc;
    for (const track of room.localStream.getTracks()) {
      const sending = track === room.camera && room.screen ? room.screen : track;
      pc.addTrack(sending, room.localStream);
    }
    pc.onicecandidate = ({ candidate }) => {
      // Stale connections (replaced in a recovery) stay silent.
      if (candidate?.candidate && this.pc === pc) {
        send({ type: "ice-candidate", to: this.peerId, candidate: candidate.toJSON() });
      }
    };
    pc.ontrack = (event) => {
      const stream = event.streams[0] ?? new MediaStream([event.track]);
      if (this.videoEl.srcObject !== stream) this.videoEl.srcObject = stream;
      emit(this.peerId, "track", event.track.kind);
    };
    pc.onconnectionstatechange = () => {
      if (this.pc !== pc) return;
      const state = pc.connectionState;
      emit(this.peerId, "connection-state", state);
      this.tile.className = `tile ${state}`;
      if (state === "connected") this.updateStats();
      if (state === "failed") this.schedule(() => this.recover(false));
    };
    pc.ondatachannel = (event) => this.adopt(event.channel);
    this.updateCaption();
  }

  schedule(task) {
    room.queue = room.queue.then(task).catch((err) => showError(`${this.peerId}: ${err.message}`));
  }

  async offer(options = {}) {
    if (!this.channels.chat || this.channels.chat.readyState === "closed") {
      // Same order and options as PeerSession.create_offer in peer.py.
      this.adopt(this.pc.createDataChannel("chat", { ordered: true }));
      this.adopt(this.pc.createDataChannel("cursors", { ordered: false, maxRetransmits: 0 }));
    }
    await this.pc.setLocalDescription(await this.pc.createOffer(options));
    send({ type: "offer", to: this.peerId, sdp: this.pc.localDescription.toJSON() });
  }

  async acceptOffer(sdp) {
    this.peerType = peerTypeOf(sdp?.sdp);
    await this.pc.setRemoteDescription(sdp);
    await this.flushCandidates();
    await this.pc.setLocalDescription(await this.pc.createAnswer());
    send({ type: "answer", to: this.peerId, sdp: this.pc.localDescription.toJSON() });
    this.updateCaption();
  }

  async acceptAnswer(sdp) {
    if (this.pc.signalingState !== "have-local-offer") return; // stale or duplicate
    this.peerType = peerTypeOf(sdp?.sdp);
    await this.pc.setRemoteDescription(sdp);
    await this.flushCandidates();
    this.updateCaption();
  }

  async addCandidate(candidate) {
    if (!candidate?.candidate) return; // end-of-candidates: nothing to add
    if (!this.pc.remoteDescription) {
      // Candidates added before the remote description would be refused: buffer them.
      if (this.pending.length < MAX_EARLY_CANDIDATES) this.pending.push(candidate);
      return;
    }
    await this.pc.addIceCandidate(candidate).catch((err) => {
      room.errors.push(`${this.peerId}: candidate refused: ${err.message}`);
    });
  }

  async flushCandidates() {
    const pending = this.pending;
    this.pending = [];
    for (const candidate of pending) await this.addCandidate(candidate);
  }

  // Recovery after ICE failure.  Browser remotes: an ICE restart on the same connection,
  // offered by the side that offered first (the other waits for it, so offers never
  // cross).  aiortc remotes have no ICE restart: a new connection and a new offer, which
  // webrtclab peers take as "start over" (they retire the old session).
  async recover(force) {
    if (this.closed || this.recovering) return;
    if (!force && this.pc.connectionState !== "failed") return; // recovered meanwhile
    this.recovering = true;
    try {
      this.restarts += 1;
      if (this.peerType === "browser") {
        if (!this.initiator && !force) return;
        emit(this.peerId, "recovery", "ice-restart");
        this.pc.restartIce();
        await this.offer({ iceRestart: true });
      } else {
        emit(this.peerId, "recovery", "new-connection");
        const old = this.pc;
        this.closeChannels();
        this.pending = [];
        this.previous = null;
        this.initiator = true;
        this.newConnection();
        old.close();
        await this.offer();
      }
    } finally {
      this.recovering = false;
      this.updateCaption();
    }
  }

  // --- data channels

  adopt(channel) {
    this.channels[channel.label] = channel;
    if (channel.label === "chat") {
      channel.bufferedAmountLowThreshold = CHAT_LOW_WATER;
      channel.onbufferedamountlow = () => this.flushChat();
    }
    channel.onopen = () => {
      if (channel.label === "chat") this.flushChat();
      this.updateCaption();
    };
    channel.onclose = () => this.updateCaption();
    channel.onmessage = (event) => this.onMessage(channel.label, event.data);
  }

  closeChannels() {
    for (const channel of Object.values(this.channels)) channel.close();
    this.channels = {};
    this.chatQueue = [];
  }

  sendChat(text) {
    const channel = this.channels.chat;
    if (!channel || channel.readyState !== "open") return false;
    const payload = { type: "chat", text, seq: this.seq.chat, sent_ms: round3(nowMs()) };
    this.seq.chat += 1;
    this.chatQueue.push(JSON.stringify(payload));
    this.flushChat();
    record({ direction: "send", peer: this.peerId, channel: "chat", payload });
    return true;
  }

  // Reliable channel back-pressure: queue above the high-water mark, drain on
  // bufferedamountlow (peer.py waits the same way before sending).
  flushChat() {
    const channel = this.channels.chat;
    while (
      this.chatQueue.length &&
      channel?.readyState === "open" &&
      channel.bufferedAmount <= CHAT_HIGH_WATER
    ) {
      channel.send(this.chatQueue.shift());
    }
  }

  // Unreliable: drop (and take no sequence number) when the buffer is full.
  sendCursor(x, y) {
    const channel = this.channels.cursors;
    if (!channel || channel.readyState !== "open" || channel.bufferedAmount >= CURSOR_HIGH_WATER) {
      return false;
    }
    const payload = { type: "cursor", x, y, seq: this.seq.cursors, sent_ms: round3(nowMs()) };
    channel.send(JSON.stringify(payload));
    this.seq.cursors += 1;
    return true;
  }

  onMessage(label, data) {
    let payload = data;
    try {
      payload = JSON.parse(data);
    } catch {
      // Not JSON: keep the text as it came.
    }
    record({ direction: "recv", peer: this.peerId, channel: label, payload });
    if (label === "chat" && payload?.type === "chat") appendChat(this.peerId, payload);
    if (label === "cursors" && payload?.type === "cursor") this.showCursor(payload.x, payload.y);
  }

  // --- the tile

  makeTile() {
    const tile = document.createElement("figure");
    tile.className = "tile new";
    tile.dataset.peer = this.peerId;
    const video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    this.videoEl = video;
    const onFrame = (_now, meta) => {
      this.video.frames += 1;
      this.video.width = meta.width;
      this.video.height = meta.height;
      if (window.webrtclabFrames) this.stampReader.read(video, meta);
      video.requestVideoFrameCallback(onFrame);
    };
    this.stampReader = new StampReader(this.peerId);
    video.requestVideoFrameCallback(onFrame);
    const caption = document.createElement("figcaption");
    this.captionEl = document.createElement("div");
    this.statsEl = document.createElement("div");
    this.statsEl.className = "stats";
    const recordButton = document.createElement("button");
    recordButton.type = "button";
    recordButton.textContent = "Record";
    recordButton.onclick = () => {
      const action = this.recorder ? stopRecording(this.peerId) : startRecording(this.peerId);
      Promise.resolve(action).catch((err) => showError(err.message));
    };
    this.recordButton = recordButton;
    this.cursorEl = document.createElement("div");
    this.cursorEl.className = "cursor";
    this.cursorEl.hidden = true;
    caption.append(this.captionEl, this.statsEl, recordButton);
    tile.append(video, this.cursorEl, caption);
    $("grid").append(tile);
    return tile;
  }

  updateCaption() {
    const open = Object.values(this.channels).filter((c) => c.readyState === "open").length;
    this.captionEl.textContent =
      `${this.peerId} (${this.peerType}) ${this.pc?.connectionState ?? ""}` +
      `${this.restarts ? `, ${this.restarts} recover${this.restarts > 1 ? "ies" : "y"}` : ""}` +
      `, ${open} channel${open === 1 ? "" : "s"} open`;
  }

  showCursor(x, y) {
    const box = this.videoEl.getBoundingClientRect();
    this.cursorEl.hidden = false;
    this.cursorEl.style.left = `${Math.max(0, Math.min(box.width, x))}px`;
    this.cursorEl.style.top = `${Math.max(0, Math.min(box.height, y))}px`;
  }

  // The diagnostics panel (the seed's getConnectionStats, once a second).
  async updateStats() {
    if (this.closed) return;
    const report = await this.pc.getStats();
    const s = summarize(report, this.previous);
    this.previous = s;
    this.summary = s;
    const fmt = (v, digits = 0) => (v == null || Number.isNaN(v) ? "-" : v.toFixed(digits));
    this.statsEl.textContent =
      `rtt ${fmt(s.rttMs, 1)} ms  loss ${fmt(s.lossPercent, 1)} %  ${s.candidateType || "-"}\n` +
      `in ${fmt(s.inKbps)} kbit/s  out ${fmt(s.outKbps)} kbit/s  ${s.frameWidth ?? "-"}x${s.frameHeight ?? "-"} ${fmt(s.inFps)} fps`;
    this.updateCaption();
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    if (this.recorder) stopRecording(this.peerId).catch(() => {});
    this.closeChannels();
    this.pc.close();
    this.tile.remove();
    room.remotes.delete(this.peerId);
  }
}

function round3(x) {
  return Math.round(x * 1000) / 1000;
}

// What the panel shows, from one getStats report (and the previous summary for rates).
function summarize(report, previous) {
  const s = { time: performance.now(), inBytes: 0, outBytes: 0, lost: 0, received: 0 };
  let pairId = null;
  report.forEach((stat) => {
    if (stat.type === "transport" && stat.selectedCandidatePairId) {
      pairId = stat.selectedCandidatePairId;
    }
  });
  report.forEach((stat) => {
    if (!pairId && stat.type === "candidate-pair" && stat.nominated && stat.state === "succeeded") {
      pairId = stat.id;
    }
    if (stat.type === "inbound-rtp") {
      s.inBytes += stat.bytesReceived ?? 0;
      s.lost += stat.packetsLost ?? 0;
      s.received += stat.packetsReceived ?? 0;
      if (stat.kind === "video") {
        s.frameWidth = stat.frameWidth;
        s.frameHeight = stat.frameHeight;
        s.inFps = stat.framesPerSecond;
      }
    }
    if (stat.type === "outbound-rtp") s.outBytes += stat.bytesSent ?? 0;
  });
  const pair = pairId ? report.get(pairId) : null;
  if (pair) {
    s.rttMs = pair.currentRoundTripTime != null ? pair.currentRoundTripTime * 1000 : null;
    s.candidateType = report.get(pair.localCandidateId)?.candidateType ?? "";
    s.remoteCandidateType = report.get(pair.remoteCandidateId)?.candidateType ?? "";
  }
  s.lossPercent = s.lost + s.received > 0 ? (100 * s.lost) / (s.lost + s.received) : null;
  if (previous && s.inBytes >= previous.inBytes && s.outBytes >= previous.outBytes) {
    const seconds = (s.time - previous.time) / 1000;
    s.inKbps = ((s.inBytes - previous.inBytes) * 8) / seconds / 1000;
    s.outKbps = ((s.outBytes - previous.outBytes) * 8) / seconds / 1000;
  }
  return s;
}

function record(entry) {
  room.messages.push({ time_ms: round3(nowMs()), ...entry });
  if (room.messages.length > MAX_MESSAGES) room.messages.splice(0, room.messages.length - MAX_MESSAGES);
}

function appendChat(from, payload) {
  const item = document.createElement("li");
  const who = document.createElement("span");
  who.className = "from";
  who.textContent = `${from}${payload.echo ? " (echo)" : ""}: `;
  item.append(who, String(payload.text ?? ""));
  $("chat-log").append(item);
  item.scrollIntoView({ block: "nearest" });
}

// --- local media: camera, screen share -----------------------------------------------------

function videoSenders() {
  const senders = [];
  for (const remote of room.remotes.values()) {
    for (const transceiver of remote.pc.getTransceivers()) {
      if (transceiver.receiver.track.kind === "video" && !transceiver.stopped) {
        senders.push(transceiver.sender);
      }
    }
  }
  return senders;
}

function showLocal(videoTrack, source) {
  const tracks = [videoTrack, ...room.localStream.getAudioTracks()].filter(Boolean);
  $("local").srcObject = new MediaStream(tracks);
  $("local-source").textContent = source;
  $("share").hidden = source === "screen";
  $("unshare").hidden = source !== "screen";
}

async function shareScreen() {
  if (!room.joined) throw new Error("join a room before sharing the screen");
  if (room.screen) return room.screen.getSettings();
  const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
  const track = stream.getVideoTracks()[0];
  room.screen = track;
  // The browser's own "Stop sharing" ends the track: go back to the camera then.
  track.addEventListener("ended", () => returnToCamera(track));
  // replaceTrack: no renegotiation, the remote keeps its receiver.
  await Promise.all(videoSenders().map((sender) => sender.replaceTrack(track)));
  showLocal(track, "screen");
  emit("", "source-switch", "screen");
  return track.getSettings();
}

async function returnToCamera(track) {
  if (room.screen !== track) return false;
  room.screen = null;
  await Promise.all(videoSenders().map((sender) => sender.replaceTrack(room.camera)));
  if (room.localStream) showLocal(room.camera, "camera");
  emit("", "source-switch", "camera");
  return true;
}

async function stopScreenShare() {
  const track = room.screen;
  if (!track) return false;
  track.stop(); // stop() fires no `ended` event: return to the camera here
  return returnToCamera(track);
}

// --- the lab's synthetic video -------------------------------------------------------------
//
// With video=synthetic the page sends the picture webrtclab.media.SyntheticVideoTrack
// sends: the same scrolled texture and bouncing disc per frame index, and the same stamp
// (frame number, send time on the lab clock, CRC-8) at the bottom.  A lab receiver reads
// the stamp for frame latency and re-renders the frame for PSNR, as for a lab sender.
// The texture and the stamp's dither come from the lab (BrowserPeer serves
// SYNTHETIC_ASSETS_PATH): they are random, so only the lab can reproduce them.

const SYNTHETIC_ASSETS_PATH = "/__webrtclab/synthetic-video";
// As media.py: stamp layout, grey levels, dither patterns, read thresholds.
const STAMP = { columns: 20, rows: 2, dark: 40, bright: 215, patterns: 8, darkMax: 95, brightMin: 155 };
const DISC_RGB = [250, 220, 40];

function stampBand(width, height) {
  const blockW = Math.floor(width / STAMP.columns);
  const blockH = Math.max(8, blockW);
  if (blockW < 4 || STAMP.rows * blockH > Math.floor(height / 2)) return null;
  return { y0: height - STAMP.rows * blockH, blockW, blockH };
}

function crc8(bytes) {
  let crc = 0xff; // polynomial 0x07, initial 0xFF: as media._crc8
  for (const byte of bytes) {
    crc ^= byte;
    for (let i = 0; i < 8; i++) crc = crc & 0x80 ? ((crc << 1) ^ 0x07) & 0xff : (crc << 1) & 0xff;
  }
  return crc;
}

function stampBits(frame, sentMs) {
  const payload = [(frame >> 8) & 0xff, frame & 0xff, (sentMs >> 8) & 0xff, sentMs & 0xff];
  const bytes = [...payload, crc8(payload)];
  const bits = [];
  for (const byte of bytes) for (let i = 7; i >= 0; i--) bits.push((byte >> i) & 1);
  return bits;
}

function bounce(position, span) {
  if (span <= 0) return 0;
  position %= 2 * span;
  return position < span ? position : 2 * span - position;
}

async function syntheticVideoTrack({ width, height, fps, seed }) {
  const query = new URLSearchParams({ width, height, seed });
  const response = await fetch(`${SYNTHETIC_ASSETS_PATH}?${query}`);
  if (!response.ok) throw new Error(`synthetic video: ${response.status} ${await response.text()}`);
  const assets = new Uint8Array(await response.arrayBuffer());
  const tw = 2 * width;
  const textureBytes = 2 * height * tw * 3;
  const band = stampBand(width, height);
  const bandW = band ? STAMP.columns * band.blockW : 0;
  const bandH = band ? height - band.y0 : 0;
  if (assets.length !== textureBytes + STAMP.patterns * bandW * bandH) {
    throw new Error(`synthetic video: ${assets.length} bytes of assets for ${width}x${height}`);
  }
  // The texture as RGBA once, so a frame is row copies.
  const texture = new Uint8ClampedArray((textureBytes / 3) * 4);
  for (let i = 0, j = 0; i < textureBytes; i += 3, j += 4) {
    texture[j] = assets[i];
    texture[j + 1] = assets[i + 1];
    texture[j + 2] = assets[i + 2];
    texture[j + 3] = 255;
  }
  const dither = assets.subarray(textureBytes);
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d", { alpha: false });
  const image = context.createImageData(width, height);
  const pixels = image.data;
  const r = Math.max(4, Math.floor(Math.min(width, height) / 8));

  function draw(index, sentMs) {
    const dy = (index * 2) % height;
    const dx = (index * 3) % width;
    for (let y = 0; y < height; y++) {
      const from = ((dy + y) * tw + dx) * 4;
      pixels.set(texture.subarray(from, from + width * 4), y * width * 4);
    }
    const px = bounce(index * 4, width - 2 * r) + r;
    const py = bounce(index * 3, height - 2 * r) + r;
    for (let y = py - r; y < py + r; y++) {
      for (let x = px - r; x < px + r; x++) {
        if ((y - py) ** 2 + (x - px) ** 2 > r * r) continue;
        const k = (y * width + x) * 4;
        [pixels[k], pixels[k + 1], pixels[k + 2]] = DISC_RGB;
      }
    }
    if (!band) return;
    const bits = stampBits(index & 0xffff, sentMs & 0xffff);
    const pattern = (index % STAMP.patterns) * bandW * bandH;
    for (let y = 0; y < bandH; y++) {
      const row = Math.floor(y / band.blockH) * STAMP.columns;
      for (let x = 0; x < bandW; x++) {
        const level = bits[row + Math.floor(x / band.blockW)] ? STAMP.bright : STAMP.dark;
        // uint8 wrap-around, as numpy adds the dither patterns
        const value = (level + dither[pattern + y * bandW + x]) & 0xff;
        const k = ((band.y0 + y) * width + x) * 4;
        pixels[k] = pixels[k + 1] = pixels[k + 2] = value;
      }
    }
  }

  const stream = canvas.captureStream(0); // a frame exactly when requestFrame() is called
  const track = stream.getVideoTracks()[0];
  const start = performance.now();
  let index = 0;
  const tick = () => {
    if (track.readyState === "ended") return;
    draw(index, Math.floor(nowMs()));
    context.putImageData(image, 0, 0);
    track.requestFrame();
    index += 1;
    // Due times from the start, as media.FramePacer: one index per frame, no drift.
    setTimeout(tick, Math.max(0, start + (index * 1000) / fps - performance.now()));
  };
  tick();
  return track;
}

// Lab hook: with window.webrtclabFrames (BrowserPeer exposes it), every presented frame
// of a remote's video is reported as [remote, time_ms, frame, sent_ms] (-1, -1 when its
// stamp does not read), time_ms on the lab clock: the lab's QualityMonitor turns them into
// frame latency, intervals and freezes, as for frames an aiortc peer decodes.
const FRAME_REPORT_MS = 250;
const frameReports = [];
let frameReportTimer = null;

function reportFrame(row) {
  frameReports.push(row);
  frameReportTimer ??= setTimeout(() => {
    frameReportTimer = null;
    const rows = frameReports.splice(0);
    window.webrtclabFrames?.(rows)?.catch?.(() => {}); // rejects once the page is closing
  }, FRAME_REPORT_MS);
}

class StampReader {
  // The stamp band of each presented frame, drawn at its own size into a small canvas
  // and read as media.read_stamp reads RGB: block means of their central half.
  constructor(peerId) {
    this.peerId = peerId;
    this.canvas = document.createElement("canvas");
    this.context = this.canvas.getContext("2d", { willReadFrequently: true });
  }

  read(video, meta) {
    const time = meta.presentationTime ?? performance.now();
    const timeMs = performance.timeOrigin + time - (room.config?.epochMs ?? 0);
    const stamp = this.decode(video, meta.width, meta.height);
    reportFrame([this.peerId, timeMs, stamp?.frame ?? -1, stamp?.sentMs ?? -1]);
  }

  decode(video, width, height) {
    const band = stampBand(width, height);
    if (!band) return null;
    const bandW = STAMP.columns * band.blockW;
    const bandH = height - band.y0;
    if (this.canvas.width !== bandW || this.canvas.height !== bandH) {
      this.canvas.width = bandW;
      this.canvas.height = bandH;
    }
    this.context.drawImage(video, 0, band.y0, bandW, bandH, 0, 0, bandW, bandH);
    const pixels = this.context.getImageData(0, 0, bandW, bandH).data;
    const my = Math.floor(band.blockH / 4);
    const mx = Math.floor(band.blockW / 4);
    const bits = [];
    for (let row = 0; row < STAMP.rows; row++) {
      for (let column = 0; column < STAMP.columns; column++) {
        let sum = 0;
        let count = 0;
        for (let y = row * band.blockH + my; y < (row + 1) * band.blockH - my; y++) {
          for (let x = column * band.blockW + mx; x < (column + 1) * band.blockW - mx; x++) {
            const k = (y * bandW + x) * 4;
            sum += 0.299 * pixels[k] + 0.587 * pixels[k + 1] + 0.114 * pixels[k + 2];
            count += 1;
          }
        }
        const mean = sum / count;
        if (mean >= STAMP.brightMin) bits.push(1);
        else if (mean <= STAMP.darkMax) bits.push(0);
        else return null;
      }
    }
    const word = (from, count) => bits.slice(from, from + count).reduce((v, b) => v * 2 + b, 0);
    const frame = word(0, 16);
    const sentMs = word(16, 16);
    const payload = [frame >> 8, frame & 0xff, sentMs >> 8, sentMs & 0xff];
    return crc8(payload) === word(32, 8) ? { frame, sentMs } : null;
  }
}

// --- recording ------------------------------------------------------------------------------

function startRecording(peerId) {
  const remote = peerId ? room.remotes.get(peerId) : room.remotes.values().next().value;
  if (!remote) throw new Error(peerId ? `no remote "${peerId}" to record` : "no remote to record");
  if (remote.recorder) throw new Error(`already recording "${remote.peerId}"`);
  const stream = remote.videoEl.srcObject;
  if (!stream) throw new Error(`nothing received from "${remote.peerId}" yet`);
  const type = ["video/webm;codecs=vp8,opus", "video/webm"].find((t) =>
    MediaRecorder.isTypeSupported(t),
  );
  const recorder = new MediaRecorder(stream, type ? { mimeType: type } : {});
  const chunks = [];
  recorder.ondataavailable = (event) => {
    if (event.data.size) chunks.push(event.data);
  };
  remote.recorder = { recorder, chunks, started: nowMs() };
  remote.recordButton.textContent = "Stop recording";
  recorder.start(1000); // a chunk a second: a crash loses at most the last second
  emit(remote.peerId, "recording", "started");
  return remote.peerId;
}

function stopRecording(peerId) {
  const remote = peerId ? room.remotes.get(peerId) : [...room.remotes.values()].find((r) => r.recorder);
  if (!remote?.recorder) return Promise.reject(new Error(`not recording "${peerId ?? "anyone"}"`));
  const { recorder, chunks, started } = remote.recorder;
  remote.recorder = null;
  remote.recordButton.textContent = "Record";
  return new Promise((resolve) => {
    recorder.onstop = () => {
      const blob = new Blob(chunks, { type: recorder.mimeType || "video/webm" });
      const url = URL.createObjectURL(blob);
      const filename = `webrtclab-${remote.peerId}-${Date.now()}.webm`;
      const link = document.createElement("a");
      link.href = url;
      link.download = filename;
      link.textContent = `${filename} (${Math.round(blob.size / 1024)} KiB)`;
      $("recordings").append(link);
      emit(remote.peerId, "recording", `stopped ${blob.size} bytes`);
      resolve({
        peer: remote.peerId,
        url,
        filename,
        size: blob.size,
        type: blob.type,
        duration_ms: nowMs() - started,
      });
    };
    recorder.stop();
  });
}

// --- join and leave -------------------------------------------------------------------------

function readConfig() {
  const params = new URLSearchParams(location.search);
  const number = (name, fallback) => {
    const value = Number(params.get(name));
    return params.has(name) && Number.isFinite(value) && value > 0 ? value : fallback;
  };
  return {
    room: params.get("room") ?? "",
    user: params.get("user") ?? "",
    token: params.get("token") ?? "",
    relay: ["1", "true", "yes"].includes((params.get("relay") ?? "").toLowerCase()),
    width: number("width", 640),
    height: number("height", 480),
    fps: number("fps", 30),
    // "camera" (the browser's camera) or "synthetic" (the lab's synthetic video)
    video: params.get("video") === "synthetic" ? "synthetic" : "camera",
    seed: Math.floor(number("seed", 0)),
    epochMs: 0,
  };
}

async function join(options = {}) {
  if (room.ws) throw new Error(`already joined room "${room.config.room}" as "${room.config.user}"`);
  const config = { ...readConfig(), ...options };
  for (const key of ["room", "user"]) {
    if (typeof config[key] !== "string" || !config[key] || config[key].length > 64) {
      const error = new Error(`${key} must be 1-64 characters, got ${JSON.stringify(config[key])}`);
      showError(error.message);
      throw error;
    }
  }
  room.config = config;
  room.leaving = false;
  clearError();
  setStatus(`joining "${config.room}" as "${config.user}"`);
  $("join-form").hidden = true;
  try {
    // A lab may hand its ICE servers over directly (join({iceServers})); else ask the server.
    room.iceServers = Array.isArray(config.iceServers)
      ? config.iceServers
      : await fetchIceServers(config.token);
    const synthetic = config.video === "synthetic";
    room.localStream = await navigator.mediaDevices.getUserMedia({
      video: synthetic
        ? false
        : {
            width: { ideal: config.width },
            height: { ideal: config.height },
            frameRate: { ideal: config.fps },
          },
      audio: { echoCancellation: true, noiseSuppression: true },
    });
    if (synthetic) room.localStream.addTrack(await syntheticVideoTrack(config));
    room.camera = room.localStream.getVideoTracks()[0] ?? null;
    showLocal(room.camera, "camera");
    const peers = await openSignaling(config);
    $("local-name").textContent = config.user;
    setStatus(`room "${config.room}" as "${config.user}"`);
    $("controls").hidden = false;
    $("chat").hidden = false;
    room.statsTimer = setInterval(() => {
      for (const remote of room.remotes.values()) remote.updateStats().catch(() => {});
    }, STATS_PERIOD_MS);
    emit("", "joined", config.room);
    return peers;
  } catch (err) {
    showError(err.message);
    setStatus("not joined");
    await teardown();
    $("join-form").hidden = false; // to fix the room, user or token and retry
    throw err;
  }
}

async function teardown() {
  room.leaving = true;
  clearInterval(room.statsTimer);
  room.statsTimer = null;
  const recording = [...room.remotes.values()].filter((r) => r.recorder);
  await Promise.all(recording.map((r) => stopRecording(r.peerId).catch(() => {})));
  for (const remote of [...room.remotes.values()]) remote.close();
  room.early.clear();
  room.screen?.stop();
  room.screen = null;
  room.localStream?.getTracks().forEach((t) => t.stop());
  room.localStream = null;
  room.camera = null;
  room.ws?.close();
  room.ws = null;
  room.joined = false;
}

async function leave() {
  if (!room.ws) return false;
  if (room.joined) send({ type: "leave", roomId: room.config.room });
  await teardown();
  $("controls").hidden = true;
  setStatus("left");
  emit("", "left", room.config.room);
  return true;
}

// --- automation API -------------------------------------------------------------------------

function remoteTargets(to) {
  if (to == null) return [...room.remotes.values()];
  const remote = room.remotes.get(to);
  if (!remote) throw new Error(`no remote "${to}"`);
  return [remote];
}

function state() {
  const remotes = {};
  for (const [peerId, r] of room.remotes) {
    remotes[peerId] = {
      connectionState: r.pc.connectionState,
      iceConnectionState: r.pc.iceConnectionState,
      signalingState: r.pc.signalingState,
      iceUfrag: /^a=ice-ufrag:(\S+)/m.exec(r.pc.localDescription?.sdp ?? "")?.[1] ?? null,
      candidateType: r.summary.candidateType ?? "",
      remoteCandidateType: r.summary.remoteCandidateType ?? "",
      rttMs: r.summary.rttMs ?? null,
      peerType: r.peerType,
      initiator: r.initiator,
      restarts: r.restarts,
      channels: Object.fromEntries(Object.entries(r.channels).map(([k, c]) => [k, c.readyState])),
      video: { ...r.video },
      recording: Boolean(r.recorder),
    };
  }
  return {
    joined: room.joined,
    room: room.config?.room ?? null,
    user: room.config?.user ?? null,
    relay: Boolean(room.config?.relay),
    iceServers: room.iceServers.map((s) => ({ urls: s.urls })), // never the credentials
    sharing: Boolean(room.screen),
    sending: room.screen ? "screen" : room.camera ? "camera" : null,
    error: room.error,
    errors: [...room.errors],
    remotes,
  };
}

async function stats() {
  const out = {};
  await Promise.all(
    [...room.remotes.entries()].map(async ([peerId, remote]) => {
      out[peerId] = [...(await remote.pc.getStats()).values()];
    }),
  );
  return out;
}

window.webrtclab = {
  join,
  leave,
  state,
  stats,
  messages: () => room.messages.slice(),
  sendChat: (text, to) => remoteTargets(to).filter((r) => r.sendChat(String(text))).length,
  sendCursor: (x, y, to) => remoteTargets(to).filter((r) => r.sendCursor(x, y)).length,
  shareScreen,
  stopScreenShare,
  // What the browser's "Stop sharing" does: end the screen track with an `ended` event.
  endScreenShare: () => {
    if (!room.screen) return false;
    const track = room.screen;
    track.stop();
    track.dispatchEvent(new Event("ended"));
    return true;
  },
  startRecording,
  stopRecording,
  restart: (peerId) => {
    const [remote] = remoteTargets(peerId);
    return new Promise((resolve, reject) => {
      remote.schedule(() => remote.recover(true).then(() => resolve(remote.restarts), reject));
    });
  },
};

// --- the page -------------------------------------------------------------------------------

function setUpPage() {
  const config = readConfig();
  const form = $("join-form");
  form.room.value = config.room;
  form.user.value = config.user;
  form.token.value = config.token;
  form.relay.checked = config.relay;
  form.onsubmit = (event) => {
    event.preventDefault();
    const values = {
      room: form.room.value.trim(),
      user: form.user.value.trim(),
      token: form.token.value,
      relay: form.relay.checked,
    };
    const query = new URLSearchParams({ room: values.room, user: values.user });
    if (values.relay) query.set("relay", "1");
    history.replaceState(null, "", `?${query}`); // the token stays out of the address bar
    join(values).catch(() => {
      form.hidden = false; // the error is shown; let the user fix the form
    });
  };
  $("chat-form").onsubmit = (event) => {
    event.preventDefault();
    const input = $("chat-input");
    if (!input.value) return;
    const text = input.value;
    if (window.webrtclab.sendChat(text) > 0) {
      appendChat(config.user || room.config?.user || "me", { text });
      input.value = "";
    }
  };
  $("share").onclick = () => shareScreen().catch((err) => showError(`screen share: ${err.message}`));
  $("unshare").onclick = () => stopScreenShare();
  $("leave").onclick = () => leave().then(() => { form.hidden = false; });
  let scheduled = false;
  $("grid").addEventListener("mousemove", ({ offsetX, offsetY }) => {
    // At most one cursor message per frame; back-pressure drops the rest.
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      for (const remote of room.remotes.values()) remote.sendCursor(offsetX, offsetY);
    });
  });
  const autojoin = new URLSearchParams(location.search).get("autojoin") !== "0";
  if (config.room && config.user && autojoin) {
    join().catch(() => {
      form.hidden = false;
    });
  } else if (autojoin) {
    form.hidden = false;
  }
}

setUpPage();
