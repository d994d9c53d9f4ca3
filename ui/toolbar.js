// The room's toolbar: mute and camera buttons (their state is the room
// state's `muted`), device switches, leave.

import { applyEvent } from "./logic.js";
import { confirmChoice, showError, showNotice } from "./dialogs.js";
import { renderInviteCode, renderRoom } from "./room.js";

/** Keyboard shortcuts in a room (Google Meet's for the microphone and camera, Zoom's for leaving). */
export const SHORTCUTS = {
  mic: { key: "d", ctrl: true, label: "Ctrl+D" },
  cam: { key: "e", ctrl: true, label: "Ctrl+E" },
  leave: { key: "q", alt: true, label: "Alt+Q" },
};

/** Which toolbar button `ev` (a keydown) stands for, if any. */
export function shortcutFor(ev) {
  for (const [button, s] of Object.entries(SHORTCUTS)) {
    if (ev.key.toLowerCase() === s.key && !!ev.ctrlKey === !!s.ctrl && !!ev.altKey === !!s.alt && !ev.shiftKey && !ev.metaKey) return button;
  }
  return null;
}

/** Draws the buttons from the room state. */
export function renderToolbar(ui) {
  const muted = (ui.session.room && ui.session.room.muted) || { audio: false, video: false };
  const mic = ui.$("mic");
  const cam = ui.$("cam");
  mic.textContent = muted.audio ? ui.t("unmute") : ui.t("mute");
  mic.classList.toggle("off", muted.audio);
  mic.setAttribute("aria-pressed", String(muted.audio));
  mic.title = `${mic.textContent} (${SHORTCUTS.mic.label})`;
  cam.textContent = muted.video ? ui.t("cameraOn") : ui.t("cameraOff");
  cam.classList.toggle("off", muted.video);
  cam.setAttribute("aria-pressed", String(muted.video));
  cam.title = `${cam.textContent} (${SHORTCUTS.cam.label})`;
  const leave = ui.$("leave");
  leave.title = `${ui.t("leave")} (${SHORTCUTS.leave.label})`;
  const view = ui.$("view");
  view.textContent = ui.view === "speaker" ? ui.t("gridView") : ui.t("speakerView");
  view.setAttribute("aria-pressed", String(ui.view === "speaker"));
  const full = ui.$("fullscreen");
  full.textContent = ui.fullscreen ? ui.t("exitFullScreen") : ui.t("fullScreen");
  full.setAttribute("aria-pressed", String(!!ui.fullscreen));
}

/** Shows the own microphone's level (0–100, after processing) on every meter. */
export function showLevel(ui, level) {
  const width = `${Math.max(0, Math.min(100, Number(level) || 0))}%`;
  for (const bar of document.querySelectorAll(".level > span")) bar.style.width = width;
}

/** Mutes or unmutes `kind` ("audio" | "video"); the state follows the app. */
async function toggle(ui, kind) {
  const room = ui.session.room;
  if (!room) return;
  const next = !room.muted[kind];
  try {
    await ui.invoke("set_mute", kind === "audio" ? { audio: next } : { video: next });
    applyEvent(room, { event: "local-mute", [kind]: next });
    renderToolbar(ui);
    renderRoom(ui);
  } catch (e) {
    showError(ui, e);
  }
}

/**
 * The window in full screen or not, through the window itself (the page's
 * Fullscreen API waits on the window manager's answer, which not every
 * desktop gives). Escape leaves it.
 */
export async function setFullscreen(ui, on) {
  try {
    await ui.window.setFullscreen(on);
    ui.fullscreen = on;
  } catch (e) {
    showError(ui, e);
  }
  renderToolbar(ui);
}

/** Ends the meeting for everyone; this app then leaves without the kicked-out dialog. */
async function endForAll(ui) {
  ui.endedByMe = true;
  try {
    await ui.invoke("end_meeting");
  } catch (e) {
    ui.endedByMe = false;
    showError(ui, e);
  }
}

/** Wires the toolbar's controls. */
export function wireToolbar(ui) {
  const $ = ui.$;
  $("mic").addEventListener("click", () => toggle(ui, "audio"));
  $("cam").addEventListener("click", () => toggle(ui, "video"));
  $("leave").addEventListener("click", async () => {
    // A host chooses between leaving and ending the meeting for all, as in Zoom.
    if (ui.isHost) {
      const choice = await confirmChoice(ui, { text: ui.t("leaveOrEnd"), ok: ui.t("leave"), alt: ui.t("endForAll") });
      if (choice === "alt") return endForAll(ui);
      if (choice !== "ok") return;
    }
    $("leave").disabled = true;
    await ui.session.leave();
    $("leave").disabled = false;
  });
  $("end-for-all").addEventListener("click", async () => {
    const choice = await confirmChoice(ui, { text: ui.t("confirmEnd"), ok: ui.t("endForAll"), danger: true });
    if (choice === "ok") endForAll(ui);
  });
  $("view").addEventListener("click", () => {
    ui.view = ui.view === "speaker" ? "grid" : "speaker";
    localStorage.setItem("kaigi.view", ui.view);
    renderToolbar(ui);
    renderRoom(ui);
  });
  $("fullscreen").addEventListener("click", () => setFullscreen(ui, !ui.fullscreen));
  const togglePin = (id) => {
    ui.pinned = ui.pinned === id ? null : id;
    renderRoom(ui);
  };
  $("tiles").addEventListener("click", (ev) => {
    const pin = ev.target.closest("button.pin");
    if (pin) togglePin(pin.dataset.pin);
    // A shared screen fitted to its tile, or at its actual size (scrolled).
    const zoom = ev.target.closest("button.zoom");
    if (zoom) {
      ui.actualSize = ui.actualSize === zoom.dataset.zoom ? null : zoom.dataset.zoom;
      renderRoom(ui);
    }
  });
  $("tiles").addEventListener("dblclick", (ev) => {
    const tile = ev.target.closest(".tile");
    if (tile && !ev.target.closest("button")) togglePin(tile.id === "tile-local" ? "local" : tile.dataset.user);
  });
  $("chat-toggle").addEventListener("click", () => {
    const room = ui.session.room;
    if (!room) return;
    applyEvent(room, { event: "local-chat-open", open: !room.chatOpen });
    renderRoom(ui);
    if (room.chatOpen) $("chat-input").focus();
  });
  const send = async () => {
    const room = ui.session.room;
    const text = $("chat-input").value;
    if (!room || !text.trim()) return;
    $("chat-send").disabled = true;
    try {
      await ui.invoke("send_chat", { text });
      applyEvent(room, { event: "local-chat", text, sentAt: Date.now() });
      $("chat-input").value = "";
      renderRoom(ui);
    } catch (e) {
      showError(ui, e);
    }
    $("chat-send").disabled = false;
    $("chat-input").focus();
  };
  $("chat-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    send();
  });
  // Enter sends; Shift+Enter starts a new line.
  $("chat-input").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      send();
    }
  });
  $("people").addEventListener("click", () => {
    $("people-panel").hidden = !$("people-panel").hidden;
    renderRoom(ui);
  });
  $("people-list").addEventListener("click", async (ev) => {
    const button = ev.target.closest("button[data-user]");
    if (!button) return;
    const name = button.dataset.user;
    const choice = await confirmChoice(ui, { text: ui.t("confirmRemove", { name }), ok: ui.t("remove"), danger: true });
    if (choice !== "ok") return;
    try {
      await ui.invoke("remove_participant", { userId: name });
    } catch (e) {
      showError(ui, e);
    }
  });
  $("room-camera").addEventListener("change", (e) =>
    ui.invoke("set_camera", { id: e.target.value }).catch((err) => showError(ui, err)));
  $("room-microphone").addEventListener("change", (e) =>
    ui.invoke("set_microphone", { id: e.target.value }).catch((err) => showError(ui, err)));
  $("room-speaker").addEventListener("change", (e) => {
    if (e.target.value) ui.invoke("set_speaker", { id: e.target.value }).catch((err) => showError(ui, err));
  });
  $("invite-copy").addEventListener("click", async () => {
    try {
      ui.invite = await ui.invoke("create_invite");
      renderInviteCode(ui);
      await navigator.clipboard.writeText(ui.invite.link);
      showNotice(ui, ui.t("inviteCopied"));
    } catch (e) {
      // The code is on screen even when the clipboard refused.
      if (!ui.invite) showError(ui, e);
    }
  });
  $("invite-revoke").addEventListener("click", async () => {
    try {
      await ui.invoke("revoke_invite");
      ui.invite = null;
      renderInviteCode(ui);
      showNotice(ui, ui.t("inviteRevoked"));
    } catch (e) {
      showError(ui, e);
    }
  });
  $("copy").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(ui.botCommand || "");
      $("copy").textContent = ui.t("copied");
    } catch (e) {
      showError(ui, e);
    }
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && ui.fullscreen) return setFullscreen(ui, false);
    if (!ui.session.room || $("room-screen").hidden) return;
    if (ev.target.closest && ev.target.closest("textarea, input")) return;
    const button = shortcutFor(ev);
    if (!button || $(button).disabled) return;
    ev.preventDefault();
    $(button).click();
  });
}
