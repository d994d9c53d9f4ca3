// The window's conversation with the app over Tauri's IPC, with `invoke`
// and `listen` passed in: main.js gives it `window.__TAURI__`'s, the Node
// tests a mocked IPC. What to show is decided here; drawing it is main.js's.

import { emptyRoom, applyEvent } from "./logic.js";
import { EVENTS } from "./contract.js";

/** Every event the app emits (generated from kaigi-app's `UiEvent`). */
export { EVENTS };

/**
 * A session: `session.room` is the room view's state (null outside a room).
 * `onChange(what)` is told what to show: `{kind: "room"}` (render the room),
 * `{kind: "kicked", reason}` (the dialog: a `client-banned` reason, or
 * `disconnected` when reconnecting gave up), `{kind: "left"}` (back to the join
 * screen), `{kind: "error", error}` (`{code, message}` to put in words),
 * `{kind: "level", level}` (the own microphone's meter, 0–100, in or out of
 * a room), `{kind: "devices", change}` (a `device-changed` payload: the
 * pickers must follow), `{kind: "invite", link}` (a `kaigi://` link was
 * opened: the join form takes it).
 */
export function createSession({ invoke, listen }, onChange) {
  const session = {
    room: null,
    joined: null,

    /** Listens for every app event. */
    async start() {
      await Promise.all(EVENTS.map((name) => listen(name, (e) => session.handle(name, e.payload))));
    },

    /** Applies one event and says what to show. */
    handle(name, payload) {
      if (name === "error" && payload.name === "RECONNECT_FAILED" && session.room) {
        // Reconnecting gave up: the room is gone, said as plainly as a forced exit.
        session.room.connection = "DISCONNECTED";
        return onChange({ kind: "kicked", reason: "disconnected" });
      }
      if (name === "error") return onChange({ kind: "error", error: { code: payload.name, message: payload.message } });
      if (name === "local-audio-level") return onChange({ kind: "level", level: payload.level });
      if (name === "device-changed") return onChange({ kind: "devices", change: payload });
      if (name === "invite-opened") return onChange({ kind: "invite", link: payload.link });
      if (!session.room) return;
      applyEvent(session.room, payload);
      if (name === "peer-join" || name === "peer-leave") onChange({ kind: "announce", what: name, userId: payload.userId });
      if (name === "client-banned") return onChange({ kind: "kicked", reason: payload.reason });
      if (name === "blocked") return onChange({ kind: "blocked", audio: !!payload.audio, video: !!payload.video });
      if (name === "client-left") {
        session.room = null;
        return onChange({ kind: "left" });
      }
      onChange({ kind: "room" });
    },

    /** Joins with a `joinForm(...)` result; the room starts with those already there. */
    async join(form) {
      const joined = await invoke("join_room", { form });
      session.joined = joined;
      session.room = emptyRoom(joined.userId);
      for (const u of joined.users) applyEvent(session.room, { event: "peer-join", ...u });
      return joined;
    },

    /** Leaves; the app's `client-left` ends the room view. A failed leave ends it too. */
    async leave() {
      try {
        await invoke("leave_room");
      } catch (error) {
        session.room = null;
        onChange({ kind: "error", error });
        onChange({ kind: "left" });
      }
    },

    /** After the kicked-out dialog's OK (resolves once the join screen is back). */
    dismissKicked() {
      session.room = null;
      return onChange({ kind: "left" });
    },
  };
  return session;
}
