// The explorer page: plain JavaScript, no libraries, nothing fetched from outside this server.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { runs: [], id: null, card: null, answer: null, source: null, busy: false, again: false,
                lastEpoch: 0, history: [], poll: null, pending: null };

// ---------- helpers ----------

async function api(path, options = {}) {
  const res = await fetch(path, options);
  const text = await res.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
  if (!res.ok) {
    const detail = body && body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail))
                                       : `${res.status} ${res.statusText}`;
    const err = new Error(detail);
    err.status = res.status;
    throw err;
  }
  return body;
}

function showMessage(text) {
  const box = $("#message");
  box.textContent = text;
  box.hidden = !text;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function pct(p) { return (100 * p).toFixed(p >= 0.9995 || p < 0.001 ? 1 : 2) + "%"; }
function fmt(v, digits = 4) { return v === null || v === undefined ? "-" : Number(v).toPrecision(digits); }
function decode64(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

// A perceptual dark-to-bright colour scale (black, purple, red, orange, pale yellow) as a 256-entry table.
function makeLut(stops) {
  const lut = new Uint8ClampedArray(256 * 3);
  for (let i = 0; i < 256; i++) {
    const t = i / 255 * (stops.length - 1);
    const j = Math.min(Math.floor(t), stops.length - 2);
    const f = t - j;
    for (let c = 0; c < 3; c++) lut[3 * i + c] = stops[j][c] + f * (stops[j + 1][c] - stops[j][c]);
  }
  return lut;
}
const MAP_LUT = makeLut([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]]);
const HEAT_LUT = makeLut([[0, 0, 255], [0, 255, 255], [255, 255, 0], [255, 0, 0]]);

// ---------- models ----------

async function loadRuns() {
  state.runs = await api("/api/runs");
  const select = $("#model-select");
  select.replaceChildren();
  for (const r of state.runs) {
    const acc = r.results ? `, test top-1 ${pct(r.results.test_top1_accuracy)}` : "";
    select.append(el("option", { value: r.id, text: `${r.id} (${r.model || "?"}${r.data ? " on " + r.data : ""}${acc})` }));
  }
  const first = state.runs.find((r) => r.status !== "training") || state.runs[0];
  if (first) { select.value = first.id; await selectModel(first.id); }
  renderCompare();
}

async function selectModel(id) {
  state.id = id;
  state.answer = null;
  state.source = null;
  state.lastEpoch = 0;
  state.history = [];
  state.card = null;
  $("#model-status").textContent = "loading...";
  showMessage("");
  clearResults();
  clearDrawing();
  let card;
  try {
    card = await api(`/api/runs/${encodeURIComponent(id)}`);
  } catch (e) { showMessage(e.message); return; }
  state.card = card;
  $("#model-status").textContent = card.status;
  renderCard(card);
  renderKernels(card);
  renderSummary(card);
  renderClassChoice(card);
  if (card.embed_dim) $("#embed-dim").textContent = String(card.embed_dim);
  await pollMetrics();
  if (state.poll) clearInterval(state.poll);
  state.poll = setInterval(pollMetrics, 2000);
  if (!card.loaded) showMessage(`${id} has no checkpoint yet: its curves update below while it trains.`);
  else if (state.pending) { const src = state.pending; state.pending = null; predict(src); }
  await renderTestset(card);
}

function renderCard(card) {
  const dl = $("#card");
  dl.replaceChildren();
  const rows = [["model", card.model], ["status", card.status], ["data", card.data || "none (weights file)"],
    ["recipe", card.recipe || "-"]];
  const c = card.config || {};
  if (c.epochs) {
    const parts = [`${c.epochs} epochs`];
    if (c.batch_size) parts.push(`batch ${c.batch_size}`);
    if (c.optimizer) parts.push(`${c.optimizer} lr ${c.lr}`);
    if (c.schedule) parts.push(`${c.schedule} schedule`);
    rows.push(["training", parts.join(", ")]);
  }
  if (card.input) rows.push(["input", `${card.input.crop}x${card.input.crop}, ${card.input.channels === 1 ? "grey" : "RGB"}` +
    ` (images stored at ${card.input.base_size})`]);
  if (card.results) {
    const r = card.results;
    rows.push(["test top-1", `${pct(r.test_top1_accuracy)} (error ${pct(r.test_top1_error)})`]);
    rows.push([`test top-${r.topk || 5}`, `${pct(r.test_top5_accuracy)} (error ${pct(r.test_top5_error)})`]);
    rows.push(["test images", `${r.test_images} (${r.test_split} split, ${r.tta} view)`]);
  }
  if (card.summary) rows.push(["parameters", card.summary.total_params.toLocaleString("en")]);
  for (const [k, v] of rows) dl.append(el("dt", { text: k }), el("dd", { text: String(v) }));
}

function renderKernels(card) {
  const box = $("#kernels");
  box.replaceChildren();
  if (!card.conv1) return;
  for (const t of card.conv1) {
    const chroma = t.mean_chroma === null ? "grey input" :
      `mean chroma ${t.mean_chroma.toFixed(2)}, ${t.colour_kernels} of ${t.kernels} kernels mostly colour`;
    const label = card.conv1.length > 1 ? `tower ${t.tower}: kernels ${t.first + 1}-${t.first + t.kernels}` : "all kernels";
    box.append(el("figure", {}, el("img", { src: `/api/runs/${encodeURIComponent(card.id)}/conv1/${t.tower}.png`,
      alt: `conv1 kernels, tower ${t.tower}` }), el("figcaption", { text: `${label}; ${chroma}` })));
  }
}

function renderSummary(card) {
  const table = $("#summary");
  table.replaceChildren();
  if (!card.summary) return;
  table.append(el("tr", {}, el("th", { text: "layer" }), el("th", { text: "type" }), el("th", { text: "output" }),
    el("th", { class: "num", text: "parameters" })));
  for (const r of card.summary.layers) {
    if (!r.params && !["MaxPool2d", "LocalResponseNorm", "AvgPool2d"].includes(r.kind)) continue;
    table.append(el("tr", {}, el("td", { text: r.name.split(".").pop() }), el("td", { text: r.kind }),
      el("td", { text: r.output_text }), el("td", { class: "num", text: r.params ? r.params.toLocaleString("en") : "-" })));
  }
}

function renderClassChoice(card) {
  const select = $("#cam-class");
  select.replaceChildren(el("option", { value: "", text: "the top class" }));
  (card.class_names || []).forEach((n, i) => select.append(el("option", { value: String(i), text: n })));
}

async function renderTestset(card) {
  const box = $("#testset");
  box.replaceChildren();
  if (!card.loaded || !card.test_images) {
    box.append(el("p", { class: "hint", text: "This model came without its dataset: no test images to pick." }));
    return;
  }
  try {
    const items = await api(`/api/runs/${encodeURIComponent(card.id)}/testset?limit=40`);
    for (const it of items) {
      const b = el("button", { title: `test image ${it.index}: ${it.name}`, "data-index": String(it.index) },
        el("img", { src: it.url, alt: it.name, loading: "lazy" }), el("span", { text: it.name }));
      b.addEventListener("click", () => predict({ test: it.index, label: it.name }));
      box.append(b);
    }
  } catch (e) { box.append(el("p", { class: "hint", text: e.message })); }
}

async function renderSamples() {
  const items = await api("/api/gallery");
  const box = $("#samples");
  for (const it of items) {
    const b = el("button", { title: it.name }, el("img", { src: it.url, alt: it.name }), el("span", { text: it.name }));
    b.addEventListener("click", () => predict({ sample: it.name }));
    box.append(b);
  }
}

// ---------- predictions ----------

async function predict(source) {
  if (!state.card) { state.pending = source; return; }  // the model is still loading: answer once it is
  if (!state.card.loaded) { showMessage(`${state.id} has no checkpoint yet: nothing to predict with.`); return; }
  state.source = source;
  if (state.busy) { state.again = true; return; }  // keep only the newest drawing
  state.busy = true;
  try {
    do {
      state.again = false;
      const src = state.source;
      const q = new URLSearchParams({ k: "5", neighbours: "8" });
      const target = $("#cam-class").value;
      if (target !== "") q.set("target", target);
      const options = { method: "POST" };
      if (src.test !== undefined) q.set("test", String(src.test));
      else if (src.sample !== undefined) q.set("sample", src.sample);
      else {
        options.body = src.blob;
        options.headers = { "Content-Type": src.blob.type || "application/octet-stream",
                            "X-Filename": encodeURIComponent(src.name || "upload") };
      }
      try {
        const answer = await api(`/api/runs/${encodeURIComponent(state.id)}/predict?${q}`, options);
        if (src === state.source || !state.again) { showMessage(""); render(answer, src); }
      } catch (e) {
        showMessage(e.status === 413 ? `Too large: ${e.message}` : e.message);
      }
    } while (state.again);
  } finally { state.busy = false; }
}

function clearResults() {
  $("#bars").replaceChildren();
  $("#neighbours").replaceChildren();
  $("#layers").replaceChildren();
  $("#input-info").textContent = "";
  $("#timing").textContent = "";
  for (const id of ["#seen", "#cam"]) { const c = $(id); c.getContext("2d").clearRect(0, 0, c.width, c.height); }
}

function render(a, src) {
  state.answer = a;
  const info = [];
  if (a.input) {
    if (a.input.width) info.push(`${a.input.format ? a.input.format + ", " : ""}${a.input.width}x${a.input.height} px`);
    if (a.input.source) info.push(a.input.source);
    if (a.input.note) info.push(a.input.note);
  }
  if (src && src.label) info.push(`true class ${src.label}`);
  $("#input-info").textContent = info.length ? `(${info.join("; ")})` : "";
  $("#timing").textContent = `(answered in ${Math.round(a.ms)} ms)`;
  renderSeen(a);
  renderBars(a.top);
  renderNeighbours(a);
  renderLayers(a.layers);
}

function renderSeen(a) {
  const img = new Image();
  img.onload = () => {
    const c = $("#seen"), ctx = c.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.clearRect(0, 0, c.width, c.height);
    ctx.drawImage(img, 0, 0, c.width, c.height);
  };
  img.src = "data:image/png;base64," + a.crop.png;
  const cam = $("#cam");
  cam.hidden = !$("#show-cam").checked;
  if (!a.cam) return;
  const data = decode64(a.cam.data);
  cam.width = a.cam.width; cam.height = a.cam.height;
  const ctx = cam.getContext("2d"), out = ctx.createImageData(a.cam.width, a.cam.height);
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    out.data.set([HEAT_LUT[3 * v], HEAT_LUT[3 * v + 1], HEAT_LUT[3 * v + 2], Math.round(60 + 130 * v / 255)], 4 * i);
  }
  ctx.putImageData(out, 0, 0);
  cam.title = `Grad-CAM for class ${a.target.name}`;
}

function renderBars(top) {
  const box = $("#bars");
  box.replaceChildren();
  for (const t of top) {
    const fill = el("div", { class: "fill" });
    fill.style.width = `${(100 * t.probability).toFixed(2)}%`;
    box.append(el("div", { class: "bar", "data-class": t.class },
      el("span", { class: "name", text: t.name, title: t.name }), el("div", { class: "track" }, fill),
      el("span", { class: "pct", text: pct(t.probability) })));
  }
}

function renderNeighbours(a) {
  const box = $("#neighbours");
  box.replaceChildren();
  if (a.neighbours_note) { box.append(el("p", { class: "hint", text: a.neighbours_note })); return; }
  for (const n of a.neighbours) {
    box.append(el("figure", { class: "nb", title: `training image ${n.index}` },
      el("img", { src: n.url, alt: n.name }), el("b", { text: n.name }),
      el("span", { text: `distance ${n.distance.toFixed(2)}` })));
  }
}

const LAYER_TEXT = {
  conv: (l) => `${l.channels} learned kernels slide over the previous layer's maps; each map is one kernel's ` +
    "response after the ReLU, which sets negative responses to zero.",
  lrn: () => "Local response normalization (paper, section 3.3): each value is divided by the activity of the " +
    "neighbouring maps at the same place, so strong responses damp their neighbours.",
  pool: () => "Max-pooling: each value is the largest in a small window (3x3 windows 2 apart in the paper: " +
    "overlapping pooling, section 3.4), which shrinks the maps and tolerates small shifts.",
};

const SHOWN_ROWS = 2;  // rows of maps per layer until "show all"

function drawMaps(canvas, l, count, width) {
  const scale = Math.max(1, Math.round(48 / l.height)), cell = l.height * scale, cellW = l.width * scale, gap = 2;
  const cols = Math.max(1, Math.min(count, Math.floor(width / (cellW + gap))));
  const rows = Math.ceil(count / cols);
  canvas.width = cols * (cellW + gap) - gap;
  canvas.height = rows * (cell + gap) - gap;
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(canvas.width, canvas.height);
  img.data.fill(255);
  const data = decode64(l.data), hw = l.height * l.width;
  for (let m = 0; m < count; m++) {
    const x0 = (m % cols) * (cellW + gap), y0 = Math.floor(m / cols) * (cell + gap);
    for (let y = 0; y < cell; y++) {
      const row = Math.floor(y / scale) * l.width;
      let p = 4 * ((y0 + y) * canvas.width + x0);
      for (let x = 0; x < cellW; x++, p += 4) {
        const v = data[m * hw + row + Math.floor(x / scale)];
        img.data[p] = MAP_LUT[3 * v]; img.data[p + 1] = MAP_LUT[3 * v + 1]; img.data[p + 2] = MAP_LUT[3 * v + 2];
      }
    }
  }
  ctx.putImageData(img, 0, 0);
  canvas.onclick = (ev) => {
    const r = canvas.getBoundingClientRect();
    const x = (ev.clientX - r.left) * canvas.width / r.width, y = (ev.clientY - r.top) * canvas.height / r.height;
    const m = Math.floor(y / (cell + gap)) * cols + Math.floor(x / (cellW + gap));
    if (m < count) zoom(l, m);
  };
  return cols;
}

function renderLayers(layers) {
  const box = $("#layers");
  box.replaceChildren();
  const width = Math.max(300, box.clientWidth || 900);
  for (const l of layers) {
    const canvas = el("canvas", { "data-layer": l.name, "aria-label": `${l.name} maps` });
    const cols = drawMaps(canvas, l, l.channels, width);
    const first = Math.min(l.channels, cols * SHOWN_ROWS);
    const more = el("button", { class: "more" });
    let all = false;
    const show = () => {
      drawMaps(canvas, l, all ? l.channels : first, width);
      more.textContent = all ? `show the strongest ${first} only` : `show all ${l.channels} maps`;
    };
    more.addEventListener("click", () => { all = !all; show(); });
    show();
    const kind = { conv: "convolution + ReLU", lrn: "local response normalization", pool: "max-pooling" }[l.kind];
    box.append(el("div", { class: "layer" },
      el("h3", { text: `${l.name} ` }, el("span", { class: "muted",
        text: `${kind}: ${l.channels} maps of ${l.height}x${l.width}, strongest first (largest value ${fmt(l.max, 3)})` })),
      el("p", { class: "explain", text: LAYER_TEXT[l.kind](l) }), canvas, first < l.channels ? more : ""));
  }
}

function zoom(l, m) {
  const channel = l.order[m];
  $("#zoom-title").textContent = `${l.name}, map ${channel} (rank ${m + 1} of ${l.channels}, mean ${fmt(l.strength[m], 3)})`;
  const c = $("#zoom-map"), ctx = c.getContext("2d"), data = decode64(l.data), hw = l.height * l.width;
  const small = document.createElement("canvas");
  small.width = l.width; small.height = l.height;
  const img = small.getContext("2d").createImageData(l.width, l.height);
  for (let i = 0; i < hw; i++) {
    const v = data[m * hw + i];
    img.data.set([MAP_LUT[3 * v], MAP_LUT[3 * v + 1], MAP_LUT[3 * v + 2], 255], 4 * i);
  }
  small.getContext("2d").putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(small, 0, 0, c.width, c.height);
  const fig = $("#zoom-kernel-fig");
  if (l.kind === "conv") {
    fig.hidden = false;
    $("#zoom-kernel").src = `/api/runs/${encodeURIComponent(state.id)}/kernel/${l.name}/${channel}.png`;
    $("#zoom-kernel-cap").textContent = "its kernel (mean over input channels unless RGB)";
    $("#zoom-text").textContent = "The kernel is the pattern this map looks for; the map is bright where the " +
      "layer's input matches it.";
  } else {
    fig.hidden = true;
    $("#zoom-text").textContent = "This layer has no learned kernel: it rescales or pools the maps of the " +
      "layer before it.";
  }
  $("#zoom").hidden = false;
}

// ---------- curves ----------

function lineChart(canvas, panels) {
  const ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height;
  ctx.clearRect(0, 0, W, H);
  ctx.font = "12px system-ui, sans-serif";
  const pw = W / panels.length;
  panels.forEach((panel, k) => {
    const x0 = k * pw + 44, x1 = (k + 1) * pw - 10, y0 = 22, y1 = H - 30;
    const all = panel.series.flatMap((s) => s.points.map((p) => p[1])).filter((v) => v !== null && isFinite(v));
    const xs = panel.series.flatMap((s) => s.points.map((p) => p[0]));
    ctx.fillStyle = "#1d2330";
    ctx.fillText(panel.title, x0, 14);
    if (!all.length) { ctx.fillStyle = "#5f6b7a"; ctx.fillText("no epochs yet", x0, y0 + 30); return; }
    let lo = panel.min !== undefined ? panel.min : Math.min(...all), hi = panel.max !== undefined ? panel.max : Math.max(...all);
    if (hi === lo) { hi += 1; lo -= panel.min !== undefined ? 0 : 1; }
    const xmax = Math.max(2, ...xs), X = (e) => x0 + (x1 - x0) * (e - 1) / (xmax - 1), Y = (v) => y1 - (y1 - y0) * (v - lo) / (hi - lo);
    ctx.strokeStyle = "#dde2e8"; ctx.fillStyle = "#5f6b7a"; ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const v = lo + (hi - lo) * i / 4, y = Y(v);
      ctx.beginPath(); ctx.moveTo(x0, y); ctx.lineTo(x1, y); ctx.stroke();
      ctx.fillText(fmt(v, 3), x0 - 40, y + 4);
    }
    ctx.textAlign = "center";
    ctx.fillText("epoch", (x0 + x1) / 2, H - 6);
    ctx.fillText("1", x0, H - 16); ctx.fillText(String(xmax), x1, H - 16);
    ctx.textAlign = "left";
    panel.series.forEach((s, j) => {
      ctx.strokeStyle = s.color; ctx.fillStyle = s.color; ctx.lineWidth = 2;
      ctx.beginPath();
      s.points.forEach(([e, v], i) => (i ? ctx.lineTo(X(e), Y(v)) : ctx.moveTo(X(e), Y(v))));
      ctx.stroke();
      s.points.forEach(([e, v]) => { ctx.beginPath(); ctx.arc(X(e), Y(v), 2.5, 0, 7); ctx.fill(); });
      ctx.fillText(s.label, x0 + 8 + (j % 3) * ((x1 - x0) / 3), y0 + 14 + 14 * Math.floor(j / 3));
    });
  });
}

const COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#be185d", "#4b5563"];

function drawCurves() {
  const h = state.history, pts = (key, mul = 1) => h.map((r) => [r.epoch, r[key] === undefined ? null : mul * r[key]]);
  lineChart($("#curves"), [
    { title: "loss (cross-entropy)", series: [{ label: "train", color: COLORS[0], points: pts("train_loss") },
      { label: "val", color: COLORS[1], points: pts("val_loss") }] },
    { title: "accuracy (%)", series: [{ label: "train top-1", color: COLORS[0], points: pts("train_top1", 100) },
      { label: "val top-1", color: COLORS[1], points: pts("val_top1", 100) },
      { label: "val top-5", color: COLORS[2], points: pts("val_top5", 100) }] },
  ]);
}

async function pollMetrics() {
  const id = state.id;
  if (!id) return;
  try {
    const m = await api(`/api/runs/${encodeURIComponent(id)}/metrics?since=${state.lastEpoch}`);
    if (id !== state.id) return;
    if (m.history.length) {
      state.history = state.history.concat(m.history);
      state.lastEpoch = state.history[state.history.length - 1].epoch;
    }
    $("#live").hidden = m.status !== "training";
    $("#live").textContent = m.status === "training" ? `live: epoch ${state.lastEpoch} of ${m.epochs}` : "";
    drawCurves();
    if (m.status !== "training" && state.poll) {
      clearInterval(state.poll); state.poll = null;
      if (state.card && state.card.status === "training") { state.card.status = m.status; renderCompare(); }
    }
  } catch (e) { /* the next poll tries again */ }
}

// ---------- compare ----------

async function renderCompare() {
  const rows = await api("/api/compare");
  const table = $("#compare");
  table.replaceChildren(el("tr", {}, ...["run", "model", "data", "recipe", "epochs", "status", "top-1 error", "top-5 error",
    "train time"].map((t, i) => el("th", { class: i > 5 ? "num" : "", text: t }))));
  for (const r of rows) {
    const res = r.results || {};
    table.append(el("tr", {}, el("td", { text: r.id }), el("td", { text: r.model || "-" }), el("td", { text: r.data || "-" }),
      el("td", { text: r.recipe || "-" }), el("td", { text: r.epochs ?? "-" }), el("td", { text: r.status }),
      el("td", { class: "num", text: res.test_top1_error === undefined ? "-" : pct(res.test_top1_error) }),
      el("td", { class: "num", text: res.test_top5_error === undefined ? "-" : pct(res.test_top5_error) }),
      el("td", { class: "num", text: res.train_seconds ? `${res.train_seconds.toFixed(0)} s` : "-" })));
  }
  lineChart($("#compare-curves"), [{ title: "validation top-1 accuracy (%) per epoch", series: rows.map((r, i) => ({
    label: r.id, color: COLORS[i % COLORS.length], points: r.history.map((h) => [h.epoch, 100 * h.val_top1]) })) }]);
}

// ---------- drawing ----------

const pad = $("#draw"), pen = pad.getContext("2d");
let drawing = false, lastSent = 0, timer = null;

function clearDrawing() {
  pen.fillStyle = "#000";
  pen.fillRect(0, 0, pad.width, pad.height);
}

function sendDrawing() {
  pad.toBlob((blob) => { state.drawPending = false; predict({ blob, name: "drawing.png" }); }, "image/png");
}

function where(ev) {
  const r = pad.getBoundingClientRect();
  return [(ev.clientX - r.left) * pad.width / r.width, (ev.clientY - r.top) * pad.height / r.height];
}

pad.addEventListener("pointerdown", (ev) => {
  drawing = true;
  pad.setPointerCapture(ev.pointerId);
  const [x, y] = where(ev);
  pen.strokeStyle = "#fff"; pen.lineCap = "round"; pen.lineJoin = "round"; pen.lineWidth = Number($("#brush").value);
  pen.beginPath(); pen.moveTo(x, y); pen.lineTo(x + 0.01, y); pen.stroke();
});
pad.addEventListener("pointermove", (ev) => {
  if (!drawing) return;
  const [x, y] = where(ev);
  pen.lineTo(x, y); pen.stroke();
  const now = performance.now();
  if (now - lastSent > 250) { lastSent = now; sendDrawing(); }  // live update while drawing
});
pad.addEventListener("pointerup", () => {
  drawing = false;
  state.drawPending = true;  // the finished drawing is about to be sent
  clearTimeout(timer);
  timer = setTimeout(sendDrawing, 30);
});
$("#clear").addEventListener("click", () => { clearDrawing(); clearResults(); });

// ---------- wiring ----------

for (const b of document.querySelectorAll(".tabs button")) {
  b.addEventListener("click", () => {
    document.querySelectorAll(".tabs button").forEach((x) => x.classList.toggle("active", x === b));
    document.querySelectorAll(".tab").forEach((t) => { t.hidden = t.id !== `tab-${b.dataset.tab}`; });
  });
}
$("#file").addEventListener("change", (ev) => {
  const f = ev.target.files[0];
  if (f) predict({ blob: f, name: f.name });
  ev.target.value = "";
});
const drop = $("#dropzone");
drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => {
  ev.preventDefault(); drop.classList.remove("over");
  const f = ev.dataTransfer.files[0];
  if (f) predict({ blob: f, name: f.name });
});
$("#model-select").addEventListener("change", (ev) => selectModel(ev.target.value));
$("#show-cam").addEventListener("change", () => { $("#cam").hidden = !$("#show-cam").checked; });
$("#cam-class").addEventListener("change", () => { if (state.source) predict(state.source); });
$("#zoom-close").addEventListener("click", () => { $("#zoom").hidden = true; });
$("#zoom").addEventListener("click", (ev) => { if (ev.target.id === "zoom") $("#zoom").hidden = true; });
document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") $("#zoom").hidden = true; });

clearDrawing();
renderSamples().catch((e) => showMessage(e.message));
loadRuns().catch((e) => showMessage(e.message));
