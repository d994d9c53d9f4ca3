// The room view: the header (room name, count), the badge, the
// reconnecting banner, the quality, and one tile per user sized to fill
// the stage, kept in place and changed only where the state changed
// (`audio-volume` arrives several times a second).

import { activeSpeaker, gridLayout, mutedHint, screenTiles, selfSends, stageLayout, tiles } from "./logic.js";
import { playTile } from "./video.js";
import { renderToolbar } from "./toolbar.js";
import { startPreview } from "./join.js";
import { renderShare } from "./share.js";

const ICONS = {
  mic: "M12 14a3 3 0 0 0 3-3V5a3 3 0 0 0-6 0v6a3 3 0 0 0 3 3zm5-3a5 5 0 0 1-10 0H5a7 7 0 0 0 6 6.9V21h2v-3.1A7 7 0 0 0 19 11z",
  cam: "M17 10.5V7a1 1 0 0 0-1-1H4a1 1 0 0 0-1 1v10a1 1 0 0 0 1 1h12a1 1 0 0 0 1-1v-3.5l4 4v-11z",
};

/**
 * A small microphone or camera icon, struck through when off, named in the
 * UI's language. `on`: true, false, or `"on"`, `"off"`, `"blocked"` (the
 * own media the app's backend stopped forwarding).
 */
function icon(ui, kind, on) {
  const state = on === true ? "on" : on === false ? "off" : on;
  on = state === "on";
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("role", "img");
  const label = { on: "On", off: "Off", blocked: "Blocked" }[state];
  svg.setAttribute("aria-label", ui.t(`${kind}${label}`));
  const title = document.createElementNS(ns, "title");
  title.textContent = ui.t(`${kind}${label}`);
  svg.append(title);
  svg.dataset.state = state;
  svg.dataset.kind = kind;
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", ICONS[kind]);
  svg.append(path);
  if (!on) {
    svg.classList.add("off");
    const strike = document.createElementNS(ns, "path");
    strike.setAttribute("d", "M3 3l18 18");
    strike.setAttribute("stroke", "currentColor");
    strike.setAttribute("stroke-width", "2.5");
    svg.append(strike);
  }
  return svg;
}

/** The pin button's words and state on `el`. */
function setPin(ui, el, id) {
  const pin = el.querySelector(".pin");
  if (!pin) return;
  const pinned = ui.pinned === id;
  setText(pin, pinned ? ui.t("unpin") : ui.t("pin"));
  pin.setAttribute("aria-pressed", String(pinned));
}

/** Redraws `el`'s microphone and camera icons when their state (or the language) changed. */
function setIcons(ui, el, mic, cam) {
  const key = `${mic}/${cam}/${ui.lang}`;
  if (el.dataset.icons === key) return;
  el.dataset.icons = key;
  el.querySelector(".icons").replaceChildren(icon(ui, "mic", mic), icon(ui, "cam", cam));
}

/** The tile of `userId`, made on first use. */
function tileElement(ui, userId) {
  let el = document.querySelector(`.tile[data-user="${CSS.escape(userId)}"]`);
  if (!el) {
    el = document.createElement("figure");
    el.className = "tile remote";
    el.dataset.user = userId;
    el.dataset.testid = `tile-${userId}`;
    el.innerHTML = `<canvas></canvas><div class="novideo" data-testid="camera-off" hidden></div>
      <figcaption><span class="who"></span><span class="icons"></span></figcaption>
      <button type="button" class="pin" data-testid="pin-${CSS.escape(userId)}"></button>`;
    el.querySelector(".who").textContent = userId;
    el.querySelector(".pin").dataset.pin = userId;
    ui.$("tiles").append(el);
  }
  return el;
}

/** The tile of a shared screen (`tile`: `alice.sub`), made on first use. */
function screenElement(ui, tile, userId) {
  let el = document.querySelector(`.tile[data-user="${CSS.escape(tile)}"]`);
  if (!el) {
    el = document.createElement("figure");
    el.className = "tile remote screen";
    el.dataset.user = tile;
    el.dataset.testid = `screen-${userId}`;
    el.innerHTML = `<canvas></canvas><div class="novideo" hidden></div>
      <figcaption><span class="who"></span></figcaption>
      <button type="button" class="zoom" data-testid="zoom-${CSS.escape(userId)}"></button>
      <button type="button" class="pin" data-testid="pin-${CSS.escape(userId)}-screen"></button>`;
    el.querySelector(".pin").dataset.pin = tile;
    el.querySelector(".zoom").dataset.zoom = tile;
    // At actual size the canvas is as large as the picture (scrolled in its tile).
    el.querySelector("canvas").addEventListener("framesize", (ev) => {
      if (!el.classList.contains("actual")) return;
      const dpr = globalThis.devicePixelRatio || 1;
      setVar(el, "--nat-w", `${ev.detail.width / dpr}px`);
      setVar(el, "--nat-h", `${ev.detail.height / dpr}px`);
    });
    ui.$("tiles").append(el);
  }
  return el;
}

/** A screen tile's caption, Fit / Actual size button and state. */
function renderScreenTile(ui, el, userId) {
  setText(el.querySelector(".who"), ui.t("screenOf", { name: userId }));
  const actual = ui.actualSize === el.dataset.user;
  if (el.classList.contains("actual") !== actual) {
    el.classList.toggle("actual", actual);
    // Until its first picture at this size is known: the largest a shared
    // screen is sent at, so the app sends it unscaled.
    const dpr = globalThis.devicePixelRatio || 1;
    setVar(el, "--nat-w", actual ? `${1920 / dpr}px` : "");
    setVar(el, "--nat-h", actual ? `${1080 / dpr}px` : "");
  }
  const zoom = el.querySelector(".zoom");
  setText(zoom, actual ? ui.t("fitScreen") : ui.t("actualSize"));
  zoom.setAttribute("aria-pressed", String(actual));
  setPin(ui, el, el.dataset.user);
}

/** Sets `el`'s text, or a data attribute, only when it changes. */
function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

/** Sets CSS property `name` of `el` to `value` only when it changes. */
function setVar(el, name, value) {
  if (el.style.getPropertyValue(name) !== value) el.style.setProperty(name, value);
}

/** The height of the strip's tiles in speaker view. */
const STRIP_H = 96;

/**
 * Sizes the tiles to fill the stage. Grid view: all alike, as large as
 * they fit (16:9). Speaker view (or a pin): one large, the others in a
 * strip below.
 */
export function layoutTiles(ui) {
  const grid = ui.$("tiles");
  const room = ui.session.room;
  const order = room ? tiles(room).map((p) => p.userId) : [];
  const screens = room ? screenTiles(room) : [];
  const visible = [...grid.children].filter((el) => !el.hidden);
  const tileOf = (id) => (id === "local" ? ui.$("tile-local") : visible.find((el) => el.dataset.user === id));
  const shown = ["local", ...screens, ...order].filter((id) => tileOf(id) && !tileOf(id).hidden);
  const { main } = stageLayout(shown.filter((id) => id !== "local" && !screens.includes(id)), {
    view: ui.view,
    pinned: shown.includes(ui.pinned) ? ui.pinned : null,
    speaker: room ? activeSpeaker(room) : null,
    screens: screens.filter((id) => shown.includes(id)),
  });
  const mainEl = main && shown.includes(main) ? tileOf(main) : null;
  for (const el of visible) {
    el.classList.toggle("main", el === mainEl);
    el.classList.toggle("pinned", !!ui.pinned && el === tileOf(ui.pinned));
  }
  grid.classList.toggle("speaker", !!mainEl);
  const { width, height } = grid.getBoundingClientRect();
  if (!width || !height) return;
  if (!mainEl) {
    const { cols, w, h } = gridLayout(visible.length, width, height, 10);
    setVar(grid, "--cols", String(cols));
    setVar(grid, "--tile-w", `${w}px`);
    setVar(grid, "--tile-h", `${h}px`);
    return;
  }
  const strip = visible.length - 1;
  const stripH = strip ? STRIP_H : 0;
  const { w, h } = gridLayout(1, width, height - (strip ? stripH + 10 : 0), 10);
  setVar(grid, "--main-w", `${w}px`);
  setVar(grid, "--main-h", `${h}px`);
  setVar(grid, "--strip-w", `${Math.floor((stripH * 16) / 9)}px`);
  setVar(grid, "--strip-h", `${stripH}px`);
}

/** The header and window title: the room's name and how many are in it. */
export function renderHeader(ui) {
  const room = ui.session.room;
  const name = ui.joinedRoom;
  const el = ui.$("room-name");
  if (!room || !name) {
    el.hidden = true;
    if (document.title !== ui.t("title")) document.title = ui.t("title");
    return;
  }
  const count = Object.keys(room.peers).length + 1;
  setText(el, `${name} · ${ui.t("peopleCount", { count })}`);
  el.hidden = false;
  const title = `${name} (${count}) — ${ui.t("title")}`;
  if (document.title !== title) document.title = title;
}

/** The own tile: the camera's picture unless the camera is stopped, the own mute marks. */
function renderSelf(ui, room) {
  const el = ui.$("tile-local");
  if (el.hidden) return;
  const camOn = !room.muted.video;
  const sends = selfSends(room);
  setIcons(ui, el, sends.mic, sends.cam);
  setPin(ui, el, "local");
  el.querySelector(".novideo").hidden = camOn;
  const canvas = el.querySelector("canvas");
  if (camOn && !ui.players.local) {
    ui.players.local = playTile(ui.endpoint, "local", canvas);
  } else if (!camOn && ui.players.local) {
    ui.players.local.stop();
    ui.players.local = null;
    canvas.getContext("2d")?.clearRect(0, 0, canvas.width, canvas.height);
  }
}

/** The participant list: you first, then the others in tile order, with what they send and, for a host, Remove. */
function renderPeople(ui, room, speaker) {
  const count = Object.keys(room.peers).length + 1;
  const toggle = ui.$("people");
  setText(toggle, ui.t("peopleButton", { count }));
  const panel = ui.$("people-panel");
  toggle.setAttribute("aria-expanded", String(!panel.hidden));
  ui.$("end-for-all").hidden = !ui.isHost;
  if (panel.hidden) return;
  const rows = [
    { userId: room.me, self: true, ...selfSends(room), audience: ui.joinedRole === "audience" },
    ...tiles(room).map((p) => ({
      userId: p.userId,
      self: false,
      mic: p.audio && !p.audioMuted,
      cam: p.video && !p.videoMuted,
      audience: p.role === "audience",
    })),
  ];
  const list = ui.$("people-list");
  const key = JSON.stringify([rows, speaker, ui.isHost, ui.lang]);
  if (list.dataset.key === key) return;
  list.dataset.key = key;
  list.replaceChildren(
    ...rows.map((r) => {
      const li = document.createElement("li");
      li.dataset.testid = `participant-${r.userId}`;
      li.classList.toggle("speaking", r.userId === speaker);
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = r.userId;
      li.append(name);
      const tags = [];
      if (r.self) tags.push(ui.t("you"));
      if (r.self && ui.isHost) tags.push(ui.t("host"));
      if (r.audience) tags.push(ui.t("audienceTag"));
      for (const text of tags) {
        const tag = document.createElement("span");
        tag.className = "tag";
        tag.textContent = text;
        li.append(tag);
      }
      const icons = document.createElement("span");
      icons.className = "icons";
      icons.append(icon(ui, "mic", r.mic), icon(ui, "cam", r.cam));
      li.append(icons);
      if (ui.isHost && !r.self) {
        const remove = document.createElement("button");
        remove.type = "button";
        remove.className = "danger outline";
        remove.dataset.testid = `remove-${r.userId}`;
        remove.dataset.user = r.userId;
        remove.textContent = ui.t("remove");
        remove.setAttribute("aria-label", ui.t("removeWho", { name: r.userId }));
        li.append(remove);
      }
      return li;
    }),
  );
}

/** The chat: the unread count on its button, and the log when open (new messages appended, scrolled to). */
function renderChat(ui, room) {
  const unread = ui.$("chat-unread");
  setText(unread, room.unread ? String(room.unread) : "");
  unread.hidden = !room.unread;
  unread.setAttribute("aria-label", ui.t("unreadCount", { count: room.unread }));
  ui.$("chat-toggle").setAttribute("aria-expanded", String(room.chatOpen));
  const panel = ui.$("chat-panel");
  if (panel.hidden === room.chatOpen) panel.hidden = !room.chatOpen;
  if (!room.chatOpen) return;
  const log = ui.$("chat-log");
  // Rebuilt only when messages were added or dropped (the first kept one changed).
  const key = `${room.chat.length}:${room.chat[0]?.sentAt ?? ""}:${ui.lang}`;
  if (log.dataset.key === key) return;
  log.dataset.key = key;
  const time = new Intl.DateTimeFormat(ui.lang, { hour: "2-digit", minute: "2-digit" });
  log.replaceChildren(
    ...room.chat.map((m) => {
      const li = document.createElement("li");
      li.classList.toggle("mine", m.mine);
      const from = document.createElement("div");
      from.className = "from";
      const who = document.createElement("span");
      who.textContent = m.mine ? ui.t("you") : m.userId;
      const when = document.createElement("time");
      when.dateTime = new Date(m.sentAt).toISOString();
      when.textContent = time.format(new Date(m.sentAt));
      from.append(who, when);
      const text = document.createElement("div");
      text.className = "text";
      text.textContent = m.text;
      li.append(from, text);
      return li;
    }),
  );
  log.scrollTop = log.scrollHeight;
}

/** Draws the room view from the session's room state. */
export function renderRoom(ui) {
  const room = ui.session.room;
  if (!room) return;
  const $ = ui.$;
  const badge = $("badge");
  const badgeClass = `badge ${room.connection}`;
  if (badge.className !== badgeClass) badge.className = badgeClass;
  // Media over TCP or a relay shows in the badge, and why in its details.
  const via = room.connection === "CONNECTED" && room.transport && room.transport !== "udp"
    ? ` · ${ui.t(`via.${room.transport}`)}` : "";
  setText(badge, ui.t(room.connection.toLowerCase()) + via);
  const details = room.transport ? ui.t(`viaDetail.${room.transport}`) : "";
  if (badge.title !== details) badge.title = details;
  $("banner").hidden = room.connection !== "RECONNECTING";
  setText($("quality"), `${ui.t("quality")}: ${ui.t("qualities")[room.quality] || ""}`);
  const hint = !mutedHint(room);
  if ($("muted-hint").hidden !== hint) $("muted-hint").hidden = hint;
  renderHeader(ui);
  renderSelf(ui, room);
  const live = room.connection === "CONNECTED";
  const speaker = activeSpeaker(room);
  const wanted = new Set();
  let prev = $("tile-local");
  // Others' shared screens first (one takes the stage). The own screen
  // is not shown back: the sharing bar says it is shared.
  for (const p of Object.values(room.screens).sort((a, b) => a.userId.localeCompare(b.userId))) {
    const tile = `${p.userId}.sub`;
    wanted.add(tile);
    const el = screenElement(ui, tile, p.userId);
    el.classList.toggle("stale", !live);
    renderScreenTile(ui, el, p.userId);
    if (p.subscribed && !ui.players[tile]) ui.players[tile] = playTile(ui.endpoint, tile, el.querySelector("canvas"));
    if (!p.subscribed && ui.players[tile]) {
      ui.players[tile].stop();
      delete ui.players[tile];
    }
    if (el.previousElementSibling !== prev) prev.after(el);
    prev = el;
  }
  for (const p of tiles(room)) {
    wanted.add(p.userId);
    const el = tileElement(ui, p.userId);
    el.classList.toggle("speaking", p.userId === speaker);
    // While reconnecting, what the tiles last showed is not live.
    el.classList.toggle("stale", !live);
    setIcons(ui, el, p.audio && !p.audioMuted, p.video && !p.videoMuted);
    setPin(ui, el, p.userId);
    const cam = p.video && !p.videoMuted;
    const showVideo = p.subscribed && cam && !p.videoPaused;
    const why = cam && p.videoPaused ? "videoPaused" : "noVideo";
    const novideo = el.querySelector(".novideo");
    setText(novideo, showVideo ? "" : ui.t(why));
    if (novideo.hidden !== showVideo) novideo.hidden = showVideo;
    if (p.subscribed && !ui.players[p.userId]) {
      ui.players[p.userId] = playTile(ui.endpoint, p.userId, el.querySelector("canvas"));
    }
    if (!p.subscribed && ui.players[p.userId]) {
      ui.players[p.userId].stop();
      delete ui.players[p.userId];
    }
    // Tiles in the order `tiles()` gives, moved only when out of place.
    if (el.previousElementSibling !== prev) prev.after(el);
    prev = el;
  }
  for (const el of document.querySelectorAll(".tile.remote")) {
    if (!wanted.has(el.dataset.user)) {
      if (ui.players[el.dataset.user]) ui.players[el.dataset.user].stop();
      delete ui.players[el.dataset.user];
      el.remove();
    }
  }
  $("waiting").hidden = wanted.size > 0;
  renderPeople(ui, room, speaker);
  renderChat(ui, room);
  renderShare(ui);
  layoutTiles(ui);
}

/** Shows the room view after a join. */
export function enterRoom(ui, joined, form) {
  const $ = ui.$;
  // A host can make invites; who came through one can pass it on.
  ui.invite = joined.invite || null;
  $("hosted").hidden = !joined.embedded && !joined.host && !ui.invite;
  $("hosted-at").hidden = !joined.embedded;
  $("server-address").textContent = joined.server;
  $("invite-copy").hidden = !joined.host && !ui.invite;
  renderInviteCode(ui);
  // The command carries the app key: copied on request, never shown.
  ui.botCommand = joined.botCommand || "";
  $("copy").hidden = !ui.botCommand;
  ui.joinedRoom = joined.room || (form.strRoomId ?? String(form.roomId));
  ui.joinedRole = joined.role;
  ui.isHost = !!joined.host;
  ui.endedByMe = false;
  $("room-camera").value = form.camera || "";
  $("room-microphone").value = form.microphone || "";
  const local = $("tile-local");
  local.hidden = !joined.publishing;
  ui.players.local = null;
  showScreen(ui, "room");
  renderToolbar(ui);
  renderRoom(ui);
}

/** The room's invite code, once there is one, and Revoke for its maker. */
export function renderInviteCode(ui) {
  const $ = ui.$;
  $("invite-shown").hidden = !ui.invite;
  $("invite-code").textContent = ui.invite ? ui.invite.code : "";
  $("invite-revoke").hidden = !(ui.invite && ui.invite.revocable);
}

/** Back to the join screen (left, or forced out and dismissed); resolves once the preview runs. */
export function leaveRoomView(ui) {
  for (const p of Object.values(ui.players)) if (p) p.stop();
  ui.players = {};
  for (const el of document.querySelectorAll(".tile.remote")) el.remove();
  ui.session.room = null;
  ui.joinedRoom = null;
  ui.actualSize = null;
  if (ui.pinned !== "local") ui.pinned = null;
  if (ui.$("share-picker").open) ui.$("share-picker").close();
  renderShare(ui);
  showScreen(ui, "join");
  ui.$("join").disabled = false;
  ui.$("join").textContent = ui.t("join");
  renderHeader(ui);
  return startPreview(ui);
}

/** Shows the join or the room screen. */
export function showScreen(ui, which) {
  ui.$("join-screen").hidden = which !== "join";
  ui.$("room-screen").hidden = which !== "room";
  ui.$("badge").hidden = which !== "room";
  for (const el of document.querySelectorAll(".in-room")) el.hidden = which !== "room";
}
