// Screen sharing: the toolbar's Share button, the picker (the whole
// screen and each window, with thumbnails, as the app lists them), and
// the "You are sharing" bar with Stop. Others' shared screens are tiles
// (room.js).

import { showError } from "./dialogs.js";

/** The Share button and the sharing bar, from the room state. */
export function renderShare(ui) {
  const room = ui.session.room;
  const sharing = room ? room.sharing : null;
  const bar = ui.$("sharing-bar");
  if (bar.hidden !== !sharing) bar.hidden = !sharing;
  const text = sharing ? ui.t(sharing.startsWith("window:") ? "youAreSharingWindow" : "youAreSharing") : "";
  if (ui.$("sharing-text").textContent !== text) ui.$("sharing-text").textContent = text;
  const button = ui.$("share");
  const label = sharing ? ui.t("stopSharing") : ui.t("share");
  if (button.textContent !== label) button.textContent = label;
  button.setAttribute("aria-pressed", String(!!sharing));
  // An audience sends nothing.
  button.hidden = ui.joinedRole === "audience";
}

/** One source of the picker: its thumbnail, its name and size. */
function sourceItem(ui, s) {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.dataset.source = s.id;
  button.dataset.testid = s.kind === "screen" ? "share-source-screen" : `share-source-${s.id}`;
  const name = s.kind === "screen" ? ui.t("entireScreen") : s.title || ui.t("untitledWindow");
  let picture;
  if (s.thumbnail) {
    picture = document.createElement("img");
    picture.src = s.thumbnail;
    picture.alt = "";
  } else {
    picture = document.createElement("span");
    picture.className = "nothumb";
  }
  const label = document.createElement("span");
  label.className = "label";
  label.textContent = name;
  label.title = name;
  const dims = document.createElement("span");
  dims.className = "dims";
  dims.textContent = `${s.width} × ${s.height}`;
  button.append(picture, label, dims);
  button.setAttribute("aria-label", `${name} (${s.width} × ${s.height})`);
  li.append(button);
  return li;
}

/** Lists what can be shared and opens the picker. */
async function openPicker(ui) {
  const picker = ui.$("share-picker");
  let sources;
  try {
    sources = await ui.invoke("list_share_sources");
  } catch (e) {
    return showError(ui, e);
  }
  ui.$("share-sources").replaceChildren(...sources.map((s) => sourceItem(ui, s)));
  ui.$("share-none").hidden = sources.length > 0;
  if (!picker.open) picker.showModal();
  picker.querySelector("[data-source]")?.focus();
}

/** Shares `source`; the app's `share-started` shows the bar. */
async function startShare(ui, source) {
  ui.$("share-picker").close();
  ui.$("share").disabled = true;
  try {
    await ui.invoke("start_share", { request: { source } });
  } catch (e) {
    showError(ui, e);
  }
  ui.$("share").disabled = false;
}

/** Stops sharing; the app's `share-stopped` hides the bar. */
async function stopShare(ui) {
  try {
    await ui.invoke("stop_share");
  } catch (e) {
    showError(ui, e);
  }
}

/** Wires Share, the picker and Stop. */
export function wireShare(ui) {
  ui.$("share").addEventListener("click", () => {
    const room = ui.session.room;
    if (!room) return;
    if (room.sharing) stopShare(ui);
    else openPicker(ui);
  });
  ui.$("share-stop").addEventListener("click", () => stopShare(ui));
  ui.$("share-sources").addEventListener("click", (ev) => {
    const button = ev.target.closest("button[data-source]");
    if (button) startShare(ui, button.dataset.source);
  });
}
