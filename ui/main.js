// The window: wires the DOM to the app's commands and events. State
// changes go through logic.js; words through i18n.js.

import { LANGUAGES, pickLanguage, translator, errorText, kickedText } from "./i18n.js";
import { activeSpeaker, tiles, joinForm } from "./logic.js";
import { createSession } from "./session.js";
import { playTile } from "./video.js";

const tauri = window.__TAURI__;
const invoke = (cmd, args) => tauri.core.invoke(cmd, args);
const $ = (id) => document.getElementById(id);

let lang = localStorage.getItem("kaigi.lang") || pickLanguage(navigator.languages);
let t = translator(lang);
let endpoint = null;
let room = null; // the session's room state while in a room
let players = {}; // tile id -> player
let muted = { audio: false, video: false };
let previewPlayer = null;


function translate() {
  document.documentElement.lang = lang;
  for (const el of document.querySelectorAll("[data-t]")) el.textContent = t(el.dataset.t);
  for (const el of document.querySelectorAll("[data-tp]")) el.placeholder = t(el.dataset.tp);
  renderToolbar();
  renderRoom();
}

function showError(error) {
  const toast = $("toast");
  toast.textContent = errorText(t, error);
  toast.hidden = false;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => (toast.hidden = true), 6000);
}

function fillDevices(select, list, extra) {
  const keep = select.value;
  select.replaceChildren();
  for (const [id, label] of extra) select.append(new Option(label, id));
  for (const d of list) {
    const label = d.id === "test-pattern" ? t("testPattern") : d.id === "tone" ? t("tone") : d.label;
    select.append(new Option(label, d.id));
  }
  if ([...select.options].some((o) => o.value === keep)) select.value = keep;
}

async function loadDevices() {
  const d = await invoke("list_devices");
  const none = [["", t("none")]];
  fillDevices($("camera"), d.cameras, none);
  fillDevices($("microphone"), d.microphones, none);
  fillDevices($("room-camera"), d.cameras, []);
  fillDevices($("room-microphone"), d.microphones, []);
  fillDevices($("room-speaker"), d.speakers, [["", t("none")]]);
  // A first-time default: the first real device, else the synthetic one.
  if (!localStorage.getItem("kaigi.camera")) $("camera").selectedIndex = 1;
  if (!localStorage.getItem("kaigi.microphone")) $("microphone").selectedIndex = 1;
}

async function startPreview() {
  const name = $("name").value.trim() || "me";
  try {
    const p = await invoke("start_preview", {
      userId: name,
      camera: $("camera").value || null,
      microphone: $("microphone").value || null,
    });
    if (previewPlayer) previewPlayer.stop();
    previewPlayer = p.video ? playTile(endpoint, "local", $("preview")) : null;
  } catch (e) {
    showError(e);
  }
}

function showScreen(which) {
  $("join-screen").hidden = which !== "join";
  $("room-screen").hidden = which !== "room";
  $("badge").hidden = which !== "room";
}

function renderToolbar() {
  const mic = $("mic");
  const cam = $("cam");
  mic.textContent = muted.audio ? t("unmute") : t("mute");
  mic.classList.toggle("off", muted.audio);
  cam.textContent = muted.video ? t("cameraOn") : t("cameraOff");
  cam.classList.toggle("off", muted.video);
}

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

function tileElement(userId) {
  let el = document.querySelector(`.tile[data-user="${CSS.escape(userId)}"]`);
  if (!el) {
    el = document.createElement("figure");
    el.className = "tile remote";
    el.dataset.user = userId;
    el.innerHTML = `<canvas></canvas><div class="novideo"></div>
      <figcaption><span class="who"></span><span class="icons"></span></figcaption>`;
    el.querySelector(".who").textContent = userId;
    $("tiles").append(el);
  }
  return el;
}

function renderRoom() {
  if (!room) return;
  const badge = $("badge");
  badge.className = `badge ${room.connection}`;
  badge.textContent = t(room.connection.toLowerCase());
  $("banner").hidden = room.connection !== "RECONNECTING";
  const q = t("qualities")[room.quality] || "";
  $("quality").textContent = `${t("quality")}: ${q}`;
  const speaker = activeSpeaker(room);
  const wanted = new Set();
  for (const p of tiles(room)) {
    wanted.add(p.userId);
    const el = tileElement(p.userId);
    el.classList.toggle("speaking", p.userId === speaker);
    el.querySelector(".icons").replaceChildren(
      icon("mic", p.audio && !p.audioMuted),
      icon("cam", p.video && !p.videoMuted),
    );
    const showVideo = p.subscribed && p.video && !p.videoMuted;
    el.querySelector(".novideo").textContent = showVideo ? "" : t("noVideo");
    if (p.subscribed && !players[p.userId]) {
      players[p.userId] = playTile(endpoint, p.userId, el.querySelector("canvas"));
    }
    if (!p.subscribed && players[p.userId]) {
      players[p.userId].stop();
      delete players[p.userId];
    }
  }
  for (const el of document.querySelectorAll(".tile.remote")) {
    if (!wanted.has(el.dataset.user)) {
      if (players[el.dataset.user]) players[el.dataset.user].stop();
      delete players[el.dataset.user];
      el.remove();
    }
  }
  $("waiting").hidden = wanted.size > 0;
}

function leaveRoomView() {
  for (const p of Object.values(players)) p.stop();
  players = {};
  for (const el of document.querySelectorAll(".tile.remote")) el.remove();
  room = null;
  session.room = null;
  showScreen("join");
  $("join").disabled = false;
  $("join").textContent = t("join");
  startPreview();
}

async function onJoin(ev) {
  ev.preventDefault();
  let form;
  try {
    form = joinForm(Object.fromEntries(new FormData($("join-form"))));
  } catch (e) {
    return showError(e);
  }
  localStorage.setItem("kaigi.name", form.userId);
  localStorage.setItem("kaigi.room", $("room").value.trim());
  localStorage.setItem("kaigi.camera", $("camera").value);
  localStorage.setItem("kaigi.microphone", $("microphone").value);
  $("join").disabled = true;
  $("join").textContent = t("joining");
  if (previewPlayer) previewPlayer.stop();
  previewPlayer = null;
  try {
    const joined = await session.join(form);
    room = session.room;
    muted = { audio: false, video: false };
    $("hosted").hidden = !joined.embedded;
    $("server-address").textContent = joined.server;
    $("bot-command").textContent = joined.botCommand || "";
    $("room-camera").value = form.camera || "";
    $("room-microphone").value = form.microphone || "";
    const local = $("tile-local");
    local.hidden = !joined.publishing;
    players.local = joined.publishing ? playTile(endpoint, "local", local.querySelector("canvas")) : null;
    showScreen("room");
    renderToolbar();
    renderRoom();
  } catch (e) {
    $("join").disabled = false;
    $("join").textContent = t("join");
    showError(e);
    startPreview();
  }
}

async function toggle(kind) {
  const next = !muted[kind];
  try {
    await invoke("set_mute", kind === "audio" ? { audio: next } : { video: next });
    muted[kind] = next;
    renderToolbar();
  } catch (e) {
    showError(e);
  }
}

/** What the session says to show. */
function onChange(change) {
  switch (change.kind) {
    case "error":
      return showError(change.error);
    case "kicked":
      $("kicked-reason").textContent = kickedText(t, change.reason);
      $("kicked").dataset.reason = change.reason;
      return $("kicked").showModal();
    case "left":
      return leaveRoomView();
    default:
      return renderRoom();
  }
}

const session = createSession({ invoke, listen: (name, cb) => tauri.event.listen(name, cb) }, onChange);

async function main() {
  const langs = $("language");
  for (const [code, label] of Object.entries(LANGUAGES)) langs.append(new Option(label, code));
  langs.value = lang;
  langs.addEventListener("change", () => {
    lang = langs.value;
    localStorage.setItem("kaigi.lang", lang);
    t = translator(lang);
    translate();
  });
  $("name").value = localStorage.getItem("kaigi.name") || "";
  $("room").value = localStorage.getItem("kaigi.room") || "";
  endpoint = await invoke("frame_endpoint");
  await session.start();
  await loadDevices();
  for (const id of ["camera", "microphone"]) {
    const saved = localStorage.getItem(`kaigi.${id}`);
    if (saved !== null && [...$(id).options].some((o) => o.value === saved)) $(id).value = saved;
    $(id).addEventListener("change", startPreview);
  }
  translate();
  $("join-form").addEventListener("submit", onJoin);
  $("mic").addEventListener("click", () => toggle("audio"));
  $("cam").addEventListener("click", () => toggle("video"));
  $("leave").addEventListener("click", async () => {
    $("leave").disabled = true;
    await session.leave();
    $("leave").disabled = false;
  });
  $("kicked").addEventListener("close", () => session.dismissKicked());
  $("room-camera").addEventListener("change", (e) =>
    invoke("set_camera", { id: e.target.value }).catch(showError));
  $("room-microphone").addEventListener("change", (e) =>
    invoke("set_microphone", { id: e.target.value }).catch(showError));
  $("room-speaker").addEventListener("change", (e) => {
    if (e.target.value) invoke("set_speaker", { id: e.target.value }).catch(showError);
  });
  $("copy").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText($("bot-command").textContent);
      $("copy").textContent = t("copied");
    } catch {
      const range = document.createRange();
      range.selectNodeContents($("bot-command"));
      getSelection().removeAllRanges();
      getSelection().addRange(range);
    }
  });
  showScreen("join");
  startPreview();
}

main().catch(showError);
