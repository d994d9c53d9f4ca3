// Notices and dialogs: the error toast and the kicked-out dialog.

import { errorText, kickedText } from "./i18n.js";

/** Shows `error` (`{code, message}`) in words for a few seconds. */
export function showError(ui, error) {
  toast(ui, errorText(ui.t, error), "alert");
}

/** Shows `text`, news rather than a failure, for a few seconds. */
export function showNotice(ui, text) {
  toast(ui, text, "notice");
}

function toast(ui, text, kind) {
  const toast = ui.$("toast");
  toast.textContent = text;
  toast.classList.toggle("notice", kind === "notice");
  toast.setAttribute("role", kind === "notice" ? "status" : "alert");
  toast.hidden = false;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => (ui.$("toast").hidden = true), 6000);
}

/** Says why the user was forced out; `session.dismissKicked` on close. */
export function showKicked(ui, reason) {
  ui.$("kicked-reason").textContent = kickedText(ui.t, reason);
  ui.$("kicked").dataset.reason = reason;
  ui.$("kicked").showModal();
}

/** Wires the dialogs' buttons. */
export function wireDialogs(ui) {
  ui.$("kicked").addEventListener("close", () => ui.session.dismissKicked());
}
