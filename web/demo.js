// The draw-a-digit page: record strokes, preprocess them like MNIST (preprocess.js), and classify the digit on this
// device (ONNX Runtime Web) or on the server (KServe v2), showing the probabilities and the latency of each path.
//
// Page options (query string): ?model=mnist (a model the server serves), ?threads=1 (ONNX Runtime Web's WebAssembly
// threads: more than 1 needs the cross-origin isolation headers the server sends), ?reject=0.0 (below this confidence
// the answer is "not a digit?"), ?key=... (the server's API key: `make demo HOST=0.0.0.0` prints the page's address with
// it; the page sends it with every request to the server and keeps it in the address, so a reload still works).
// window.demo is the page's API for tests and the notebook (Playwright): the same functions the buttons use.
"use strict";

const params = new URLSearchParams(location.search);
const state = {
  model: params.get("model") || "mnist",
  threads: Math.max(1, Number(params.get("threads") || 1)),
  reject: Number(params.get("reject") || 0),
  path: "device",
  strokes: [],
  drawing: false,
  session: null, // ONNX Runtime Web session, or null if the runtime or model could not load
  deviceError: null,
  meta: null, // the server's metadata for the model: input name and shape
  load: {}, // how long loading took, in ms, and how many bytes
  lastResult: null,
};
const apiKey = params.get("key"); // null on 127.0.0.1, where the server needs no key
const $ = (id) => document.getElementById(id);
const pad = $("pad"), ink = pad.getContext("2d");

// ----------------------------------------------------------------------------------------------- the two paths

// a request to the server: with the API key when the page has one (the model file and every /v2 call need it then)
function serverFetch(url, options = {}) {
  return fetch(url, apiKey ? { ...options, headers: { ...options.headers, "X-API-Key": apiKey } } : options);
}

function refusal(response, doc, text) {
  const hint = response.status !== 401 ? "" : apiKey ? " (the key in this address is not the server's: open the address the demo printed)"
    : " (open the address the demo printed, with its ?key=...)";
  return `HTTP ${response.status}: ${doc?.error || text.slice(0, 200)}${hint}`;
}

async function serverJson(url, options) {
  const response = await serverFetch(url, options);
  const text = await response.text();
  let doc;
  try { doc = JSON.parse(text); } catch { throw new Error(`${url}: HTTP ${response.status}, not JSON`); }
  if (!response.ok) throw new Error(`${url}: ${refusal(response, doc, text)}`);
  return { doc, response };
}

function inputShape(batch) {
  const shape = state.meta.inputs[0].shape.slice();
  shape[0] = batch; // -1 in the metadata: any batch size
  return shape;
}

async function loadDevice(model) {
  if (typeof ort === "undefined") throw new Error("ONNX Runtime Web did not load (run `make setup` with npm installed); the server path still works");
  ort.env.wasm.wasmPaths = new URL("vendor/", location.href).href; // served locally: the page works offline
  ort.env.wasm.numThreads = state.threads; // fixed when the runtime starts: another thread count needs a page reload
  const t0 = performance.now();
  const response = await serverFetch(`models/${encodeURIComponent(model)}/model.onnx`);
  if (!response.ok) {
    const text = await response.text();
    let doc = null;
    try { doc = JSON.parse(text); } catch { /* not JSON: the status says enough */ }
    throw new Error(refusal(response, doc, text));
  }
  const bytes = new Uint8Array(await response.arrayBuffer());
  const t1 = performance.now();
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
  const t2 = performance.now();
  state.session = session;
  await inferDevice(new Float32Array(28 * 28)); // the first run allocates: measured apart from the steady state
  const t3 = performance.now();
  Object.assign(state.load, { modelBytes: bytes.length, fetchMs: t1 - t0, sessionMs: t2 - t1, firstRunMs: t3 - t2,
                              modelVersion: Number(response.headers.get("X-Model-Version")) });
}

async function inferDevice(x) {
  const input = new ort.Tensor("float32", x, inputShape(x.length / 784));
  const started = performance.now();
  const outputs = await state.session.run({ [state.session.inputNames[0]]: input });
  const ms = performance.now() - started;
  return { logits: outputs[state.session.outputNames[0]].data, ms };
}

async function inferServer(x) {
  const body = JSON.stringify({ inputs: [{ name: state.meta.inputs[0].name, shape: inputShape(x.length / 784),
                                           datatype: "FP32", data: Array.from(x) }] });
  const started = performance.now();
  const { doc } = await serverJson(`/v2/models/${encodeURIComponent(state.model)}/infer`,
                                   { method: "POST", headers: { "Content-Type": "application/json" }, body });
  const ms = performance.now() - started; // the whole round trip: JSON encoding excluded, decoding included
  return { logits: Float32Array.from(doc.outputs[0].data), ms, version: Number(doc.model_version) };
}

const infer = { device: inferDevice, server: inferServer };

function softmax(logits) {
  const top = Math.max(...logits);
  const e = Array.from(logits, (v) => Math.exp(v - top));
  const total = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / total);
}

// ----------------------------------------------------------------------------------------------- classify and show

async function classify(path = state.path) {
  const x = Preprocess.strokesToImage(state.strokes);
  drawPreview(x);
  if (!x.some((v) => v > 0)) { showAnswer(null); return null; }
  if (!state.meta) throw new Error("the page has not loaded the model's description from the server");
  if (path === "device" && !state.session) throw new Error(state.deviceError || "the model is not loaded yet");
  const { logits, ms, version } = await infer[path](x);
  const probs = softmax(logits);
  const digit = probs.indexOf(Math.max(...probs));
  const result = { path, model: state.model, version: version ?? state.load.modelVersion, digit, confidence: probs[digit], rejected: probs[digit] < state.reject,
                   probs, logits: Array.from(logits), ms, input: Array.from(x), strokes: structuredClone(state.strokes) };
  state.lastResult = result;
  showAnswer(result);
  return result;
}

function showAnswer(result) {
  $("answer").textContent = !result ? "–" : result.rejected ? "not a digit?" : String(result.digit);
  $("answered-by").textContent = !result ? "" :
    `${result.path === "device" ? "this device" : "the server"} · ${result.model} v${result.version} · ` +
    `confidence ${(100 * result.confidence).toFixed(1)} %`;
  const probs = result ? result.probs : new Array(10).fill(0);
  $("bars").replaceChildren(...probs.map((p, d) => {
    const row = document.createElement("div");
    row.className = "bar" + (result && d === result.digit ? " top" : "");
    row.innerHTML = `<span class="digit">${d}</span><span class="track"><span class="fill" style="display:block;width:${(100 * p).toFixed(1)}%"></span></span><span class="value">${(100 * p).toFixed(1)} %</span>`;
    return row;
  }));
  if (result) $(`latency-${result.path}`).textContent = `${result.ms.toFixed(2)} ms`;
}

function drawPreview(x) {
  const small = new ImageData(28, 28);
  x.forEach((v, i) => { small.data.set([255 * v, 255 * v, 255 * v, 255], 4 * i); });
  const scratch = new OffscreenCanvas(28, 28);
  scratch.getContext("2d").putImageData(small, 0, 0);
  const preview = $("preview").getContext("2d");
  preview.imageSmoothingEnabled = false;
  preview.drawImage(scratch, 0, 0, 112, 112);
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = "status" + (isError ? " error" : "");
}

// ----------------------------------------------------------------------------------------------- drawing

function canvasPoint(event) {
  const box = pad.getBoundingClientRect(); // the canvas may be shown at another size: strokes are in canvas pixels
  const size = Preprocess.CANVAS_SIZE;
  const clamp = (v) => Math.min(size, Math.max(0, v)); // the pointer stays captured off the canvas: ink stops at its edge
  return [clamp((event.clientX - box.left) * size / box.width), clamp((event.clientY - box.top) * size / box.height)];
}

function paintStroke(points) {
  ink.strokeStyle = ink.fillStyle = "#fff";
  ink.lineWidth = 2 * Preprocess.PEN_RADIUS;
  ink.lineCap = ink.lineJoin = "round";
  ink.beginPath();
  ink.moveTo(...points[0]);
  points.slice(1).forEach((p) => ink.lineTo(...p));
  if (points.length === 1) ink.lineTo(...points[0]); // a dot: a round cap on a zero-length line
  ink.stroke();
}

pad.addEventListener("pointerdown", (event) => {
  pad.setPointerCapture(event.pointerId);
  state.drawing = true;
  state.strokes.push([canvasPoint(event)]);
  paintStroke(state.strokes.at(-1));
});
pad.addEventListener("pointermove", (event) => {
  if (!state.drawing) return;
  const stroke = state.strokes.at(-1);
  stroke.push(canvasPoint(event));
  paintStroke(stroke.slice(-2));
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => {
    if (!state.drawing) return;
    state.drawing = false;
    classify().catch((error) => setStatus(error.message, true));
  });
}

function clear() {
  state.strokes = [];
  state.lastResult = null;
  ink.clearRect(0, 0, pad.width, pad.height);
  drawPreview(new Float32Array(784));
  showAnswer(null);
}

$("clear").addEventListener("click", clear);
for (const radio of document.querySelectorAll("input[name=path]")) {
  radio.addEventListener("change", () => {
    state.path = radio.value;
    if (state.strokes.length) classify().catch((error) => setStatus(error.message, true));
  });
}
$("model").addEventListener("change", () => { // another model: reload with it (the runtime keeps its threads per page)
  params.set("model", $("model").value);
  location.search = params.toString();
});

// ----------------------------------------------------------------------------------------------- start

async function start() {
  try {
    await describeModel();
  } catch (error) { // no server path and no model: say so, and stay usable for another model
    setStatus(`The server could not describe model '${state.model}': ${error.message}`, true);
    throw error;
  }
  await loadDeviceOrFallBack();
  clear();
}

async function describeModel() {
  const { doc: models } = await serverJson("/v2/repository/index", { method: "POST" });
  const ready = [...new Set(models.filter((m) => m.state === "READY").map((m) => m.name))];
  if (!ready.length) throw new Error("no model is ready on the server");
  if (!ready.includes(state.model)) {
    setStatus(`Model '${state.model}' is not served here; showing '${ready[0]}' instead.`, true);
    state.model = ready[0];
  }
  $("model").replaceChildren(...ready.map((name) => new Option(name, name, false, name === state.model)));
  state.meta = (await serverJson(`/v2/models/${encodeURIComponent(state.model)}`)).doc;
  $("notes-server").textContent = `KServe v2, model ${state.model} version ${state.meta.versions.at(-1)}`;
}

async function loadDeviceOrFallBack() {
  try {
    await loadDevice(state.model);
    $("notes-device").textContent = `ONNX Runtime Web ${ort.env.versions.web}, WebAssembly, ${state.threads} thread(s)` +
      `, ${(state.load.modelBytes / 1024).toFixed(0)} kB model loaded in ${(state.load.fetchMs + state.load.sessionMs).toFixed(0)} ms`;
    setStatus("Ready: draw a digit.");
  } catch (error) {
    state.deviceError = error.message;
    $("notes-device").textContent = "unavailable";
    document.querySelector("input[value=server]").click();
    setStatus(`On-device path unavailable: ${error.message}`, true);
  }
}

function toBase64(array) {
  const bytes = new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

function fromBase64(text) {
  return new Float32Array(Uint8Array.from(atob(text), (c) => c.charCodeAt(0)).buffer);
}

window.demo = {
  ready: start(), // resolves when the page can answer (the device path may still be unavailable: see info())
  info: () => ({ model: state.model, threads: state.threads, crossOriginIsolated: self.crossOriginIsolated,
                 runtime: typeof ort === "undefined" ? null : ort.env.versions.web, deviceError: state.deviceError,
                 load: state.load, path: state.path }),
  strokes: () => structuredClone(state.strokes),
  lastResult: () => state.lastResult,
  clear,
  classify,
  setReject: (threshold) => { state.reject = threshold; },
  // n images (base64 of float32, n x 784) classified one call each on `path`: logits (base64) and ms per call
  async classifyImages(base64, path = "device") {
    const images = fromBase64(base64), n = images.length / 784, logits = new Float32Array(n * 10), ms = [];
    for (let i = 0; i < n; i++) {
      const out = await infer[path](images.subarray(i * 784, (i + 1) * 784));
      logits.set(out.logits, i * 10);
      ms.push(out.ms);
    }
    return { logits: toBase64(logits), ms };
  },
  // the resources the page downloaded, with their sizes (the Resource Timing API)
  downloads: () => performance.getEntriesByType("resource").map((r) => ({ url: r.name, bytes: r.encodedBodySize,
                                                                          ms: r.duration })),
};
