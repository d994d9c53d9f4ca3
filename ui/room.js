// The room view: the badge, the reconnecting banner, the quality, and one
// tile per user, kept in place and changed only where the state changed
// (`audio-volume` arrives several times a second).

import { activeSpeaker, mutedHint, tiles } from "./logic.js";
import { playTile } from "./video.js";
import { renderToolbar } from "./toolbar.js";
import { startPreview } from "./join.js";

const ICONS = {
  mic: "M12 14a3 3 0 0 0 3-3V5a3 3 0 0 0-6 0v6a3 3 0 0 0 3 3zm5-3a5 5 0 0 1-10 0H5a7 7 0 0 0 6 6.9V21h2v-3.1A7 7 0 0 0 19 11z",
  cam: "M17 10.5V7a1 1 0 0 0-1-1H4a1 1 0 0 0-1 1v10a1 1 0 0 0 1 1h12a1 1 0 0 0 1-1v-3.5l4 4v-11z",
};

/** A small microphone or camera icon, struck through when off. */
function icon(kind, on) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-label", `${kind} ${on ? "on" : "off"}`);
  svg.dataset.state = on ? "on" : "off";
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

/** The tile of `userId`, made on first use. */
function tileElement(ui, userId) {
  let el = document.querySelector(`.tile[data-user="${CSS.escape(userId)}"]`);
  if (!el) {
    el = document.createElement("figure");
    el.className = "tile remote";
    el.dataset.user = userId;
    el.innerHTML = `<canvas></canvas><div class="novideo"></div>
      <figcaption><span class="who"></span><span class="icons"></span></figcaption>`;
    el.querySelector(".who").textContent = userId;
    ui.$("tiles").append(el);
  }
  return el;
}

/** Sets `el`'s text, or a data attribute, only when it changes. */
function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
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
  const speaker = activeSpeaker(room);
  const wanted = new Set();
  let prev = $("tile-local");
  for (const p of tiles(room)) {
    wanted.add(p.userId);
    const el = tileElement(ui, p.userId);
    el.classList.toggle("speaking", p.userId === speaker);
    const mic = p.audio && !p.audioMuted;
    const cam = p.video && !p.videoMuted;
    const icons = `${mic}/${cam}`;
    if (el.dataset.icons !== icons) {
      el.dataset.icons = icons;
      el.querySelector(".icons").replaceChildren(icon("mic", mic), icon("cam", cam));
    }
    const showVideo = p.subscribed && cam && !p.videoPaused;
    const why = cam && p.videoPaused ? "videoPaused" : "noVideo";
    setText(el.querySelector(".novideo"), showVideo ? "" : ui.t(why));
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
}

/** Shows the room view after a join. */
export function enterRoom(ui, joined, form) {
  const $ = ui.$;
  $("hosted").hidden = !joined.embedded;
  $("server-address").textContent = joined.server;
  $("bot-command").textContent = joined.botCommand || "";
  $("room-camera").value = form.camera || "";
  $("room-microphone").value = form.microphone || "";
  const local = $("tile-local");
  local.hidden = !joined.publishing;
  ui.players.local = joined.publishing
    ? playTile(ui.endpoint, "local", local.querySelector("canvas"))
    : null;
  showScreen(ui, "room");
  renderToolbar(ui);
  renderRoom(ui);
}

/** Back to the join screen (left, or forced out and dismissed). */
export function leaveRoomView(ui) {
  for (const p of Object.values(ui.players)) if (p) p.stop();
  ui.players = {};
  for (const el of document.querySelectorAll(".tile.remote")) el.remove();
  ui.session.room = null;
  showScreen(ui, "join");
  ui.$("join").disabled = false;
  ui.$("join").textContent = ui.t("join");
  startPreview(ui);
}

/** Shows the join or the room screen. */
export function showScreen(ui, which) {
  ui.$("join-screen").hidden = which !== "join";
  ui.$("room-screen").hidden = which !== "room";
  ui.$("badge").hidden = which !== "room";
}
