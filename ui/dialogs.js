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

/**
 * Says why the user is out of the room — forced out (a `client-banned`
 * reason) or `disconnected` (reconnecting gave up) — with OK and Rejoin.
 */
export function showKicked(ui, reason) {
  const title = ui.t(`kickedTitle.${reason}`);
  ui.$("kicked-title").textContent = title.startsWith("kickedTitle.") ? ui.t("kickedTitle.removed-by-admin") : title;
  ui.$("kicked-reason").textContent = kickedText(ui.t, reason);
  ui.$("kicked-reason").dataset.reason = reason;
  ui.$("kicked").dataset.reason = reason;
  if (!ui.$("kicked").open) ui.$("kicked").showModal();
}

/** Wires the dialogs' buttons: OK goes back to the join screen, Rejoin joins again. */
export function wireDialogs(ui) {
  const kicked = ui.$("kicked");
  kicked.addEventListener("close", async () => {
    const rejoin = kicked.returnValue === "rejoin";
    kicked.returnValue = "";
    await ui.session.dismissKicked();
    if (rejoin) ui.$("join-form").requestSubmit();
  });
}

/**
 * Asks the user to confirm: `text`, an OK button labelled `ok`, and when
 * `alt` is given a second choice. Resolves to "ok", "alt" or "cancel".
 */
export function confirmChoice(ui, { text, ok, alt = null, danger = false }) {
  const dialog = ui.$("confirm");
  ui.$("confirm-text").textContent = text;
  const okButton = ui.$("confirm-ok");
  okButton.textContent = ok;
  okButton.className = danger ? "danger" : "primary";
  ui.$("confirm-alt").hidden = !alt;
  ui.$("confirm-alt").textContent = alt || "";
  dialog.returnValue = "cancel";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue || "cancel"), { once: true });
    dialog.showModal();
  });
}
