// The seed app's Node signaling relay (its server/signaling.ts: the WebRTC app whose protocol the lab speaks),
// as a baseline for bench_signaling.py: same protocol, same `ws` server, same
// JSON.parse / JSON.stringify({...msg, from}) per relayed message.
//
// Usage: node seed_relay.js [maxLifetimeSeconds]
// Listens on 127.0.0.1 on a free port, prints {"port": P} on stdout, and exits when
// stdin closes (its parent went away) or after maxLifetimeSeconds (default 600).
'use strict';

const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');

const peers = new Map();
const rooms = new Map();

function sendToPeer(peerId, msg) {
  const peer = peers.get(peerId);
  if (peer && peer.ws.readyState === WebSocket.OPEN) {
    peer.ws.send(JSON.stringify(msg));
  }
}

function cleanup(userId, roomId) {
  peers.delete(userId);
  const room = rooms.get(roomId);
  if (room) {
    room.delete(userId);
    if (room.size === 0) rooms.delete(roomId);
    else room.forEach((peerId) => sendToPeer(peerId, { type: 'peer-left', peerId: userId }));
  }
}

function setupSignaling(server) {
  const wss = new WebSocketServer({ server, path: '/signal' });
  wss.on('connection', (ws) => {
    let userId = null;
    ws.on('message', (data) => {
      let msg;
      try {
        msg = JSON.parse(data.toString());
      } catch {
        ws.send(JSON.stringify({ type: 'error', message: 'Invalid JSON' }));
        return;
      }
      if (msg.type === 'join') {
        userId = msg.userId;
        const roomId = msg.roomId;
        peers.set(userId, { ws, userId, roomId });
        if (!rooms.has(roomId)) rooms.set(roomId, new Set());
        const room = rooms.get(roomId);
        const existingPeers = [...room].filter((id) => id !== userId);
        ws.send(JSON.stringify({ type: 'room-joined', peers: existingPeers }));
        existingPeers.forEach((peerId) => {
          sendToPeer(peerId, { type: 'peer-joined', peerId: userId });
        });
        room.add(userId);
        return;
      }
      if (!userId) {
        ws.send(JSON.stringify({ type: 'error', message: 'Must join a room first' }));
        return;
      }
      if (msg.type === 'offer' || msg.type === 'answer' || msg.type === 'ice-candidate') {
        sendToPeer(msg.to, { ...msg, from: userId });
      }
      if (msg.type === 'leave') {
        cleanup(userId, msg.roomId);
        userId = null;
      }
    });
    ws.on('close', () => {
      if (userId) {
        const peer = peers.get(userId);
        if (peer && peer.roomId) cleanup(userId, peer.roomId);
      }
    });
  });
}

const lifetime = Number(process.argv[2] || 600);
const server = http.createServer((req, res) => {
  res.writeHead(404);
  res.end();
});
setupSignaling(server);
server.listen({ host: '127.0.0.1', port: 0, backlog: 2048 }, () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n');
});
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
setTimeout(() => process.exit(0), lifetime * 1000).unref();
