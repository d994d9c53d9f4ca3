// The settings dialog: the microphone's processing (echo cancellation,
// noise suppression, automatic level), remembered on this computer and
// handed to the app at start and on every change.

import { readAudioSettings } from "./logic.js";
import { showError } from "./dialogs.js";

const KEY = "kaigi.audio";
const BOXES = {
  echoCancellation: "echo-cancellation",
  noiseSuppression: "noise-suppression",
  autoGain: "auto-gain",
};

/** Sends `settings` to the app (it applies them to the open microphone). */
function apply(ui, settings) {
  return ui.invoke("set_audio_processing", { settings }).catch((e) => showError(ui, e));
}

/** Wires the dialog and hands the remembered settings to the app. */
export function wireSettings(ui) {
  const $ = ui.$;
  let settings = readAudioSettings(localStorage.getItem(KEY));
  for (const [k, id] of Object.entries(BOXES)) {
    $(id).checked = settings[k];
    $(id).addEventListener("change", () => {
      settings = { ...settings, [k]: $(id).checked };
      localStorage.setItem(KEY, JSON.stringify(settings));
      apply(ui, settings);
    });
  }
  $("settings-open").addEventListener("click", () => $("settings").showModal());
  return apply(ui, settings);
}
