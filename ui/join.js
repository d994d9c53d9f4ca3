// The join screen: device pickers, the preview, and the join form.

import { joinForm, parseInvite } from "./logic.js";
import { playTile } from "./video.js";
import { showError, showNotice } from "./dialogs.js";
import { errorText } from "./i18n.js";
import { enterRoom } from "./room.js";

function fillDevices(ui, select, list, extra) {
  const keep = select.value;
  const filled = select.options.length > 0;
  select.replaceChildren();
  for (const [id, label] of extra) select.append(new Option(label, id));
  for (const d of list) {
    const label = d.id === "test-pattern" ? ui.t("testPattern") : d.id === "tone" ? ui.t("tone") : d.label;
    select.append(new Option(label, d.id));
  }
  if (select.options.length === 0) {
    select.append(new Option(ui.t("noDevice"), ""));
  } else if ([...select.options].some((o) => o.value === keep)) select.value = keep;
  else if (filled && extra.length === 0) {
    // The device in use went away and nothing took over: say so rather
    // than show another device as chosen.
    select.prepend(new Option(ui.t("noDevice"), ""));
    select.value = "";
  }
}

const PICKERS = { microphone: "room-microphone", camera: "room-camera", speaker: "room-speaker" };

/**
 * A device plugged in or unplugged (`device-changed`): the pickers list
 * what there is now. One that took over from a lost device (`active`) is
 * shown as chosen, and said.
 */
export async function onDeviceChanged(ui, change) {
  await loadDevices(ui);
  if (change.action !== "active" || !PICKERS[change.type]) return;
  const picker = ui.$(PICKERS[change.type]);
  picker.querySelector('option[value=""]:not([data-t])')?.remove();
  picker.value = change.device.deviceId;
  showNotice(ui, ui.t(`deviceActive.${change.type}`, { label: change.device.label }));
}

/** Fills every device picker (join screen and toolbar). */
export async function loadDevices(ui) {
  const $ = ui.$;
  const d = await ui.invoke("list_devices");
  const none = [["", ui.t("none")]];
  fillDevices(ui, $("camera"), d.cameras, none);
  fillDevices(ui, $("microphone"), d.microphones, none);
  fillDevices(ui, $("room-camera"), d.cameras, []);
  fillDevices(ui, $("room-microphone"), d.microphones, []);
  fillDevices(ui, $("room-speaker"), d.speakers, []);
  $("room-speaker").disabled = d.speakers.length === 0;
  // A first-time default: the first real device, else the synthetic one.
  if (!localStorage.getItem("kaigi.camera")) $("camera").selectedIndex = 1;
  if (!localStorage.getItem("kaigi.microphone")) $("microphone").selectedIndex = 1;
}

/** (Re)starts the preview with the chosen devices (resolves when it has). */
export async function startPreview(ui) {
  const $ = ui.$;
  const name = $("name").value.trim() || "me";
  try {
    const p = await ui.invoke("start_preview", {
      userId: name,
      camera: $("camera").value || null,
      microphone: $("microphone").value || null,
    });
    if (ui.previewPlayer) ui.previewPlayer.stop();
    ui.previewPlayer = p.video ? playTile(ui.endpoint, "local", $("preview")) : null;
  } catch (e) {
    showError(ui, e);
  }
}

async function onJoin(ui, ev) {
  const $ = ui.$;
  ev.preventDefault();
  let form;
  $("join-error").hidden = true;
  try {
    form = joinForm(Object.fromEntries(new FormData($("join-form"))));
  } catch (e) {
    return showJoinError(ui, e);
  }
  localStorage.setItem("kaigi.name", form.userId);
  if (!form.invite) localStorage.setItem("kaigi.room", $("room").value.trim());
  localStorage.setItem("kaigi.camera", $("camera").value);
  localStorage.setItem("kaigi.microphone", $("microphone").value);
  $("join").disabled = true;
  $("join").textContent = ui.t("joining");
  if (ui.previewPlayer) ui.previewPlayer.stop();
  ui.previewPlayer = null;
  try {
    const joined = await ui.session.join(form);
    enterRoom(ui, joined, form);
  } catch (e) {
    $("join").disabled = false;
    $("join").textContent = ui.t("join");
    showJoinError(ui, e);
    startPreview(ui);
  }
}

/** Says why joining failed, above the Join button, until the next try. */
function showJoinError(ui, error) {
  const el = ui.$("join-error");
  el.textContent = errorText(ui.t, error);
  el.hidden = false;
}

/**
 * Shows whether the form joins through an invite: then the invite names
 * the room, and only a name is asked for.
 */
export function renderInvite(ui) {
  const $ = ui.$;
  const text = $("invite").value.trim();
  let valid = false;
  try {
    parseInvite(text);
    valid = true;
  } catch {
    valid = false;
  }
  $("room-field").hidden = valid;
  $("room").required = !valid;
  $("invite-note").hidden = !valid;
  $("invite").setAttribute("aria-invalid", text && !valid ? "true" : "false");
}

/** An invite link given to the app (opened from a browser): into the form. */
export function takeInvite(ui, link) {
  const $ = ui.$;
  if (!link) return;
  $("invite").value = link;
  renderInvite(ui);
  if (!$("join-screen").hidden) $("name").focus();
}

/** Restores the form's last values and wires it. */
export function wireJoin(ui) {
  const $ = ui.$;
  $("invite").addEventListener("input", () => renderInvite(ui));
  $("name").value = localStorage.getItem("kaigi.name") || "";
  $("room").value = localStorage.getItem("kaigi.room") || "";
  for (const id of ["camera", "microphone"]) {
    const saved = localStorage.getItem(`kaigi.${id}`);
    if (saved !== null && [...$(id).options].some((o) => o.value === saved)) $(id).value = saved;
    $(id).addEventListener("change", () => startPreview(ui));
  }
  $("join-form").addEventListener("submit", (ev) => onJoin(ui, ev));
}
