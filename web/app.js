// The page `p2p signal` serves: join a room, watch every sender in it,
// publish a camera and/or microphone, chat over data channels.
//
// Chat model: every page that has joined runs one Sender. While not
// publishing, it is a data-only sender (chat lines go out on its data
// channels); publishing replaces it by a sender with media + data. So lines
// typed here reach every receiver in the room — other pages and
// `p2p receive` alike — and lines from any sender (pages, `p2p send --data`)
// appear here with that sender's nickname.

import { Sender, Receiver, WebSocketDriver, defaultSignalUrl } from './p2p.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const NICK_KEY = 'p2p.nickname';

const app = {
  driver: null,
  receiver: null,
  sender: null,
  stream: null, // our published MediaStream
  room: null,
  nickname: '',
  everOpen: false,
  tiles: new Map(), // sender id → tile record
};
window.p2pApp = app; // for debugging from the console (and tests)

// ---------------------------------------------------------------------------
// Errors and status
// ---------------------------------------------------------------------------

function showError(key, text) {
  let el = document.querySelector(`#errors [data-key="${key}"]`);
  if (!el) {
    el = document.createElement('div');
    el.className = 'error';
    el.dataset.key = key;
    const msg = document.createElement('span');
    const close = document.createElement('button');
    close.type = 'button';
    close.className = 'dismiss';
    close.setAttribute('aria-label', 'Dismiss');
    close.textContent = '×';
    close.addEventListener('click', () => el.remove());
    el.append(msg, close);
    $('errors').append(el);
  }
  el.firstChild.textContent = text;
}

function clearError(key) {
  document.querySelector(`#errors [data-key="${key}"]`)?.remove();
}

function setStatus(state, text) {
  const el = $('status');
  el.dataset.state = state;
  el.textContent = text;
}

// ---------------------------------------------------------------------------
// Tiles
// ---------------------------------------------------------------------------

function nicknameOf(state, id) {
  const n = state && typeof state.nickname === 'string' && state.nickname.trim();
  return n || `sender ${id.slice(0, 8)}`;
}

function createTile(id, { local = false } = {}) {
  const el = document.createElement('figure');
  el.className = 'tile no-media';
  el.dataset.senderId = id;
  if (local) el.classList.add('local');
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  video.muted = local;
  const placeholder = document.createElement('div');
  placeholder.className = 'placeholder';
  const caption = document.createElement('figcaption');
  const name = document.createElement('span');
  name.className = 'name';
  const badges = document.createElement('span');
  badges.className = 'badges';
  const mic = document.createElement('span');
  mic.className = 'badge mic';
  const cam = document.createElement('span');
  cam.className = 'badge cam';
  badges.append(mic, cam);
  caption.append(name, badges);
  const unmute = document.createElement('button');
  unmute.type = 'button';
  unmute.className = 'unmute';
  unmute.textContent = 'Tap to unmute';
  unmute.hidden = true;
  unmute.addEventListener('click', () => {
    video.muted = false;
    video.play().catch(() => {});
    unmute.hidden = true;
  });
  el.append(video, placeholder, caption, unmute);
  const tile = { id, el, video, placeholder, name, mic, cam, unmute, state: {}, stream: null, local };
  app.tiles.set(id, tile);
  $('tiles').append(el);
  updateEmpty();
  return tile;
}

function tileFor(id) {
  return app.tiles.get(id) || createTile(id);
}

function updateTile(tile, state) {
  tile.state = state || {};
  const nick = nicknameOf(tile.state, tile.id) + (tile.local ? ' (you)' : '');
  tile.name.textContent = nick;
  tile.placeholder.textContent = nick.slice(0, 1).toUpperCase();
  const stream = tile.stream;
  const hasAudio = !!stream && stream.getAudioTracks().length > 0;
  const hasVideo = !!stream && stream.getVideoTracks().length > 0;
  // State says what the sender has switched on; without state, trust the tracks.
  const audioOn = hasAudio && tile.state.audio !== false;
  const videoOn = hasVideo && tile.state.video !== false;
  tile.mic.textContent = audioOn ? 'mic on' : 'mic off';
  tile.mic.classList.toggle('off', !audioOn);
  tile.cam.textContent = videoOn ? 'cam on' : 'cam off';
  tile.cam.classList.toggle('off', !videoOn);
  tile.el.classList.toggle('video-off', !videoOn);
  tile.el.classList.toggle('no-media', !stream);
  placeTile(tile);
  tile.el.dataset.audio = String(audioOn);
  tile.el.dataset.video = String(videoOn);
  updateEmpty();
}

// Senders with media get a video tile; chat-only ones a chip in "Also here".
function placeTile(tile) {
  const home = tile.stream ? $('tiles') : $('people');
  if (tile.el.parentElement !== home) home.append(tile.el);
}

function attachStream(tile, stream) {
  tile.stream = stream;
  tile.video.srcObject = stream;
  const refresh = () => updateTile(tile, tile.state);
  stream.addEventListener('addtrack', refresh);
  stream.addEventListener('removetrack', refresh);
  if (!tile.local) {
    tile.video.muted = false;
    tile.video.play().catch(() => {
      // Autoplay with sound needs a user gesture: play muted, offer to unmute.
      tile.video.muted = true;
      tile.video.play().catch(() => {});
      tile.unmute.hidden = false;
    });
  }
  refresh();
}

function removeTile(id) {
  const tile = app.tiles.get(id);
  if (!tile) return;
  tile.video.srcObject = null;
  tile.el.remove();
  app.tiles.delete(id);
  updateEmpty();
}

function updateEmpty() {
  const tiles = [...app.tiles.values()];
  $('empty').hidden = tiles.some((t) => t.stream);
  $('people').hidden = !tiles.some((t) => !t.stream);
}

// ---------------------------------------------------------------------------
// Chat
// ---------------------------------------------------------------------------

function chatLine(nick, text, { self = false, system = false } = {}) {
  const li = document.createElement('li');
  li.className = 'chat-line';
  if (self) li.classList.add('self');
  if (system) li.classList.add('system');
  const who = document.createElement('span');
  who.className = 'nick';
  who.textContent = nick;
  const what = document.createElement('span');
  what.className = 'text';
  what.textContent = text;
  li.append(who, what);
  const log = $('chat-log');
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  log.append(li);
  while (log.children.length > 500) log.firstChild.remove();
  if (atBottom || self) log.scrollTop = log.scrollHeight;
}

function messageText(message) {
  if (typeof message === 'string') return message;
  if (message instanceof ArrayBuffer) {
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(message);
    } catch (e) {
      return `[${message.byteLength} bytes of binary data]`;
    }
  }
  return String(message);
}

// ---------------------------------------------------------------------------
// Session
// ---------------------------------------------------------------------------

function currentState() {
  const audio = !!app.stream && app.stream.getAudioTracks().some((t) => t.enabled);
  const video = !!app.stream && app.stream.getVideoTracks().some((t) => t.enabled);
  return { nickname: app.nickname, audio, video };
}

function startSender() {
  const sender = new Sender({ driver: app.driver });
  sender.addEventListener('error', (e) => console.warn('sender error', e.detail));
  sender.addEventListener('message', (e) => {
    // A receiver talking back over our channel.
    const peer = app.receiver?.peers.get(e.detail.id);
    chatLine(nicknameOf(peer?.state, e.detail.id), messageText(e.detail.message));
  });
  app.receiver.ignore.add(sender.id); // never watch ourselves
  sender.start({ stream: app.stream, room: app.room, state: currentState(), dataChannel: true });
  app.sender = sender;
  if (app.stream) {
    const tile = createTile(sender.id, { local: true });
    attachStream(tile, app.stream);
    updateTile(tile, currentState());
  }
}

function stopSender() {
  if (!app.sender) return;
  app.sender.stop();
  removeTile(app.sender.id);
  app.sender = null;
}

function join(room, nickname) {
  app.room = room;
  app.nickname = nickname;
  try {
    localStorage.setItem(NICK_KEY, nickname);
  } catch (e) {
    /* private mode */
  }
  const url = new URL(location.href);
  url.searchParams.set('room', room);
  history.replaceState(null, '', url);

  $('join').hidden = true;
  $('session').hidden = false;
  $('nick').value = nickname;
  $('room-label').hidden = false;
  $('room-label').textContent = `room ${room}`;
  document.title = `${room} · p2p`;

  const signal = params.get('signal') || defaultSignalUrl(location);
  app.everOpen = false;
  app.driver = new WebSocketDriver(signal, {
    token: params.get('token') || undefined,
    secret: params.get('secret') || undefined,
  });
  app.driver.addEventListener('status', (e) => {
    const { state, error } = e.detail;
    if (state === 'open') {
      app.everOpen = true;
      clearError('relay');
      setStatus('open', params.get('secret') ? 'connected · encrypted' : 'connected');
    } else if (state === 'connecting') {
      setStatus('connecting', app.everOpen ? 'reconnecting…' : 'connecting…');
    } else {
      setStatus('closed', 'relay unreachable');
      const where = signal.replace(/[?#].*$/, '');
      showError('relay', app.everOpen
        ? `Lost the connection to the relay (${where}); reconnecting… Established video keeps flowing.`
        : `Cannot reach the relay at ${where}${error ? '' : ''}; retrying…`);
    }
  });
  app.driver.addEventListener('relay-error', (e) => showError('relay-frame', `Relay: ${e.detail.error}`));

  const receiver = new Receiver({ driver: app.driver });
  app.receiver = receiver;
  receiver.addEventListener('connect', (e) => {
    const tile = tileFor(e.detail.id);
    updateTile(tile, e.detail.state);
  });
  receiver.addEventListener('stream', (e) => {
    const tile = tileFor(e.detail.id);
    tile.state = e.detail.state;
    attachStream(tile, e.detail.stream);
  });
  receiver.addEventListener('sync', (e) => {
    const tile = app.tiles.get(e.detail.id);
    if (tile) updateTile(tile, e.detail.state);
  });
  receiver.addEventListener('message', (e) => {
    chatLine(nicknameOf(e.detail.state, e.detail.id), messageText(e.detail.message));
  });
  receiver.addEventListener('dispose', (e) => removeTile(e.detail.id));
  receiver.addEventListener('error', (e) => console.warn('receiver error', e.detail));
  receiver.start({ room });

  startSender();
}

function leave() {
  stopPublishing({ restartChat: false });
  stopSender();
  app.receiver?.stop();
  app.receiver = null;
  for (const id of [...app.tiles.keys()]) removeTile(id);
  app.driver?.close();
  app.driver = null;
  $('chat-log').replaceChildren();
  $('session').hidden = true;
  $('join').hidden = false;
  $('room-label').hidden = true;
  clearError('relay');
  setStatus('idle', 'not joined');
}

async function publish() {
  const wantVideo = $('want-video').checked;
  const wantAudio = $('want-audio').checked;
  if (!wantVideo && !wantAudio) {
    showError('media', 'Choose a camera, a microphone, or both to publish.');
    return;
  }
  if (!navigator.mediaDevices?.getUserMedia) {
    showError('media', 'This browser only lets a page use the camera on https:// or http://localhost. '
      + 'Open the page that way to publish.');
    return;
  }
  $('publish').disabled = true;
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      video: wantVideo ? { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } } : false,
      audio: wantAudio,
    });
    clearError('media');
    stopSender();
    app.stream = stream;
    startSender();
    $('publish-off').hidden = true;
    $('publish-on').hidden = false;
    $('toggle-video').hidden = !wantVideo;
    $('toggle-audio').hidden = !wantAudio;
    setToggle($('toggle-video'), true, 'Camera');
    setToggle($('toggle-audio'), true, 'Mic');
  } catch (e) {
    const what = [wantVideo && 'camera', wantAudio && 'microphone'].filter(Boolean).join(' and ');
    let text;
    if (e.name === 'NotAllowedError' || e.name === 'SecurityError') {
      text = `Permission to use the ${what} was denied. Allow it in the browser's site settings and try again.`;
    } else if (e.name === 'NotFoundError' || e.name === 'OverconstrainedError') {
      text = `No ${what} found on this device.`;
    } else if (e.name === 'NotReadableError') {
      text = `The ${what} is in use by another application.`;
    } else {
      text = `Could not start the ${what}: ${e.message || e.name}`;
    }
    showError('media', text);
  } finally {
    $('publish').disabled = false;
  }
}

function stopPublishing({ restartChat = true } = {}) {
  if (!app.stream) return;
  stopSender();
  for (const t of app.stream.getTracks()) t.stop();
  app.stream = null;
  $('publish-off').hidden = false;
  $('publish-on').hidden = true;
  if (restartChat && app.receiver) startSender();
}

function setToggle(button, on, label) {
  button.setAttribute('aria-pressed', String(on));
  button.textContent = `${label} ${on ? 'on' : 'off'}`;
}

function toggle(kind) {
  if (!app.stream) return;
  const tracks = kind === 'video' ? app.stream.getVideoTracks() : app.stream.getAudioTracks();
  const on = !tracks.some((t) => t.enabled);
  for (const t of tracks) t.enabled = on;
  setToggle($(kind === 'video' ? 'toggle-video' : 'toggle-audio'), on, kind === 'video' ? 'Camera' : 'Mic');
  syncState();
}

function syncState() {
  const state = currentState();
  app.sender?.sync(state);
  if (app.sender) {
    const tile = app.tiles.get(app.sender.id);
    if (tile) updateTile(tile, state);
  }
}

// ---------------------------------------------------------------------------
// Wiring
// ---------------------------------------------------------------------------

function defaultNickname() {
  const fromUrl = params.get('nick') || params.get('nickname') || params.get('name');
  if (fromUrl) return fromUrl.slice(0, 40);
  try {
    const saved = localStorage.getItem(NICK_KEY);
    if (saved) return saved;
  } catch (e) {
    /* private mode */
  }
  return `guest-${Math.floor(Math.random() * 9000 + 1000)}`;
}

function init() {
  const nick = defaultNickname();
  $('join-nick').value = nick;
  $('join-room').value = params.get('room') || '';

  $('join').addEventListener('submit', (e) => {
    e.preventDefault();
    const room = $('join-room').value.trim();
    const nickname = $('join-nick').value.trim();
    if (room && nickname) join(room, nickname);
  });
  $('publish').addEventListener('click', publish);
  $('stop').addEventListener('click', () => stopPublishing());
  $('toggle-video').addEventListener('click', () => toggle('video'));
  $('toggle-audio').addEventListener('click', () => toggle('audio'));
  $('leave').addEventListener('click', leave);
  $('nick').addEventListener('change', () => {
    const n = $('nick').value.trim();
    if (!n) {
      $('nick').value = app.nickname;
      return;
    }
    app.nickname = n;
    try {
      localStorage.setItem(NICK_KEY, n);
    } catch (e) {
      /* private mode */
    }
    syncState();
  });
  $('chat-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const input = $('chat-input');
    const text = input.value;
    if (!text.trim() || !app.sender) return;
    // One message per line, as `p2p receive` prints them.
    for (const line of text.split(/\r?\n/)) app.sender.send(line);
    chatLine(`${app.nickname} (you)`, text, { self: true });
    input.value = '';
  });
  window.addEventListener('pagehide', () => {
    app.sender?.stop();
    app.receiver?.stop();
  });

  const room = params.get('room');
  if (room && room.trim()) join(room.trim(), nick);
  else $('join-room').focus();
}

init();
