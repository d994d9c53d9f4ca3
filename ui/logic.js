// The room view's state, changed only through its one reducer
// (`applyEvent`): the events the app sends, and the window's own actions
// (`local-mute`). No DOM and no IPC here, so it is tested in Node with
// plain objects.

/** A fresh room view. */
export function emptyRoom(me) {
  return {
    me,
    screen: "room", // "room" | "kicked" | "left"
    connection: "CONNECTED",
    kickedReason: null,
    quality: 0,
    // What media travels over once known: "udp" | "tcp" | "relay".
    transport: null,
    // What this user sends: muted by the toolbar.
    muted: { audio: false, video: false },
    // What of it the server does not forward (the backend's SetUserBlocked).
    blocked: { audio: false, video: false },
    // Until when (ms since the epoch) the "you are muted" hint shows: the
    // muted microphone heard a voice.
    mutedHintUntil: 0,
    // userId -> {userId, role, hasStream, audio, video, audioMuted, videoMuted, volume, subscribed}
    peers: {},
    // The call's chat, oldest first: {userId, text, sentAt, mine}; the last CHAT_KEEP.
    chat: [],
    // Messages from others not yet seen (the chat panel closed).
    unread: 0,
    chatOpen: false,
    // Screens shared by others (their `sub` streams): userId -> {userId, subscribed}.
    screens: {},
    // What this user shares (`screen` or `window:ID`), or null.
    sharing: null,
  };
}

/** Whether an event is about a `sub` stream (a shared screen). */
function isScreen(e) {
  return e.streamType === "sub";
}

/** How many chat messages a call keeps. */
export const CHAT_KEEP = 500;

function peer(state, userId) {
  if (!state.peers[userId]) {
    state.peers[userId] = {
      userId,
      role: "anchor",
      hasStream: false,
      audio: false,
      video: false,
      audioMuted: false,
      videoMuted: false,
      volume: 0,
      subscribed: false,
    };
  }
  return state.peers[userId];
}

/** How long the "you are muted" hint shows after a voice was heard. */
export const MUTED_HINT_MS = 4000;

/** Whether the "you are muted" hint shows at `now`. */
export function mutedHint(state, now = Date.now()) {
  return state.muted.audio && now < state.mutedHintUntil;
}

/**
 * What the own microphone and camera send to the others: `"on"`, `"off"`
 * (muted here) or `"blocked"` (the app's backend stopped forwarding it:
 * SetUserBlocked; the camera's own picture still shows here).
 */
export function selfSends(state) {
  const of = (kind) => (state.muted[kind] ? "off" : state.blocked[kind] ? "blocked" : "on");
  return { mic: of("audio"), cam: of("video") };
}

/** Volume at or above which a user counts as speaking. */
export const SPEAKING = 12;

/**
 * The reducer: applies one app event (its JSON payload) or one of the
 * window's actions (`{event: "local-mute", audio?, video?}`, `{event:
 * "local-chat", text, sentAt}` for an own message sent, `{event:
 * "local-chat-open", open}`) to the state, in place.
 */
export function applyEvent(state, e) {
  switch (e.event) {
    case "local-mute":
      if (typeof e.audio === "boolean") state.muted.audio = e.audio;
      if (typeof e.video === "boolean") state.muted.video = e.video;
      if (!state.muted.audio) state.mutedHintUntil = 0;
      break;
    case "speaking-while-muted":
      // `now` for tests; the app's events carry none.
      if (state.muted.audio) state.mutedHintUntil = (e.now ?? Date.now()) + MUTED_HINT_MS;
      break;
    case "peer-join":
      peer(state, e.userId).role = e.role;
      break;
    case "peer-leave":
      delete state.peers[e.userId];
      delete state.screens[e.userId];
      break;
    case "peer-role":
      peer(state, e.userId).role = e.role;
      break;
    case "stream-added": {
      if (isScreen(e)) {
        state.screens[e.userId] = { userId: e.userId, subscribed: false };
        break;
      }
      const p = peer(state, e.userId);
      Object.assign(p, { hasStream: true, audio: e.audio, video: e.video });
      break;
    }
    case "stream-subscribed":
      if (isScreen(e)) {
        if (state.screens[e.userId]) state.screens[e.userId].subscribed = true;
        break;
      }
      peer(state, e.userId).subscribed = true;
      break;
    case "stream-removed": {
      if (isScreen(e)) {
        delete state.screens[e.userId];
        break;
      }
      const p = peer(state, e.userId);
      Object.assign(p, { hasStream: false, subscribed: false, volume: 0, videoPaused: false });
      break;
    }
    case "stream-updated": {
      if (isScreen(e)) break;
      const p = peer(state, e.userId);
      Object.assign(p, {
        audioMuted: e.audioMuted,
        videoMuted: e.videoMuted,
        videoPaused: Boolean(e.videoPaused),
      });
      break;
    }
    case "audio-volume":
      for (const p of Object.values(state.peers)) p.volume = 0;
      for (const v of e.result || []) {
        if (v.userId !== state.me) peer(state, v.userId).volume = v.audioVolume;
      }
      break;
    case "network-quality":
      state.quality = Math.max(e.uplinkNetworkQuality, e.downlinkNetworkQuality);
      if (e.transport) state.transport = e.transport;
      break;
    case "connection-state-changed":
      // Back from a drop: the last grade (disconnected) no longer holds;
      // unknown until the next report.
      if (e.state === "CONNECTED" && state.connection !== "CONNECTED") {
        state.quality = 0;
        // The new connection may take another path.
        state.transport = null;
      }
      state.connection = e.state;
      break;
    case "client-banned":
      state.screen = "kicked";
      state.kickedReason = e.reason;
      state.peers = {};
      state.screens = {};
      state.sharing = null;
      break;
    case "client-left":
      state.screen = "left";
      state.peers = {};
      state.screens = {};
      state.sharing = null;
      break;
    case "share-started":
      state.sharing = e.source;
      break;
    case "share-stopped":
      state.sharing = null;
      break;
    case "chat":
    case "local-chat": {
      const mine = e.event === "local-chat";
      state.chat.push({ userId: mine ? state.me : e.userId, text: e.text, sentAt: e.sentAt, mine });
      if (state.chat.length > CHAT_KEEP) state.chat.splice(0, state.chat.length - CHAT_KEEP);
      if (!mine && !state.chatOpen) state.unread += 1;
      break;
    }
    case "blocked":
      state.blocked = { audio: !!e.audio, video: !!e.video };
      break;
    case "local-chat-open":
      state.chatOpen = e.open;
      if (e.open) state.unread = 0;
      break;
    default:
      break;
  }
  return state;
}

/** The loudest remote speaker above the threshold, if any (none while not connected: volumes are stale). */
export function activeSpeaker(state) {
  if (state.connection !== "CONNECTED") return null;
  let best = null;
  for (const p of Object.values(state.peers)) {
    if (p.volume >= SPEAKING && (!best || p.volume > best.volume)) best = p;
  }
  return best ? best.userId : null;
}

/** The tile id of `userId`'s shared screen (as the app names it: a user id has no dot). */
export function screenTile(userId) {
  return `${userId}.sub`;
}

/** The shared screens to show, in name order, as tile ids. */
export function screenTiles(state) {
  return Object.keys(state.screens)
    .sort((a, b) => a.localeCompare(b))
    .map(screenTile);
}

/** The tiles to show: remote users in name order (those with a stream first). */
export function tiles(state) {
  return Object.values(state.peers).sort(
    (a, b) => Number(b.hasStream) - Number(a.hasStream) || a.userId.localeCompare(b.userId),
  );
}

/** A form mistake: `key` names its words (i18n), `message` is for logs. */
function formError(key, message) {
  return { code: "INVALID_PARAMETER", key, message };
}

/** Characters TRTC allows in a string room id besides letters and digits. */
const STR_ROOM = /^[A-Za-z0-9 !#$%&()+\-:;<=.>?@[\]^_{}|~,]{1,64}$/;

/**
 * The join form as the app's `join_room` takes it; throws a form error
 * (`{code, key, message}`, `key` in the UI's words) on bad input, checked
 * here by the same rules as the app's so the user reads them in their
 * language.
 */
export function joinForm(fields) {
  const userId = (fields.name || "").trim();
  if (!userId) throw formError("form.nameRequired", "a name is required");
  if (!/^[A-Za-z0-9_-]{1,32}$/.test(userId)) throw formError("form.nameCharset", "a name is letters, digits, - and _ (up to 32)");
  const inviteText = (fields.invite || "").trim();
  if (inviteText) {
    // The invite names the server and the room; the name is all it needs.
    const invite = parseInvite(inviteText);
    const server = invite.server || (fields.server || "").trim();
    if (!server) throw formError("form.inviteNeedsServer", "an invite code needs the server's address");
    return {
      userId,
      roomId: null,
      strRoomId: null,
      role: fields.role === "audience" ? "audience" : "anchor",
      camera: fields.camera || null,
      microphone: fields.microphone || null,
      server,
      sdkAppId: null,
      userSig: null,
      invite: invite.server ? inviteText : `${inviteLink(server, invite.code)}`,
    };
  }
  const room = (fields.room || "").trim();
  if (!room) throw formError("form.roomRequired", "a room is required");
  const numeric = /^[0-9]+$/.test(room);
  if (numeric && (Number(room) < 1 || Number(room) > 4294967294)) throw formError("form.roomRange", "a room number is 1 to 4294967294");
  if (!numeric && !STR_ROOM.test(room)) throw formError("form.roomCharset", "a room name is up to 64 letters, digits, spaces and common signs");
  const server = (fields.server || "").trim();
  const form = {
    userId,
    roomId: numeric ? Number(room) : null,
    strRoomId: numeric ? null : room,
    role: fields.role === "audience" ? "audience" : "anchor",
    camera: fields.camera || null,
    microphone: fields.microphone || null,
    server: server || null,
    sdkAppId: null,
    userSig: null,
    secretKey: null,
    invite: null,
  };
  if (server) {
    const app = Number((fields.sdkAppId || "").trim());
    if (!Number.isInteger(app) || app <= 0) throw formError("form.sdkAppIdRequired", "SdkAppId is required with a server");
    form.sdkAppId = app;
    form.userSig = (fields.userSig || "").trim() || null;
    // The app's key makes the UserSig here, and this app the host.
    form.secretKey = (fields.secretKey || "").trim() || null;
    if (!form.userSig && !form.secretKey) throw formError("form.userSigRequired", "UserSig (or the app's key) is required with a server");
  }
  return form;
}

const CODE_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz";

/**
 * An invite as pasted: `kaigi://invite/CODE?server=URL` or a bare code
 * (any case, dashes and spaces ignored, i/l read as 1 and o as 0, as the
 * server reads it). Returns `{server, code}` (code as `k3m-9xq2-7hd`,
 * server null for a bare code) or throws a form error.
 */
export function parseInvite(text) {
  const bad = () => formError("form.inviteInvalid", "not an invite link or code");
  let rest = (text || "").trim();
  let server = null;
  if (/^kaigi:\/\//i.test(rest)) {
    rest = rest.slice("kaigi://".length);
    if (!/^invite\//i.test(rest)) throw bad();
    rest = rest.slice("invite/".length);
    const q = rest.indexOf("?");
    const query = q >= 0 ? rest.slice(q + 1) : "";
    rest = (q >= 0 ? rest.slice(0, q) : rest).replace(/\/+$/, "");
    for (const pair of query.split("&")) {
      if (!pair.startsWith("server=")) continue;
      try {
        server = decodeURIComponent(pair.slice("server=".length));
      } catch {
        throw bad();
      }
      if (!/^wss?:\/\//.test(server)) throw bad();
    }
  }
  let code = "";
  for (const raw of rest.toLowerCase()) {
    if (raw === "-" || raw === " ") continue;
    const c = raw === "i" || raw === "l" ? "1" : raw === "o" ? "0" : raw;
    if (!CODE_ALPHABET.includes(c) || code.length === 10) throw bad();
    code += c;
  }
  if (code.length !== 10) throw bad();
  return { server, code: `${code.slice(0, 3)}-${code.slice(3, 7)}-${code.slice(7)}` };
}

/** The link for `code` on `server`, as the server's own links are written. */
export function inviteLink(server, code) {
  const enc = [...new TextEncoder().encode(server)]
    .map((b) => {
      const c = String.fromCharCode(b);
      return /[A-Za-z0-9\-._~:/[\]@]/.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
    })
    .join("");
  return `kaigi://invite/${code}?server=${enc}`;
}

/**
 * How `n` tiles of aspect `aspect` fill a `width` × `height` area with
 * `gap` between them: the column count that makes them largest, and
 * their size in whole pixels.
 */
export function gridLayout(n, width, height, gap = 10, aspect = 16 / 9) {
  let best = { cols: 1, w: 0, h: 0 };
  const count = Math.max(1, n);
  for (let cols = 1; cols <= count; cols++) {
    const rows = Math.ceil(count / cols);
    const w = Math.min((width - gap * (cols - 1)) / cols, ((height - gap * (rows - 1)) / rows) * aspect);
    if (w > best.w) best = { cols, w, h: w / aspect };
  }
  return { cols: best.cols, w: Math.max(0, Math.floor(best.w)), h: Math.max(0, Math.floor(best.h)) };
}

/** The microphone's processing, all on unless the user said otherwise. */
export const AUDIO_DEFAULTS = Object.freeze({
  echoCancellation: true,
  noiseSuppression: true,
  autoGain: true,
});

/**
 * The audio settings saved as `text` (JSON, or null): each part a boolean,
 * the default where missing or unreadable.
 */
export function readAudioSettings(text) {
  let saved = {};
  try {
    saved = JSON.parse(text ?? "{}") ?? {};
  } catch {
    saved = {};
  }
  const out = {};
  for (const [k, v] of Object.entries(AUDIO_DEFAULTS)) {
    out[k] = typeof saved[k] === "boolean" ? saved[k] : v;
  }
  return out;
}

/**
 * Who takes the stage in speaker view: the pinned tile if still there,
 * else a shared screen, else the one speaking, else the first remote
 * tile, else yourself (`"local"`); everyone else goes to the strip, in
 * `order` (screens first). In grid view nobody is large, unless someone
 * shares a screen: a shared screen always takes the stage.
 */
export function stageLayout(order, { view, pinned, speaker, screens = [] }) {
  const all = ["local", ...screens, ...order];
  if (view !== "speaker" && !pinned && !screens.length) return { main: null, strip: all };
  const main = [pinned, screens[0], speaker, order[0], "local"].find((id) => id && all.includes(id));
  return { main, strip: all.filter((id) => id !== main) };
}
