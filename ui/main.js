// The window: builds the shared UI context and wires the views (join.js,
// room.js, toolbar.js, dialogs.js, settings.js) to the app's commands and events. The
// room's state changes only through logic.js's reducer; words come from
// i18n.js; the command and event names from the generated contract.js.

import { LANGUAGES, pickLanguage, translator } from "./i18n.js";
import { createSession } from "./session.js";
import { showError, showKicked, showNotice, wireDialogs } from "./dialogs.js";
import { loadDevices, onDeviceChanged, startPreview, takeInvite, wireJoin } from "./join.js";
import { layoutTiles, leaveRoomView, renderHeader, renderRoom, showScreen } from "./room.js";
import { renderToolbar, showLevel, wireToolbar } from "./toolbar.js";
import { wireSettings } from "./settings.js";
import { wireShare } from "./share.js";

const tauri = window.__TAURI__;
const lang = localStorage.getItem("kaigi.lang") || pickLanguage(navigator.languages);

/** What every view shares. */
const ui = {
  $: (id) => document.getElementById(id),
  invoke: (cmd, args) => tauri.core.invoke(cmd, args),
  lang,
  t: translator(lang),
  endpoint: null,
  session: null,
  players: {}, // tile id -> player
  previewPlayer: null,
  view: localStorage.getItem("kaigi.view") === "speaker" ? "speaker" : "grid", // or "speaker"
  pinned: null, // a tile id: a user id, "local", or a shared screen's ("alice.sub")
  actualSize: null, // the shared screen shown at its actual size, if any
  window: tauri.window.getCurrentWindow(),
  fullscreen: false,
};

function translate() {
  document.documentElement.lang = ui.lang;
  for (const el of document.querySelectorAll("[data-t]")) el.textContent = ui.t(el.dataset.t);
  for (const el of document.querySelectorAll("[data-tp]")) el.placeholder = ui.t(el.dataset.tp);
  for (const el of document.querySelectorAll("[data-ta]")) el.setAttribute("aria-label", ui.t(el.dataset.ta));
  renderToolbar(ui);
  renderRoom(ui);
  renderHeader(ui);
}

/** What the session says to show. */
function onChange(change) {
  switch (change.kind) {
    case "error":
      return showError(ui, change.error);
    case "kicked":
      // The host who ended the meeting is not told it ended.
      if (ui.endedByMe && change.reason === "room-dismissed") return ui.session.dismissKicked();
      return showKicked(ui, change.reason);
    case "left":
      return leaveRoomView(ui);
    case "level":
      return showLevel(ui, change.level);
    case "announce":
      // Said by screen readers (a polite live region), not shown.
      ui.$("announcer").textContent = ui.t(change.what === "peer-join" ? "announceJoin" : "announceLeave", { name: change.userId });
      return;
    case "devices":
      return onDeviceChanged(ui, change.change).catch((e) => showError(ui, e));
    case "invite":
      return takeInvite(ui, change.link);
    case "blocked": {
      const key = change.audio && change.video ? "blocked.both" : change.audio ? "blocked.audio" : change.video ? "blocked.video" : "blocked.none";
      showNotice(ui, ui.t(key));
      return renderRoom(ui);
    }
    default:
      return renderRoom(ui);
  }
}

ui.session = createSession(
  { invoke: ui.invoke, listen: (name, cb) => tauri.event.listen(name, cb) },
  onChange,
);

async function main() {
  const langs = ui.$("language");
  for (const [code, label] of Object.entries(LANGUAGES)) langs.append(new Option(label, code));
  langs.value = ui.lang;
  langs.addEventListener("change", () => {
    ui.lang = langs.value;
    localStorage.setItem("kaigi.lang", ui.lang);
    ui.t = translator(ui.lang);
    translate();
    // Device names the app gives in words (test pattern, tone, no device) follow too.
    loadDevices(ui).catch((e) => showError(ui, e));
  });
  new ResizeObserver(() => layoutTiles(ui)).observe(ui.$("stage"));
  ui.endpoint = await ui.invoke("frame_endpoint");
  await ui.session.start();
  await loadDevices(ui);
  wireJoin(ui);
  wireToolbar(ui);
  wireShare(ui);
  wireDialogs(ui);
  await wireSettings(ui);
  translate();
  showScreen(ui, "join");
  // Opened with an invite link.
  takeInvite(ui, await ui.invoke("take_opened_invite"));
  startPreview(ui);
}

main().catch((e) => showError(ui, e));
