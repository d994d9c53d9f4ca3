// The window's IPC conversation against a mocked Tauri IPC: the commands it
// calls with the arguments the Rust side takes, the events it listens for,
// and what it shows for a join, peers, a forced exit, a leave and errors.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { createSession } from "../session.js";
import { COMMANDS, IPC_TRANSPORT_COMMANDS, RESULTS, EVENTS as CONTRACT_EVENTS } from "../contract.js";
import { joinForm } from "../logic.js";

/** A mocked IPC: `handlers[cmd](args)` answers invokes; `emit` plays an app event. */
function mockIpc(handlers) {
  const calls = [];
  const listeners = new Map();
  return {
    calls,
    listeners,
    invoke: async (cmd, args) => {
      calls.push([cmd, args]);
      if (!handlers[cmd]) throw { code: "UNKNOWN_COMMAND", message: cmd };
      return handlers[cmd](args);
    },
    listen: async (name, cb) => {
      listeners.set(name, cb);
      return () => listeners.delete(name);
    },
    emit(name, payload) {
      const cb = listeners.get(name);
      assert.ok(cb, `nobody listens for ${name}`);
      cb({ event: name, payload: { event: name, ...payload } });
    },
  };
}

const JOINED = {
  userId: "alice", room: "standup", role: "anchor", server: "ws://127.0.0.1:7880",
  embedded: true, botCommand: "kaigi bot …", publishing: true, host: true, invite: null,
  users: [{ userId: "bob", role: "anchor" }],
};

test("it listens for every event the app emits", async () => {
  const ipc = mockIpc({});
  await createSession(ipc, () => {}).start();
  // The names generated from kaigi-app's UiEvent (ui/contract.js).
  assert.ok(CONTRACT_EVENTS.includes("client-banned") && CONTRACT_EVENTS.includes("client-left"));
  assert.deepEqual([...ipc.listeners.keys()].sort(), [...CONTRACT_EVENTS].sort());
});

test("every command the UI calls exists, with arguments it takes", () => {
  const dir = new URL("../", import.meta.url);
  const sources = readdirSync(dir).filter((f) => f.endsWith(".js") && f !== "contract.js");
  let calls = 0;
  for (const file of sources) {
    const src = readFileSync(new URL(file, dir), "utf8");
    for (const m of src.matchAll(/invoke\("([a-z_]+)"(?:,\s*\{([^}]*)\})?/g)) {
      calls += 1;
      const [, name, args] = m;
      // The IPC video paths exist only in the benchmark's builds, and only
      // video.js may use them.
      const known = name in COMMANDS ? COMMANDS : file === "video.js" ? IPC_TRANSPORT_COMMANDS : {};
      assert.ok(name in known, `${file} calls ${name}, which the app does not have`);
      for (const key of (args || "").split(",").map((a) => a.trim().split(/[:\s]/)[0]).filter(Boolean)) {
        assert.ok(known[name].includes(key), `${file}: ${name} takes no argument ${key}`);
      }
    }
  }
  assert.ok(calls >= 10, `found ${calls} calls`);
});

test("the mocked join answers in the shape the app returns", () => {
  assert.deepEqual(Object.keys(JOINED).sort(), [...RESULTS.join_room].sort());
});

test("join, peers, a forced exit and its OK", async () => {
  const ipc = mockIpc({ join_room: () => JOINED });
  const shown = [];
  const s = createSession(ipc, (c) => shown.push(c));
  await s.start();
  const form = joinForm({ name: "alice", room: "standup", camera: "test-pattern" });
  const joined = await s.join(form);
  assert.equal(joined.embedded, true);
  assert.deepEqual(ipc.calls[0], ["join_room", { form }], "the command takes {form}");
  assert.equal(ipc.calls[0][1].form.strRoomId, "standup");
  assert.deepEqual(Object.keys(s.room.peers), ["bob"], "those already there");

  ipc.emit("peer-join", { userId: "carol", role: "anchor" });
  ipc.emit("stream-added", { userId: "carol", audio: true, video: true });
  assert.deepEqual(shown.map((c) => c.kind), ["announce", "room", "room"]);
  assert.equal(s.room.peers.carol.video, true);

  // The backend blocks this user's microphone, then lets it through again.
  ipc.emit("blocked", { audio: true, video: false });
  assert.deepEqual(shown.at(-1), { kind: "blocked", audio: true, video: false });
  assert.deepEqual(s.room.blocked, { audio: true, video: false });
  ipc.emit("blocked", { audio: false, video: false });
  assert.deepEqual(s.room.blocked, { audio: false, video: false });

  ipc.emit("client-banned", { reason: "duplicate-user-id", message: "kicked out" });
  assert.deepEqual(shown.at(-1), { kind: "kicked", reason: "duplicate-user-id" });
  ipc.emit("local-stream-closed", {});
  s.dismissKicked();
  assert.deepEqual(shown.at(-1), { kind: "left" });
  assert.equal(s.room, null);
  // Events after the room ended change nothing.
  const before = shown.length;
  ipc.emit("peer-leave", { userId: "carol", reason: "left" });
  assert.equal(shown.length, before);
});

test("leave ends the room on client-left; a failed leave ends it too, with words", async () => {
  const ipc = mockIpc({ join_room: () => JOINED, leave_room: () => null });
  const shown = [];
  const s = createSession(ipc, (c) => shown.push(c));
  await s.start();
  await s.join(joinForm({ name: "alice", room: "1" }));
  await s.leave();
  assert.deepEqual(ipc.calls.at(-1), ["leave_room", undefined]);
  assert.notEqual(s.room, null, "the room view stays until the leave completes");
  ipc.emit("client-left", {});
  assert.deepEqual(shown.at(-1), { kind: "left" });
  assert.equal(s.room, null);

  const failing = mockIpc({
    join_room: () => JOINED,
    leave_room: () => { throw { code: "NOT_IN_ROOM", message: "not in a room" }; },
  });
  const shown2 = [];
  const s2 = createSession(failing, (c) => shown2.push(c));
  await s2.start();
  await s2.join(joinForm({ name: "alice", room: "1" }));
  await s2.leave();
  assert.deepEqual(shown2.map((c) => c.kind), ["error", "left"]);
  assert.equal(shown2[0].error.code, "NOT_IN_ROOM");
});

test("a refused join rejects with the app's {code, message}; error events are shown", async () => {
  const ipc = mockIpc({
    join_room: () => { throw { code: "USERSIG_EXPIRED", message: "expired at 1" }; },
  });
  const shown = [];
  const s = createSession(ipc, (c) => shown.push(c));
  await s.start();
  await assert.rejects(s.join(joinForm({ name: "alice", room: "1" })), { code: "USERSIG_EXPIRED" });
  assert.equal(s.room, null);
  ipc.emit("error", { name: "DEVICE_LOST", message: "the camera went away" });
  assert.deepEqual(shown, [{ kind: "error", error: { code: "DEVICE_LOST", message: "the camera went away" } }]);
});

test("the microphone's level reaches the meter before and during a call", async () => {
  const ipc = mockIpc({ join_room: () => JOINED });
  const shown = [];
  const s = createSession(ipc, (c) => shown.push(c));
  await s.start();
  ipc.emit("local-audio-level", { level: 37 });
  assert.deepEqual(shown, [{ kind: "level", level: 37 }], "on the join screen");
  await s.join(joinForm({ name: "alice", room: "1" }));
  ipc.emit("local-audio-level", { level: 0 });
  assert.deepEqual(shown.at(-1), { kind: "level", level: 0 }, "in the room, without re-rendering it");
});

test("devices plugged, unplugged or taken over reach the pickers, in a call or not", async () => {
  const ipc = mockIpc({ join_room: () => JOINED });
  const shown = [];
  const s = createSession(ipc, (c) => shown.push(c));
  await s.start();
  const added = { event: "device-changed", type: "microphone", action: "add", device: { deviceId: "usb", label: "USB mic" } };
  ipc.emit("device-changed", added);
  assert.deepEqual(shown, [{ kind: "devices", change: added }], "on the join screen");
  await s.join(joinForm({ name: "alice", room: "1" }));
  const active = { ...added, action: "active" };
  ipc.emit("device-changed", active);
  assert.deepEqual(shown.at(-1), { kind: "devices", change: active }, "in the room");
});

test("an invite link opened from outside reaches the join form", async () => {
  const ipc = mockIpc({ join_room: () => JOINED });
  const shown = [];
  const s = createSession(ipc, (c) => shown.push(c));
  await s.start();
  const link = "kaigi://invite/k3m-9xq2-7hd?server=ws://192.0.2.10:7880";
  ipc.emit("invite-opened", { event: "invite-opened", link });
  assert.deepEqual(shown, [{ kind: "invite", link }]);
});

test("joins and leaves are announced, and the room redrawn", async () => {
  const ipc = mockIpc({ join_room: () => JOINED });
  const shown = [];
  const s = createSession(ipc, (c) => shown.push(c));
  await s.start();
  await s.join(joinForm({ name: "alice", room: "1" }));
  ipc.emit("peer-join", { event: "peer-join", userId: "carol", role: "anchor" });
  assert.deepEqual(shown.slice(-2), [{ kind: "announce", what: "peer-join", userId: "carol" }, { kind: "room" }]);
  ipc.emit("peer-leave", { event: "peer-leave", userId: "carol", reason: "left" });
  assert.deepEqual(shown.slice(-2), [{ kind: "announce", what: "peer-leave", userId: "carol" }, { kind: "room" }]);
});
