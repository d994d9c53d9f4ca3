// The UI's logic without a window: events → room state, the join form,
// frame parsing, and the words for every reason and language.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  emptyRoom, applyEvent, activeSpeaker, tiles, joinForm, parseInvite, inviteLink, mutedHint, MUTED_HINT_MS, gridLayout, stageLayout,
  screenTiles, selfSends,
  readAudioSettings, AUDIO_DEFAULTS,
} from "../logic.js";
import { chooseRenderer, i420ToRgba, parseFrame } from "../video.js";
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

test("invites read as the server reads them", () => {
  const link = "kaigi://invite/k3m-9xq2-7hd?server=ws://192.0.2.10:7880";
  assert.deepEqual(parseInvite(`  ${link}\n`), { server: "ws://192.0.2.10:7880", code: "k3m-9xq2-7hd" });
  assert.deepEqual(parseInvite("K3M 9XQ2 7HD"), { server: null, code: "k3m-9xq2-7hd" });
  assert.deepEqual(parseInvite("OOO-iiii-LLL"), { server: null, code: "000-1111-111" });
  assert.equal(inviteLink("ws://192.0.2.10:7880", "k3m-9xq2-7hd"), link);
  const odd = inviteLink("wss://example.test/a b?x&y", "k3m-9xq2-7hd");
  assert.equal(parseInvite(odd).server, "wss://example.test/a b?x&y");
  for (const bad of ["", "abc", "k3m-9xq2-7hdx", "uuuuuuuuuu", "kaigi://join/k3m-9xq2-7hd",
    "kaigi://invite/k3m-9xq2-7hd?server=http://x", "kaigi://invite/k3m-9xq2-7hd?server=%zz"]) {
    assert.throws(() => parseInvite(bad), { key: "form.inviteInvalid" }, bad);
  }
  // With an invite the name is all the form needs; a bare code takes the
  // server field's address.
  const viaLink = joinForm({ name: "carol", room: "", invite: link });
  assert.equal(viaLink.invite, link);
  assert.equal(viaLink.server, "ws://192.0.2.10:7880");
  assert.equal(viaLink.roomId, null);
  const viaCode = joinForm({ name: "carol", invite: "k3m9xq27hd", server: "ws://h:7880" });
  assert.equal(viaCode.invite, "kaigi://invite/k3m-9xq2-7hd?server=ws://h:7880");
  assert.throws(() => joinForm({ name: "carol", invite: "k3m9xq27hd" }), { key: "form.inviteNeedsServer" });
  assert.throws(() => joinForm({ name: "", invite: link }), { key: "form.nameRequired" });
});

test("the join form", () => {
  assert.deepEqual(joinForm({ name: " alice ", room: "1234", camera: "test-pattern", microphone: "" }), {
    userId: "alice", roomId: 1234, strRoomId: null, role: "anchor",
    camera: "test-pattern", microphone: null, server: null, sdkAppId: null, userSig: null, secretKey: null, invite: null,
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
  // The app's key instead of a UserSig: the app makes one and hosts.
  const keyed = joinForm({ name: "a", room: "1", server: "ws://h:7880", sdkAppId: "1400000001", secretKey: " k " });
  assert.equal(keyed.secretKey, "k");
  assert.equal(keyed.userSig, null);
  // Each mistake has its own words, checked by the app's rules.
  const key = (fields) => {
    try {
      joinForm(fields);
    } catch (e) {
      return e.key;
    }
    return null;
  };
  assert.equal(key({ name: "", room: "1" }), "form.nameRequired");
  assert.equal(key({ name: "田中", room: "1" }), "form.nameCharset");
  assert.equal(key({ name: "a", room: "" }), "form.roomRequired");
  assert.equal(key({ name: "a", room: "4294967295" }), "form.roomRange");
  assert.equal(key({ name: "a", room: "会議" }), "form.roomCharset");
  assert.equal(key({ name: "a", room: "1", server: "ws://h:7880" }), "form.sdkAppIdRequired");
  assert.equal(key({ name: "a", room: "1", server: "ws://h:7880", sdkAppId: "1" }), "form.userSigRequired");
  assert.equal(key({ name: "a", room: "stand-up (daily)" }), null);
  for (const lang of ["en", "ja", "ko"]) {
    for (const k of ["form.nameRequired", "form.nameCharset", "form.roomRequired", "form.roomRange", "form.roomCharset", "form.sdkAppIdRequired", "form.userSigRequired"]) {
      assert.ok(translator(lang)(k) !== k, `${lang}: words for ${k}`);
    }
  }
});

test("tiles fill the stage as large as they fit", () => {
  // One tile in a wide stage: as tall as the stage.
  assert.deepEqual(gridLayout(1, 1000, 450, 10), { cols: 1, w: 800, h: 450 });
  // Four in a 16:9 stage: two by two.
  assert.equal(gridLayout(4, 1600, 900, 10).cols, 2);
  // Five in a wide, short stage: one row of five beats two rows.
  assert.equal(gridLayout(5, 3000, 300, 10).cols, 5);
  // Three in a tall, narrow stage: one column.
  assert.equal(gridLayout(3, 400, 1000, 10).cols, 1);
  // Never wider than the stage, whatever n.
  for (let n = 1; n <= 30; n++) {
    const { cols, w, h } = gridLayout(n, 900, 500, 10);
    const rows = Math.ceil(n / cols);
    assert.ok(cols * w + (cols - 1) * 10 <= 900 && rows * h + (rows - 1) * 10 <= 500, `n=${n}`);
  }
});

test("nobody shows as speaking while reconnecting", () => {
  const s = emptyRoom("alice");
  applyEvent(s, { event: "peer-join", userId: "bob", role: "anchor" });
  applyEvent(s, { event: "audio-volume", result: [{ userId: "bob", audioVolume: 80 }] });
  assert.equal(activeSpeaker(s), "bob");
  s.connection = "RECONNECTING";
  assert.equal(activeSpeaker(s), null);
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
  const reasons = ["duplicate-user-id", "removed-by-admin", "room-dismissed", "disconnected"];
  for (const lang of ["en", "ja", "ko"]) {
    const t = translator(lang);
    const words = reasons.map((r) => kickedText(t, r));
    assert.equal(new Set(words).size, 4, `${lang}: four different reasons`);
    const titles = reasons.map((r) => t(`kickedTitle.${r}`));
    assert.ok(titles.every((w, i) => w !== `kickedTitle.${reasons[i]}`), `${lang}: a title for each`);
    assert.equal(new Set(titles.slice(0, 3)).size, 3, `${lang}: forced exits are told apart in the title`);
    assert.ok(!words.some((w) => /^You signed in/.test(w)), "the duplicate id is not blamed on the user");
  }
  const t = translator("en");
  // TRTC's meaning: another client joined with this user id (not necessarily the user).
  assert.match(kickedText(t, "duplicate-user-id"), /Someone joined this room with the same user name/);
  assert.match(kickedText(t, "removed-by-admin"), /account administrator removed you/);
  assert.match(kickedText(t, "room-dismissed"), /account administrator closed this room/);
  // Form mistakes are said in the user's language, not the app's English.
  assert.match(errorText(translator("ja"), { code: "INVALID_PARAMETER", key: "form.userSigRequired", message: "UserSig is required with a server" }), /UserSig かアプリキーを入力/);
  assert.match(errorText(t, { code: "USERSIG_EXPIRED", message: "x" }), /expired/);
  assert.match(errorText(t, { code: "SOMETHING_NEW", message: "disk full" }), /disk full/);
  assert.match(errorText(t, { code: "INVALID_PARAMETER", message: "a name is required" }), /a name is required/);
  assert.match(translator("ja")("error.SERVER_UNREACHABLE"), /サーバー/);
});

test("the own tile marks what the others do not get: muted here, or blocked by the backend", () => {
  const s = emptyRoom("alice");
  assert.deepEqual(selfSends(s), { mic: "on", cam: "on" });
  applyEvent(s, { event: "blocked", audio: true, video: false });
  assert.deepEqual(selfSends(s), { mic: "blocked", cam: "on" });
  applyEvent(s, { event: "local-mute", audio: true });
  assert.deepEqual(selfSends(s), { mic: "off", cam: "on" }, "muted here is what the user did");
  applyEvent(s, { event: "blocked", audio: false, video: true });
  applyEvent(s, { event: "local-mute", audio: false });
  assert.deepEqual(selfSends(s), { mic: "on", cam: "blocked" });
  applyEvent(s, { event: "blocked", audio: false, video: false });
  assert.deepEqual(selfSends(s), { mic: "on", cam: "on" });
  for (const lang of ["en", "ja", "ko"]) assert.ok(MESSAGES[lang].micBlocked && MESSAGES[lang].camBlocked, lang);
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

test("speaker view puts the pinned, else the speaking, else the first on the stage", () => {
  const order = ["bob", "carol"];
  assert.deepEqual(stageLayout(order, { view: "grid", pinned: null, speaker: "bob" }), { main: null, strip: ["local", "bob", "carol"] });
  assert.deepEqual(stageLayout(order, { view: "speaker", pinned: null, speaker: "carol" }), { main: "carol", strip: ["local", "bob"] });
  assert.equal(stageLayout(order, { view: "speaker", pinned: null, speaker: null }).main, "bob");
  // A pin wins in either view, until its user leaves.
  assert.equal(stageLayout(order, { view: "grid", pinned: "local", speaker: "carol" }).main, "local");
  assert.equal(stageLayout(["carol"], { view: "speaker", pinned: "bob", speaker: null }).main, "carol");
  assert.equal(stageLayout([], { view: "speaker", pinned: null, speaker: null }).main, "local");
});

test("a shared screen is its own stream: its events leave the camera's state alone", () => {
  const s = emptyRoom("me");
  applyEvent(s, { event: "peer-join", userId: "bob", role: "anchor" });
  applyEvent(s, { event: "stream-added", userId: "bob", audio: true, video: true });
  applyEvent(s, { event: "stream-subscribed", userId: "bob" });
  applyEvent(s, { event: "stream-added", userId: "bob", streamType: "sub", audio: false, video: true });
  assert.deepEqual(s.screens.bob, { userId: "bob", subscribed: false });
  applyEvent(s, { event: "stream-subscribed", userId: "bob", streamType: "sub" });
  applyEvent(s, { event: "stream-updated", userId: "bob", streamType: "sub", audioMuted: true, videoMuted: true });
  assert.equal(s.screens.bob.subscribed, true);
  assert.equal(s.peers.bob.videoMuted, false, "the screen's update is not the camera's");
  assert.deepEqual(screenTiles(s), ["bob.sub"]);
  // Stopping the share ends the screen only.
  applyEvent(s, { event: "stream-removed", userId: "bob", streamType: "sub" });
  assert.deepEqual(s.screens, {});
  assert.equal(s.peers.bob.hasStream, true);
  assert.equal(s.peers.bob.subscribed, true);
  // A leave ends both.
  applyEvent(s, { event: "stream-added", userId: "bob", streamType: "sub", audio: false, video: true });
  applyEvent(s, { event: "peer-leave", userId: "bob", reason: "left" });
  assert.deepEqual(s.screens, {});
  // The own share, as the app reports it.
  applyEvent(s, { event: "share-started", source: "window:42" });
  assert.equal(s.sharing, "window:42");
  applyEvent(s, { event: "share-stopped" });
  assert.equal(s.sharing, null);
  applyEvent(s, { event: "share-started", source: "screen" });
  applyEvent(s, { event: "client-banned", reason: "removed-by-admin" });
  assert.equal(s.sharing, null);
});

test("a shared screen takes the stage in either view, unless something is pinned", () => {
  const order = ["bob", "carol"];
  const screens = ["carol.sub"];
  assert.deepEqual(stageLayout(order, { view: "grid", pinned: null, speaker: "bob", screens }), {
    main: "carol.sub",
    strip: ["local", "bob", "carol"],
  });
  assert.equal(stageLayout(order, { view: "speaker", pinned: null, speaker: "bob", screens }).main, "carol.sub");
  assert.equal(stageLayout(order, { view: "grid", pinned: "bob", speaker: null, screens }).main, "bob");
  // The screen ended: back to the view chosen.
  assert.equal(stageLayout(order, { view: "grid", pinned: null, speaker: null, screens: [] }).main, null);
});

test("chat: others' messages count as unread until the panel opens; own ones never do; the call keeps the last 500", () => {
  const s = emptyRoom("alice");
  applyEvent(s, { event: "chat", userId: "bob", text: "hi", sentAt: 1 });
  applyEvent(s, { event: "local-chat", text: "hello", sentAt: 2 });
  assert.equal(s.unread, 1);
  assert.deepEqual(s.chat.map((m) => [m.userId, m.mine]), [["bob", false], ["alice", true]]);
  applyEvent(s, { event: "local-chat-open", open: true });
  assert.equal(s.unread, 0);
  applyEvent(s, { event: "chat", userId: "bob", text: "seen", sentAt: 3 });
  assert.equal(s.unread, 0, "the panel is open");
  for (let i = 0; i < 600; i++) applyEvent(s, { event: "chat", userId: "bob", text: `m${i}`, sentAt: 4 + i });
  assert.equal(s.chat.length, 500);
  assert.equal(s.chat.at(-1).text, "m599");
});

test("frames convert to RGBA as BT.601 says, mirrored for the self-view", () => {
  // 2×2: one chroma sample; luma black, white, mid grey, and 128.
  const f = { width: 2, height: 2, y: Uint8Array.from([16, 235, 126, 128]), u: Uint8Array.of(128), v: Uint8Array.of(128) };
  const out = new Uint8ClampedArray(16);
  i420ToRgba(f, out);
  assert.deepEqual([...out], [0, 0, 0, 255, 255, 255, 255, 255, 128, 128, 128, 255, 130, 130, 130, 255]);
  i420ToRgba(f, out, true);
  assert.deepEqual([...out.slice(0, 8)], [255, 255, 255, 255, 0, 0, 0, 255], "mirrored");
  // Pure red in BT.601 limited range (Y 81, U 90, V 240).
  const red = { width: 2, height: 2, y: Uint8Array.from([81, 81, 81, 81]), u: Uint8Array.of(90), v: Uint8Array.of(240) };
  i420ToRgba(red, out);
  assert.ok(out[0] >= 250 && out[1] <= 3 && out[2] <= 3, `${out.slice(0, 3)}`);
  assert.equal(chooseRenderer(null), "2d");
  assert.equal(chooseRenderer("webgl"), "webgl");
});

test("the fast conversion gives every pixel the textbook BT.601 value", () => {
  // Per pixel, in floating point, rounded once: what the tables must match.
  const want = (yv, u, v) => {
    const yy = 1.1643 * (yv - 16);
    const c = (x) => Math.min(255, Math.max(0, Math.round(x)));
    return [c(yy + 1.5958 * (v - 128)), c(yy - 0.39173 * (u - 128) - 0.8129 * (v - 128)), c(yy + 2.017 * (u - 128)), 255];
  };
  let seed = 7;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) & 255;
  for (const [w, h] of [[6, 4], [348, 196], [5, 3]]) {
    const cw = (w + 1) >> 1;
    const ch = (h + 1) >> 1;
    const f = {
      width: w,
      height: h,
      y: Uint8Array.from({ length: w * h }, rnd),
      u: Uint8Array.from({ length: cw * ch }, rnd),
      v: Uint8Array.from({ length: cw * ch }, rnd),
    };
    for (const mirror of [false, true]) {
      const out = new Uint8ClampedArray(w * h * 4);
      i420ToRgba(f, out, mirror);
      for (let row = 0; row < h; row++) {
        for (let col = 0; col < w; col++) {
          const src = mirror ? w - 1 - col : col;
          const ci = (row >> 1) * cw + (src >> 1);
          const exp = want(f.y[row * w + src], f.u[ci], f.v[ci]);
          const got = [...out.slice((row * w + col) * 4, (row * w + col) * 4 + 4)];
          // The tables round each term to 1/65536: at most one step off.
          assert.ok(got.every((g, i) => Math.abs(g - exp[i]) <= 1), `${w}×${h} mirror=${mirror} at ${col},${row}: ${got} vs ${exp}`);
        }
      }
    }
  }
});
