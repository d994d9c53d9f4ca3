// Video tiles: one WebSocket per tile to the app's frame server, drawing
// I420 frames with WebGL (a YUV→RGB shader), or with a 2D canvas where
// WebGL is missing. Newest frame wins: frames are drawn as they arrive,
// at most once per display refresh.


/** Reads one frame message: I420 bytes followed by a 16-byte trailer. */
export function parseFrame(buffer) {
  const bytes = buffer.byteLength;
  if (bytes < 16) return null;
  const view = new DataView(buffer, bytes - 16);
  const magic = String.fromCharCode(
    view.getUint8(12), view.getUint8(13), view.getUint8(14), view.getUint8(15),
  );
  if (magic !== "KGF1") return null;
  const width = view.getUint32(0, true);
  const height = view.getUint32(4, true);
  const number = view.getUint32(8, true);
  const luma = width * height;
  if (luma * 3 / 2 !== bytes - 16) return null;
  return {
    width,
    height,
    number,
    y: new Uint8Array(buffer, 0, luma),
    u: new Uint8Array(buffer, luma, luma / 4),
    v: new Uint8Array(buffer, luma + luma / 4, luma / 4),
  };
}

const VERTEX = `
attribute vec2 pos;
uniform float mirror;
varying vec2 uv;
void main() {
  uv = vec2((pos.x * mirror + 1.0) / 2.0, (1.0 - pos.y) / 2.0);
  gl_Position = vec4(pos, 0.0, 1.0);
}`;

const FRAGMENT = `
precision mediump float;
varying vec2 uv;
uniform sampler2D ty, tu, tv;
void main() {
  float y = 1.1643 * (texture2D(ty, uv).r - 0.0625);
  float u = texture2D(tu, uv).r - 0.5;
  float v = texture2D(tv, uv).r - 0.5;
  gl_FragColor = vec4(y + 1.5958 * v, y - 0.39173 * u - 0.8129 * v, y + 2.017 * u, 1.0);
}`;

/** The frame's size fitted into `canvas`'s box in device pixels, at most the frame's. */
export function fitted(f, canvas) {
  const dpr = globalThis.devicePixelRatio || 1;
  const scale = Math.min(1, (canvas.clientWidth * dpr) / f.width, (canvas.clientHeight * dpr) / f.height);
  if (!(scale > 0)) return { width: f.width, height: f.height };
  return { width: Math.max(2, Math.round(f.width * scale)), height: Math.max(2, Math.round(f.height * scale)) };
}

function glRenderer(canvas) {
  const gl = canvas.getContext("webgl", { antialias: false, depth: false });
  if (!gl) return null;
  const shader = (type, src) => {
    const s = gl.createShader(type);
    gl.shaderSource(s, src);
    gl.compileShader(s);
    return s;
  };
  const prog = gl.createProgram();
  gl.attachShader(prog, shader(gl.VERTEX_SHADER, VERTEX));
  gl.attachShader(prog, shader(gl.FRAGMENT_SHADER, FRAGMENT));
  gl.linkProgram(prog);
  if (!gl.getProgramParameter(prog, gl.LINK_STATUS)) return null;
  gl.useProgram(prog);
  // A self-view is drawn mirrored, as a mirror shows a face (the canvas's
  // `mirror` class; drawn, not a CSS transform, which WebKit must composite).
  gl.uniform1f(gl.getUniformLocation(prog, "mirror"), canvas.classList.contains("mirror") ? -1 : 1);
  const buf = gl.createBuffer();
  gl.bindBuffer(gl.ARRAY_BUFFER, buf);
  gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 1, -1, -1, 1, 1, 1]), gl.STATIC_DRAW);
  const pos = gl.getAttribLocation(prog, "pos");
  gl.enableVertexAttribArray(pos);
  gl.vertexAttribPointer(pos, 2, gl.FLOAT, false, 0, 0);
  gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
  const textures = ["ty", "tu", "tv"].map((name, i) => {
    const t = gl.createTexture();
    gl.activeTexture(gl.TEXTURE0 + i);
    gl.bindTexture(gl.TEXTURE_2D, t);
    for (const p of [gl.TEXTURE_MIN_FILTER, gl.TEXTURE_MAG_FILTER]) {
      gl.texParameteri(gl.TEXTURE_2D, p, gl.LINEAR);
    }
    for (const p of [gl.TEXTURE_WRAP_S, gl.TEXTURE_WRAP_T]) {
      gl.texParameteri(gl.TEXTURE_2D, p, gl.CLAMP_TO_EDGE);
    }
    gl.uniform1i(gl.getUniformLocation(prog, name), i);
    return t;
  });
  return (f) => {
    // Shade only the pixels shown: the drawing buffer is the frame fitted
    // into the tile's box (never larger than the frame); CSS keeps the
    // aspect. Under software GL this is most of the drawing cost.
    const { width, height } = fitted(f, canvas);
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    gl.viewport(0, 0, width, height);
    const planes = [
      [f.y, f.width, f.height],
      [f.u, f.width / 2, f.height / 2],
      [f.v, f.width / 2, f.height / 2],
    ];
    planes.forEach(([data, w, h], i) => {
      gl.activeTexture(gl.TEXTURE0 + i);
      gl.bindTexture(gl.TEXTURE_2D, textures[i]);
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.LUMINANCE, w, h, 0, gl.LUMINANCE, gl.UNSIGNED_BYTE, data);
    });
    gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
  };
}

// BT.601 limited range in 16.16 fixed point, as tables: a frame costs a
// few table reads and adds per pixel.
const LUT = (() => {
  const y = new Int32Array(256);
  const rv = new Int32Array(256);
  const gu = new Int32Array(256);
  const gv = new Int32Array(256);
  const bu = new Int32Array(256);
  for (let i = 0; i < 256; i++) {
    y[i] = Math.round(1.1643 * (i - 16) * 65536);
    rv[i] = Math.round(1.5958 * (i - 128) * 65536);
    gu[i] = Math.round(-0.39173 * (i - 128) * 65536);
    gv[i] = Math.round(-0.8129 * (i - 128) * 65536);
    bu[i] = Math.round(2.017 * (i - 128) * 65536);
  }
  return { y, rv, gu, gv, bu };
})();

// Rounding and the limited range's offset folded into the luma table,
// and clamping as a table lookup: no branches per pixel.
const CLAMP_BASE = 384;
const CLAMP = (() => {
  const t = new Uint8Array(1024);
  for (let i = 0; i < t.length; i++) t[i] = Math.min(255, Math.max(0, i - CLAMP_BASE));
  return t;
})();
const LUMA = LUT.y.map((v) => v + 32768 + (CLAMP_BASE << 16));

/**
 * I420 to RGBA (`out`, 4 bytes per pixel), mirrored left to right if
 * `mirror`. Each chroma sample's terms are worked out once for its two
 * pixels and each pixel is one 32-bit store (little-endian, as every
 * platform the app runs on). Exported for the UI tests.
 */
export function i420ToRgba(f, out, mirror = false) {
  const { rv, gu, gv, bu } = LUT;
  const w = f.width;
  const cw = (w + 1) >> 1;
  const px = new Uint32Array(out.buffer, out.byteOffset, w * f.height);
  const { y: Y, u: U, v: V } = f;
  const step = mirror ? -1 : 1;
  const rgba = (yy, r, g, b) =>
    CLAMP[(yy + r) >> 16] | (CLAMP[(yy + g) >> 16] << 8) | (CLAMP[(yy + b) >> 16] << 16) | 0xff000000;
  for (let row = 0; row < f.height; row++) {
    const yRow = row * w;
    const cRow = (row >> 1) * cw;
    let o = mirror ? yRow + w - 1 : yRow;
    for (let c = 0; c < w; c += 2) {
      const ci = cRow + (c >> 1);
      const u = U[ci];
      const v = V[ci];
      const r = rv[v];
      const g = gu[u] + gv[v];
      const b = bu[u];
      px[o] = rgba(LUMA[Y[yRow + c]], r, g, b);
      o += step;
      if (c + 1 < w) {
        px[o] = rgba(LUMA[Y[yRow + c + 1]], r, g, b);
        o += step;
      }
    }
  }
}

function canvasRenderer(canvas) {
  const ctx = canvas.getContext("2d", { alpha: false });
  let image = null;
  return (f) => {
    if (!image || image.width !== f.width || image.height !== f.height) {
      canvas.width = f.width;
      canvas.height = f.height;
      image = ctx.createImageData(f.width, f.height);
    }
    i420ToRgba(f, image.data, canvas.classList.contains("mirror"));
    ctx.putImageData(image, 0, 0);
  };
}

/**
 * How tiles are drawn: a 2D canvas unless `kaigi.renderer` says `webgl`.
 * The app sends each tile frames no larger than it shows them (a camera
 * stream is at most 640×480), so converting them is cheap; WebGL under
 * software rendering (llvmpipe: no GPU, as under Xvfb) cost more CPU and
 * about 40 MiB more memory in the web process (BENCHMARKS.md).
 */
export function chooseRenderer(saved) {
  return saved === "webgl" ? "webgl" : "2d";
}

/**
 * The ways frames reach the window, each `(endpoint, tile, size, onFrame,
 * onEnd) → {stop(), resize(size)}`: `size` is the tile's box in device
 * pixels (`{w, h}`; the app scales frames down to it), `onFrame(ArrayBuffer)`
 * per frame (I420 + trailer), `onEnd()` once when the tile ends or the path
 * breaks.
 *  - `websocket`: the app's loopback frame server, a socket per tile.
 *  - `ipc`: the `next_frame` command, whose raw-bytes response is the frame.
 *  - `channel`: a Tauri channel the app pushes raw frames through.
 * (`ipc` and `channel` lost; their commands exist only in builds with the
 * `ipc-transports` feature, which the tile benchmark makes.)
 * BENCHMARKS.md compares them; `off` draws nothing (the benchmark's baseline).
 */
const TRANSPORTS = {
  websocket(endpoint, tile, size, onFrame, onEnd) {
    const url = `${endpoint.url}/${encodeURIComponent(tile)}?token=${endpoint.token}&w=${size.w}&h=${size.h}`;
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    ws.onmessage = (m) => onFrame(m.data);
    ws.onclose = () => onEnd();
    return {
      stop: () => ws.close(),
      resize: (s) => ws.readyState === WebSocket.OPEN && ws.send(`${s.w}x${s.h}`),
    };
  },
  ipc(endpoint, tile, size, onFrame, onEnd) {
    const invoke = window.__TAURI__.core.invoke;
    let stopped = false;
    let view = null;
    (async () => {
      try {
        view = await invoke("open_view", { tile, width: size.w, height: size.h });
        while (!stopped) {
          const buf = await invoke("next_frame", { view });
          if (!buf || buf.byteLength === 0) break; // the tile ended
          onFrame(buf);
        }
      } catch (e) {
        console.warn("frames over the IPC:", e);
      }
      if (!stopped) onEnd();
    })();
    const stop = () => {
      stopped = true;
      if (view !== null) invoke("close_view", { view }).catch(() => {});
    };
    // A new size: a new view (the player reconnects after onEnd).
    return { stop, resize: () => (stop(), onEnd()) };
  },
  channel(endpoint, tile, size, onFrame, onEnd) {
    const { invoke, Channel } = window.__TAURI__.core;
    let stopped = false;
    let view = null;
    const frames = new Channel();
    frames.onmessage = (buf) => {
      if (stopped) return;
      if (!buf || buf.byteLength === 0) onEnd();
      else onFrame(buf);
    };
    invoke("watch_tile", { tile, frames, width: size.w, height: size.h })
      .then((id) => {
        view = id;
        if (stopped) invoke("close_view", { view }).catch(() => {});
      })
      .catch(() => !stopped && onEnd());
    const stop = () => {
      stopped = true;
      if (view !== null) invoke("close_view", { view }).catch(() => {});
    };
    return { stop, resize: () => (stop(), onEnd()) };
  },
  off() {
    return { stop() {}, resize() {} };
  },
};

/** The default path: the fastest measured (BENCHMARKS.md, "Video into the window"). */
export const DEFAULT_TRANSPORT = "websocket";

/** The path in use: `localStorage["kaigi.transport"]` if it names one. */
export function currentTransport() {
  const chosen = globalThis.localStorage && localStorage.getItem("kaigi.transport");
  return chosen in TRANSPORTS ? chosen : DEFAULT_TRANSPORT;
}

/**
 * Tiles draw together, in one animation frame, at most once per
 * `PAINT_GAP_MS`. WebKit repaints the page (without a GPU: copies it into
 * shared memory for the app to draw) once per animation frame in which
 * anything changed, and five 30 fps tiles that each drew in their own
 * animation frame changed something in nearly every one of 60 a second.
 * Sources send at most 30 fps, so a 30 Hz page shows them all.
 */
export const PAINT_GAP_MS = 30;
const waiting = new Set();
let paintScheduled = false;
let lastPaint = -Infinity;
function paintTick(now) {
  if (now - lastPaint < PAINT_GAP_MS) {
    requestAnimationFrame(paintTick);
    return;
  }
  paintScheduled = false;
  lastPaint = now;
  const painters = [...waiting];
  waiting.clear();
  for (const p of painters) p();
}
function schedulePaint(painter) {
  waiting.add(painter);
  if (!paintScheduled) {
    paintScheduled = true;
    requestAnimationFrame(paintTick);
  }
}

/**
 * Plays tile `tile` (`local` or a user id) into `canvas` until `stop()`.
 * Reconnects while the tile is wanted (the stream may start later).
 * `canvas.dataset.fps` and `.frames` say what was drawn, `.renderer` and
 * `.transport` how.
 */
export function playTile(endpoint, tile, canvas, transport = currentTransport()) {
  const renderer = chooseRenderer(globalThis.localStorage?.getItem("kaigi.renderer"));
  const gl = renderer === "webgl" ? glRenderer(canvas) : null;
  const draw = gl || canvasRenderer(canvas);
  canvas.dataset.renderer = gl ? "webgl" : "2d";
  canvas.dataset.transport = transport;
  let stopped = false;
  let pending = null;
  let scheduled = false;
  let frames = 0;
  let windowStart = performance.now();
  let windowFrames = 0;
  const paint = () => {
    scheduled = false;
    if (!pending || stopped) return;
    const f = parseFrame(pending);
    pending = null;
    if (!f) return;
    draw(f);
    const size = `${f.width}x${f.height}`;
    if (canvas.dataset.size !== size) {
      canvas.dataset.size = size;
      canvas.dispatchEvent(new CustomEvent("framesize", { detail: { width: f.width, height: f.height } }));
    }
    frames += 1;
    windowFrames += 1;
    const now = performance.now();
    if (now - windowStart >= 1000) {
      canvas.dataset.fps = String(Math.round((windowFrames * 1000) / (now - windowStart)));
      windowStart = now;
      windowFrames = 0;
    }
    canvas.dataset.frames = String(frames);
    canvas.classList.add("live");
  };
  const onFrame = (buf) => {
    pending = buf; // newest wins
    if (!scheduled) {
      scheduled = true;
      schedulePaint(paint);
    }
  };
  // The tile's box in device pixels: frames are sent at most this big.
  const box = () => {
    const dpr = globalThis.devicePixelRatio || 1;
    return { w: Math.round(canvas.clientWidth * dpr), h: Math.round(canvas.clientHeight * dpr) };
  };
  let sent = box();
  const connect = () => {
    if (stopped) return;
    let ended = false;
    sent = box();
    path = TRANSPORTS[transport](endpoint, tile, sent, onFrame, () => {
      if (ended) return;
      ended = true;
      canvas.classList.remove("live");
      if (!stopped) setTimeout(connect, resizing ? 0 : 500);
      resizing = false;
    });
  };
  let path = null;
  let resizing = false;
  const resized = new ResizeObserver(() => {
    const now = box();
    if (!path || (now.w === sent.w && now.h === sent.h)) return;
    sent = now;
    resizing = true;
    path.resize(now);
  });
  resized.observe(canvas);
  connect();
  return {
    stop() {
      stopped = true;
      resized.disconnect();
      if (path) path.stop();
    },
  };
}
