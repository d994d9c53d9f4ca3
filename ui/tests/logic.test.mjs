// The UI's logic without a window: events → room state, the join form,
// frame parsing, and the words for every reason and language.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  emptyRoom, applyEvent, activeSpeaker, tiles, joinForm, mutedHint, MUTED_HINT_MS,
  readAudioSettings, AUDIO_DEFAULTS,
} from "../logic.js";
import { parseFrame } from "../video.js";
import { MESSAGES, pickLanguage, translator, errorText, kickedText } from "../i18n.js";
import { ERROR_CODES } from "../contract.js";

test("events build the room view", () => {
  const s = emptyRoom("alice");
  applyEvent(s, { event: "peer-join", userId: "bob", role: "anchor" });
  applyEvent(s, { event: "peer-join", userId: "carol", role: "audience" });
  applyEvent(s, { event: "stream-added", userId: "bob", audio: true, video: true });
  applyEvent(s, { event: "stream-subscribed", userId: "bob" });
  applyEvent(s, { event: "stream-updated", userId: "bob", audioMuted: true, videoMuted: false });
  assert.deepEqual(tiles(s).map((p) => p.userId), ["bob", "carol"]);
  assert.equal(s.peers.bob.audioMuted, true);
  assert.equal(s.peers.bob.videoPaused, false, "absent: not paused");
  applyEvent(s, {
    event: "stream-updated", userId: "bob", audioMuted: true, videoMuted: false, videoPaused: true,
  });
  assert.equal(s.peers.bob.videoPaused, true, "the server paused bob's video to us");
  for (const lang of ["en", "ja", "ko"]) assert.ok(MESSAGES[lang].videoPaused, lang);
  applyEvent(s, {
    event: "audio-volume",
    result: [{ userId: "bob", audioVolume: 40 }, { userId: "alice", audioVolume: 90 }],
  });
  assert.equal(activeSpeaker(s), "bob", "one's own voice is not a remote speaker");
  applyEvent(s, { event: "audio-volume", result: [{ userId: "bob", audioVolume: 3 }] });
  assert.equal(activeSpeaker(s), null);
  applyEvent(s, { event: "stream-removed", userId: "bob" });
  assert.equal(s.peers.bob.subscribed, false);
  applyEvent(s, { event: "peer-leave", userId: "carol", reason: "left" });
  assert.deepEqual(Object.keys(s.peers), ["bob"]);
  applyEvent(s, { event: "connection-state-changed", prevState: "CONNECTED", state: "RECONNECTING" });
  assert.equal(s.connection, "RECONNECTING");
  applyEvent(s, {
    event: "network-quality", uplinkNetworkQuality: 1, downlinkNetworkQuality: 3,
    uplinkRTT: 5, uplinkLoss: 0, downlinkRTT: 5, downlinkLoss: 6,
  });
  assert.equal(s.quality, 3);
  assert.equal(s.transport, null, "no path reported yet");
  applyEvent(s, {
    event: "network-quality", uplinkNetworkQuality: 1, downlinkNetworkQuality: 1,
    uplinkRTT: 5, uplinkLoss: 0, downlinkRTT: 5, downlinkLoss: 0, transport: "tcp",
  });
  assert.equal(s.transport, "tcp", "media over TCP is shown");
  applyEvent(s, {
    event: "network-quality", uplinkNetworkQuality: 6, downlinkNetworkQuality: 6,
    uplinkRTT: 0, uplinkLoss: 100, downlinkRTT: 0, downlinkLoss: 100,
  });
  applyEvent(s, { event: "connection-state-changed", prevState: "RECONNECTING", state: "CONNECTED" });
  assert.equal(s.quality, 0, "back from a drop: unknown until the next report, not disconnected");
  assert.equal(s.transport, null, "and the new connection's path is not known yet");
  applyEvent(s, { event: "local-mute", audio: true });
  assert.deepEqual(s.muted, { audio: true, video: false }, "the toolbar's mute is state too");
  applyEvent(s, { event: "local-mute", video: true });
  assert.deepEqual(s.muted, { audio: true, video: true });
  applyEvent(s, { event: "client-banned", reason: "room-dismissed", message: "x" });
  assert.equal(s.screen, "kicked");
  assert.equal(s.kickedReason, "room-dismissed");
  assert.deepEqual(s.peers, {});
});

test("the join form", () => {
  assert.deepEqual(joinForm({ name: " alice ", room: "1234", camera: "test-pattern", microphone: "" }), {
    userId: "alice", roomId: 1234, strRoomId: null, role: "anchor",
    camera: "test-pattern", microphone: null, server: null, sdkAppId: null, userSig: null,
  });
  const named = joinForm({ name: "a", room: "standup", role: "audience" });
  assert.equal(named.strRoomId, "standup");
  assert.equal(named.roomId, null);
  assert.equal(named.role, "audience");
  assert.throws(() => joinForm({ name: "", room: "1" }), { code: "INVALID_PARAMETER" });
  assert.throws(() => joinForm({ name: "a", room: " " }), { code: "INVALID_PARAMETER" });
  assert.throws(() => joinForm({ name: "a", room: "1", server: "ws://h:7880" }), {
    code: "INVALID_PARAMETER",
  });
  const remote = joinForm({ name: "a", room: "1", server: "ws://h:7880", sdkAppId: "1400000001", userSig: "sig" });
  assert.equal(remote.sdkAppId, 1400000001);
  assert.equal(remote.userSig, "sig");
});

test("frames: I420 then the trailer", () => {
  const w = 4, h = 2;
  const buf = new ArrayBuffer(w * h * 1.5 + 16);
  const bytes = new Uint8Array(buf);
  bytes.fill(7, 0, 8);
  const dv = new DataView(buf, w * h * 1.5);
  dv.setUint32(0, w, true);
  dv.setUint32(4, h, true);
  dv.setUint32(8, 42, true);
  bytes.set([75, 71, 70, 49], w * h * 1.5 + 12); // "KGF1"
  const f = parseFrame(buf);
  assert.equal(f.width, 4);
  assert.equal(f.number, 42);
  assert.equal(f.y.length, 8);
  assert.equal(f.u.length, 2);
  assert.equal(f.y[0], 7);
  bytes[w * h * 1.5 + 12] = 0;
  assert.equal(parseFrame(buf), null, "bad magic");
  assert.equal(parseFrame(new ArrayBuffer(3)), null, "too short");
});

test("every language has every word", () => {
  const keys = Object.keys(MESSAGES.en).sort();
  for (const lang of ["ja", "ko"]) {
    assert.deepEqual(Object.keys(MESSAGES[lang]).sort(), keys, lang);
  }
  assert.equal(pickLanguage(["ja-JP", "en-US"]), "ja");
  assert.equal(pickLanguage(["ko"]), "ko");
  assert.equal(pickLanguage(["fr-FR"]), "en");
});

test("every error code the app can give has words in every language", () => {
  assert.ok(ERROR_CODES.length > 30);
  for (const lang of Object.keys(MESSAGES)) {
    const missing = ERROR_CODES.filter((c) => !(`error.${c}` in MESSAGES[lang]));
    assert.deepEqual(missing, [], `${lang} has no words for ${missing}`);
  }
});

test("kick reasons and errors are said in words", () => {
  for (const lang of ["en", "ja", "ko"]) {
    const t = translator(lang);
    const words = ["duplicate-user-id", "removed-by-admin", "room-dismissed"].map((r) => kickedText(t, r));
    assert.equal(new Set(words).size, 3, `${lang}: three different reasons`);
  }
  const t = translator("en");
  assert.match(kickedText(t, "duplicate-user-id"), /same name/);
  assert.match(kickedText(t, "removed-by-admin"), /administrator removed you/);
  assert.match(kickedText(t, "room-dismissed"), /room was closed/);
  assert.match(errorText(t, { code: "USERSIG_EXPIRED", message: "x" }), /expired/);
  assert.match(errorText(t, { code: "SOMETHING_NEW", message: "disk full" }), /disk full/);
  assert.match(errorText(t, { code: "INVALID_PARAMETER", message: "a name is required" }), /a name is required/);
  assert.match(translator("ja")("error.SERVER_UNREACHABLE"), /サーバー/);
});

test("speaking while muted shows a hint for a while, and unmuting ends it", () => {
  const s = emptyRoom("alice");
  applyEvent(s, { event: "speaking-while-muted", now: 1000 });
  assert.equal(mutedHint(s, 1001), false, "not muted: no hint");
  applyEvent(s, { event: "local-mute", audio: true });
  applyEvent(s, { event: "speaking-while-muted", now: 1000 });
  assert.equal(mutedHint(s, 1001), true);
  assert.equal(mutedHint(s, 1000 + MUTED_HINT_MS), false, "it goes by itself");
  applyEvent(s, { event: "speaking-while-muted", now: 2000 });
  applyEvent(s, { event: "local-mute", audio: false });
  assert.equal(mutedHint(s, 2001), false, "unmuted");
  for (const lang of ["en", "ja", "ko"]) assert.ok(MESSAGES[lang].mutedHint, lang);
});

test("audio settings: all on by default, each part remembered, junk ignored", () => {
  assert.deepEqual(readAudioSettings(null), AUDIO_DEFAULTS);
  assert.deepEqual(readAudioSettings("not json"), AUDIO_DEFAULTS);
  assert.deepEqual(readAudioSettings("null"), AUDIO_DEFAULTS);
  assert.deepEqual(
    readAudioSettings('{"echoCancellation":false,"autoGain":"no","extra":1}'),
    { echoCancellation: false, noiseSuppression: true, autoGain: true },
  );
});
