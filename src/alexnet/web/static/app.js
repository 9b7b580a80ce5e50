// The explorer page: plain JavaScript, no libraries, nothing fetched from outside this server.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { runs: [], id: null, card: null, answer: null, source: null, busy: false, again: false,
                lastEpoch: 0, history: [], status: null, version: null, pending: null, errors: null,
                wrong: new Map(), unit: null, compareIds: null };

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

const working = new Map();  // what the page waits for -> its words; the progress line shows the newest
function progress(key, text) {
  if (text) working.set(key, text); else working.delete(key);
  const last = [...working.values()].pop();
  $("#progress").hidden = !last;
  $("#progress-text").textContent = last || "";
  document.body.setAttribute("aria-busy", last ? "true" : "false");
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

// Probabilities with one decimal everywhere; what one decimal cannot show is said as a bound.
function pct(p) {
  if (p === null || p === undefined) return "-";
  if (p > 0 && p < 0.0005) return "<0.1%";
  if (p < 1 && p > 0.9995) return ">99.9%";
  return (100 * p).toFixed(1) + "%";
}
function fmt(v, digits = 3) {
  if (v === null || v === undefined || !isFinite(v)) return "-";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return Number(v).toExponential(digits - 1);
  return Number(v).toPrecision(digits).replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, "");
}
function decode64(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
const runUrl = (id, tail) => `/api/runs/${encodeURIComponent(id)}${tail}`;

// matplotlib's "inferno" (perceptually uniform, dark to bright), sampled at 9 stops, as a 256-entry table.
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
const INFERNO = makeLut([[0, 0, 4], [31, 12, 72], [85, 15, 109], [136, 34, 106], [186, 54, 85], [227, 89, 51],
  [249, 140, 10], [249, 201, 50], [252, 255, 164]]);
const MAP_LUT = INFERNO;
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#17becf", "#e377c2", "#8c564b", "#7f7f7f",
  "#bcbd22"];

// ---------- models ----------

async function loadRuns() {
  state.runs = await api("/api/runs");
  fillSelect();
  const first = state.runs.find((r) => r.status !== "training") || state.runs[0];
  if (first) { $("#model-select").value = first.id; await selectModel(first.id); }
  renderCompare();
}

function fillSelect() {
  const select = $("#model-select"), keep = select.value;
  select.replaceChildren();
  for (const r of state.runs) {
    const acc = r.results ? `, test top-1 ${pct(r.results.test_top1_accuracy)}` : "";
    select.append(el("option", { value: r.id,
      text: `${r.id} (${r.model || "?"}${r.data ? " on " + r.data : ""}${acc}; ${r.status})` }));
  }
  if (keep && state.runs.some((r) => r.id === keep)) select.value = keep;
}

// Every 5 s: runs started or ended since (a new run appears in the picker and the table), and the shown
// run's status, results and checkpoint (a run that ends switches from "training" to "finished").
async function refreshRuns() {
  let runs;
  try { runs = await api("/api/runs"); } catch (e) { return; }
  const said = (list) => list.map((r) => `${r.id}:${r.status}:${r.version}:${r.results ? 1 : 0}`).join(",");
  if (said(runs) === said(state.runs)) return;
  state.runs = runs;
  fillSelect();
  renderCompare();
  const mine = runs.find((r) => r.id === state.id);
  if (mine && state.card && (mine.status !== state.card.status || mine.version !== state.card.version)) await reloadCard();
}

async function selectModel(id) {
  state.id = id;
  Object.assign(state, { answer: null, source: null, lastEpoch: 0, history: [], card: null, errors: null,
    wrong: new Map(), status: null, version: null });
  $("#model-status").textContent = "loading...";
  $("#model-status").className = "badge";
  showMessage("");
  clearResults();
  clearDrawing();
  progress("card", `Loading ${id}...`);
  let card;
  try {
    card = await api(runUrl(id, ""));
  } catch (e) { showMessage(e.message); progress("card", ""); return; }
  finally { progress("card", ""); }
  if (id !== state.id) return;
  showCard(card);
  await pollMetrics();
  if (!card.loaded) showMessage(`${id} has no checkpoint yet: its curves update below while it trains.`);
  else if (state.pending) { const src = state.pending; state.pending = null; predict(src); }
  await renderTestset(card);
  loadErrors();
}

function showCard(card) {
  state.card = card;
  state.status = card.status;
  state.version = card.version;
  $("#model-status").textContent = card.status;
  $("#model-status").className = `badge ${card.status}`;
  if (card.status !== "training") $("#live").hidden = true;
  renderCard(card);
  renderKernels(card);
  renderSummary(card);
  renderClassChoice(card);
  renderModelText(card);
  $("#kernels-section").hidden = !card.conv1;  // a run without a checkpoint yet: no empty headings
  $("#arch-section").hidden = !card.summary;
}

async function reloadCard() {  // the run's status or checkpoint changed: its card, kernels and results anew
  const id = state.id, wasLoaded = state.card && state.card.loaded;
  let card;
  try { card = await api(runUrl(id, "")); } catch (e) { return; }
  if (id !== state.id) return;
  showCard(card);
  if (card.loaded && !wasLoaded) { showMessage(""); await renderTestset(card); }
  if (card.loaded) loadErrors();
}

function renderModelText(card) {
  const emb = card.embedding || "fc7";
  document.querySelectorAll(".embedding-name").forEach((n) => { n.textContent = emb; });
  $("#neighbours-text").textContent = `The training images whose ${emb} vectors (the ${card.embed_dim || "?"} ` +
    "numbers the output layer reads) lie closest to this image's, by Euclidean distance: the paper's Figure 4. " +
    "Similar vectors mean the network thinks the images are alike, even when their pixels differ.";
  $("#draw-hint").textContent = card.input && card.input.channels === 3
    ? "Draw anything: the network reads colour photographs, so a drawing is far from what it knows."
    : "Draw in white on black, as in the training images; the prediction updates while you draw.";
  const towers = card.towers || 1;
  $("#kernels-text").textContent = (towers > 1
    ? `The first layer's learned filters (the paper's Figure 3), one image per tower: the paper trained the ` +
      `${towers} towers on ${towers} GPUs, and the two came to specialize. `
    : "The first layer's learned filters (one tower). ") +
    "Each kernel is scaled to its own range: darkest is its most negative weight, brightest its most positive. " +
    "\"Chroma\" is the share of a kernel's pattern that differs between colours.";
  const cam = card.cam_layer;
  $("#cam-text").textContent = cam
    ? `The heat map (Grad-CAM) marks where the evidence for the chosen class lies, read at ${cam} (the last ` +
      "convolution whose maps are larger than 1x1): its maps, each weighed by how much raising it would raise the " +
      "class score. Each class's heat map is scaled to its own maximum; transparent is no evidence."
    : "Heat map not available: every map of this model is 1x1, so no layer says where the evidence lies.";
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
  if (card.towers) rows.push(["towers", String(card.towers)]);
  if (card.results) {
    const r = card.results;
    rows.push(["test top-1", `${pct(r.test_top1_accuracy)} (error ${pct(r.test_top1_error)})`]);
    rows.push([`test top-${r.topk || 5}`, `${pct(r.test_top5_accuracy)} (error ${pct(r.test_top5_error)})`]);
    rows.push(["test images", `${r.test_images} (${r.test_split} split, ${r.tta} view)`]);
  }
  if (card.weights) rows.push(["weights shown", card.weights]);
  if (card.summary) rows.push(["parameters", card.summary.total_params.toLocaleString("en")]);
  for (const [k, v] of rows) dl.append(el("dt", { text: k }), el("dd", { text: String(v) }));
}

function renderKernels(card) {
  const box = $("#kernels");
  box.replaceChildren();
  if (!card.conv1) return;
  box.previousElementSibling.textContent = `${(card.layers && card.layers[0] && card.layers[0].name) || "conv1"} kernels`;
  for (const t of card.conv1) {
    const chroma = t.mean_chroma === null ? "grey input" :
      `mean chroma ${t.mean_chroma.toFixed(2)}, ${t.colour_kernels} of ${t.kernels} kernels mostly colour`;
    const label = card.conv1.length > 1 ? `tower ${t.tower}: kernels ${t.first + 1}-${t.first + t.kernels}` : `all ${t.kernels} kernels`;
    box.append(el("figure", {}, el("img", { src: runUrl(card.id, `/conv1/${t.tower}.png?v=${card.version}`),
      alt: `conv1 kernels, ${label}` }), el("figcaption", { text: `${label}; ${chroma}; grey is a weight of 0, lighter positive, darker negative` })));
  }
}

function renderSummary(card) {
  const table = $("#summary");
  table.replaceChildren();
  if (!card.summary) return;
  table.append(el("tr", {}, el("th", { text: "layer" }), el("th", { text: "type" }), el("th", { text: "output" }),
    el("th", { class: "num", text: "parameters" })));
  for (const r of card.summary.layers) {
    if (!r.params && !["MaxPool2d", "LocalResponseNorm", "AvgPool2d", "WithinMapNorm"].includes(r.kind)) continue;
    table.append(el("tr", {}, el("td", { text: r.name.split(".").pop() }), el("td", { text: r.kind }),
      el("td", { text: r.output_text }), el("td", { class: "num", text: r.params ? r.params.toLocaleString("en") : "-" })));
  }
}

function renderClassChoice(card) {
  const select = $("#cam-class");
  select.replaceChildren(el("option", { value: "", text: "the top class" }));
  (card.class_names || []).forEach((n, i) => select.append(el("option", { value: String(i), text: n })));
}

function thumb(item, label, onClick) {
  const wrong = state.wrong.get(item.index);
  const b = el("button", { "data-index": String(item.index),
    title: `test image ${item.index}: ${label}${wrong !== undefined ? `; answered ${wrong}` : ""}` },
    el("img", { src: item.url, alt: `test image ${item.index}, ${label}`, loading: "lazy" }),
    el("span", { text: wrong !== undefined ? `${label} ✗ ${wrong}` : label }));
  if (wrong !== undefined) b.classList.add("wrong");
  b.addEventListener("click", onClick);
  return b;
}

async function renderTestset(card) {
  const box = $("#testset");
  box.replaceChildren();
  if (!card.loaded || !card.test_images) {
    box.append(el("p", { class: "hint", text: "This model came without its dataset: no test images to pick." }));
    return;
  }
  if ($("#only-wrong").checked && state.errors) {
    const names = state.errors.class_names;
    const wrong = state.errors.images.filter((r) => r[1] !== r[2]).slice(0, 60);
    if (!wrong.length) box.append(el("p", { class: "hint", text: "No wrong answers among the test images." }));
    for (const [index, label] of wrong) {
      const it = { index, url: runUrl(card.id, `/images/test/${index}.png`) };
      box.append(thumb(it, names[label], () => predict({ test: index, label: names[label] })));
    }
    return;
  }
  try {
    const items = await api(runUrl(card.id, "/testset?limit=40"));
    for (const it of items) box.append(thumb(it, it.name, () => predict({ test: it.index, label: it.name })));
  } catch (e) { box.append(el("p", { class: "hint", text: e.message })); }
}

async function renderSamples() {
  const items = await api("/api/gallery");
  const box = $("#samples");
  for (const it of items) {
    const b = el("button", { title: it.name }, el("img", { src: it.url, alt: `sample photo ${it.name}` }),
      el("span", { text: it.name }));
    b.addEventListener("click", () => predict({ sample: it.name }));
    box.append(b);
  }
}

// ---------- predictions ----------

function request(src, params) {
  const q = new URLSearchParams(params);
  const options = { method: "POST" };
  if (src.test !== undefined) q.set("test", String(src.test));
  else if (src.sample !== undefined) q.set("sample", src.sample);
  else {
    options.body = src.blob;
    options.headers = { "Content-Type": src.blob.type || "application/octet-stream",
                        "X-Filename": encodeURIComponent(src.name || "upload") };
  }
  return [q, options];
}

async function predict(source) {
  if (!state.card) { state.pending = source; return; }  // the model is still loading: answer once it is
  if (!state.card.loaded) { showMessage(`${state.id} has no checkpoint yet: nothing to predict with.`); return; }
  state.source = source;
  $("#across").disabled = false;
  if (state.busy) { state.again = true; return; }  // keep only the newest drawing
  state.busy = true;
  const id = state.id;
  try {
    do {
      state.again = false;
      const src = state.source;
      const params = { k: "5", neighbours: "8", wait: "false" };  // an index being built: say how far
      const target = $("#cam-class").value;
      if (target !== "") params.target = target;
      const [q, options] = request(src, params);
      const slow = setTimeout(() => progress("predict", "Computing the answer, the maps and the heat map..."), 150);
      try {
        const answer = await api(runUrl(id, `/predict?${q}`), options);
        if (id !== state.id) return;
        if (src === state.source || !state.again) { showMessage(""); render(answer, src); }
      } catch (e) {
        clearResults();  // no earlier answer stays under the message as if it were this image's
        state.answer = null;
        showMessage(e.status === 413 ? `Too large: ${e.message}` : e.message);
      } finally { clearTimeout(slow); progress("predict", ""); }
    } while (state.again);
  } finally { state.busy = false; }
}

function clearResults() {
  for (const id of ["#bars", "#neighbours", "#layers", "#across-out"]) $(id).replaceChildren();
  $("#input-info").textContent = "";
  $("#timing").textContent = "";
  $("#ood").hidden = true;
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
  if (a.label) info.push(`true class ${a.label.name}`);
  else if (src && src.label) info.push(`true class ${src.label}`);
  $("#input-info").textContent = info.length ? `(${info.join("; ")})` : "";
  $("#timing").textContent = `(answered in ${Math.round(a.ms)} ms)`;
  renderSeen(a);
  renderBars(a);
  renderOod(a);
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
  if (!a.cam) {
    cam.getContext("2d").clearRect(0, 0, cam.width, cam.height);
    cam.setAttribute("aria-label", "heat map not available for this model");
    return;
  }
  const data = decode64(a.cam.data);
  cam.width = a.cam.width; cam.height = a.cam.height;
  const ctx = cam.getContext("2d"), out = ctx.createImageData(a.cam.width, a.cam.height);
  for (let i = 0; i < data.length; i++) {
    const v = data[i];  // transparent where there is no evidence, opaque at the class's maximum
    out.data.set([INFERNO[3 * v], INFERNO[3 * v + 1], INFERNO[3 * v + 2], Math.round(220 * Math.min(1, 1.4 * v / 255))], 4 * i);
  }
  ctx.putImageData(out, 0, 0);
  const label = `Grad-CAM heat map for class ${a.target.name}, read at ${a.cam.layer}`;
  cam.title = label;
  cam.setAttribute("aria-label", label);
}

function drawColorbar() {
  const c = $("#cam-bar"), ctx = c.getContext("2d"), img = ctx.createImageData(c.width, c.height);
  for (let x = 0; x < c.width; x++) {
    const v = Math.round(255 * x / (c.width - 1)), a = Math.min(1, 1.4 * v / 255) * 220 / 255;
    for (let y = 0; y < c.height; y++) {  // over a checker of greys, so that transparency shows
      const bg = ((x >> 2) + (y >> 2)) % 2 ? 200 : 255;
      for (let k = 0; k < 3; k++) img.data[4 * (y * c.width + x) + k] = Math.round(a * INFERNO[3 * v + k] + (1 - a) * bg);
      img.data[4 * (y * c.width + x) + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
}

function renderBars(a) {
  const box = $("#bars");
  box.replaceChildren();
  const truth = a.label ? a.label.index : null;
  const bar = (t) => {
    const fill = el("div", { class: "fill" });
    fill.style.width = `${(100 * t.probability).toFixed(2)}%`;
    const row = el("div", { class: "bar", "data-class": t.class },
      el("span", { class: "name", text: t.name, title: t.name }), el("div", { class: "track" }, fill),
      el("span", { class: "pct", text: pct(t.probability), title: `${(100 * t.probability).toPrecision(4)}%` }));
    if (truth !== null && t.index === truth) { row.classList.add("true"); row.setAttribute("aria-label",
      `${t.name}, the true class: ${pct(t.probability)}`); }
    return row;
  };
  for (const t of a.top) box.append(bar(t));
  if (truth !== null && !a.top.some((t) => t.index === truth)) {
    box.append(el("p", { class: "muted", text: "the true class, outside the top 5:" }),
      bar({ class: String(truth), index: truth, name: a.label.name, probability: a.label.probability }));
  }
}

function renderOod(a) {
  const box = $("#ood");
  if (!a.ood || !a.ood.unlike) { box.hidden = true; return; }
  const emb = (state.card && state.card.embedding) || "fc7";
  box.textContent = `This image is unlike the training data: its ${emb} vector lies ${fmt(a.ood.distance)} from the ` +
    `nearest training image's, farther than 99% of the ${a.ood.test_images} test images (up to ${fmt(a.ood.threshold)}). ` +
    "Treat the answer with doubt, however confident it looks.";
  box.hidden = false;
}

function renderNeighbours(a) {
  const box = $("#neighbours");
  box.replaceChildren();
  if (a.neighbours_note) { box.append(el("p", { class: "hint", text: a.neighbours_note })); return; }
  if (a.neighbours_pending) { waitForIndex(); return; }
  for (const n of a.neighbours) {
    box.append(el("figure", { class: "nb", title: `training image ${n.index}` },
      el("img", { src: n.url, alt: `training image ${n.index}, ${n.name}` }), el("b", { text: n.name }),
      el("span", { text: `distance ${fmt(n.distance)}` })));
  }
}

async function waitForIndex() {  // the index is being built: say how far, then ask again for this image
  const id = state.id, src = state.source;
  for (;;) {
    let p;
    try { p = await api(runUrl(id, "/index")); } catch (e) { break; }
    if (id !== state.id || src !== state.source) return;
    const text = p.state === "building" ? `Building the neighbour index: ${p.done} of ${p.total} training images...`
                                        : "Preparing the neighbour index...";
    $("#neighbours").replaceChildren(el("p", { class: "hint", text }));
    progress("index", text);
    if (p.state === "ready" || p.state === "none" || p.state === "error") break;
    await new Promise((r) => setTimeout(r, 400));
  }
  progress("index", "");
  if (id === state.id && src === state.source) predict(src);
}

async function acrossRuns() {
  const src = state.source;
  if (!src) return;
  const box = $("#across-out");
  box.replaceChildren(el("p", { class: "hint", text: "Asking every run..." }));
  let blob = src.blob, name = src.name;
  if (src.test !== undefined) {  // the same pixels for every run, whatever dataset each was trained on
    blob = await (await fetch(runUrl(state.id, `/images/test/${src.test}.png`))).blob();
    name = `test-${src.test}.png`;
  }
  const table = el("table", { class: "table" }, el("tr", {}, ...["run", "model", "answer", "probability",
    "true class"].map((t) => el("th", { text: t }))));
  for (const r of state.runs) {
    const one = src.sample !== undefined ? { sample: src.sample } : { blob, name };
    const [q, options] = request(one, { k: "5", maps: "false", neighbours: "0" });
    let cells;
    try {
      const a = await api(runUrl(r.id, `/predict?${q}`), options);
      const truth = src.label !== undefined ? a.top.find((t) => t.name === src.label) : null;
      cells = [a.top[0].name, pct(a.top[0].probability), truth ? pct(truth.probability) : (src.label ? "not in top 5" : "-")];
    } catch (e) { cells = [e.message, "", ""]; }
    table.append(el("tr", {}, el("td", { text: r.id }), el("td", { text: r.model || "-" }),
      ...cells.map((t) => el("td", { text: t }))));
  }
  box.replaceChildren(table);
}

// ---------- layers ----------

const SHOWN_ROWS = 2;  // rows of maps per layer until "show all"

function mapPixels(l, m, img, x0, y0, stride, scale) {
  const data = l.bytes, hw = l.height * l.width;
  for (let y = 0; y < l.height * scale; y++) {
    const row = Math.floor(y / scale) * l.width;
    let p = 4 * ((y0 + y) * stride + x0);
    for (let x = 0; x < l.width * scale; x++, p += 4) {
      const v = data[m * hw + row + Math.floor(x / scale)];
      img.data[p] = MAP_LUT[3 * v]; img.data[p + 1] = MAP_LUT[3 * v + 1]; img.data[p + 2] = MAP_LUT[3 * v + 2];
      img.data[p + 3] = 255;
    }
  }
}

function drawMaps(canvas, l, count, width, selected) {
  const scale = Math.max(1, Math.round(48 / l.height)), cell = l.height * scale, cellW = l.width * scale, gap = 2;
  const cols = Math.max(1, Math.min(count, Math.floor(width / (cellW + gap))));
  const rows = Math.ceil(count / cols);
  canvas.width = cols * (cellW + gap) - gap;
  canvas.height = rows * (cell + gap) - gap;
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(canvas.width, canvas.height);
  img.data.fill(255);
  for (let m = 0; m < count; m++) mapPixels(l, m, img, (m % cols) * (cellW + gap), Math.floor(m / cols) * (cell + gap), canvas.width, scale);
  ctx.putImageData(img, 0, 0);
  if (selected !== null && selected < count) {
    ctx.strokeStyle = "#f59e0b"; ctx.lineWidth = 2;
    ctx.strokeRect((selected % cols) * (cellW + gap) + 1, Math.floor(selected / cols) * (cell + gap) + 1, cellW - 2, cell - 2);
  }
  return { cols, cell, cellW, gap };
}

function renderLayers(layers) {
  const box = $("#layers");
  box.replaceChildren();
  const width = Math.max(240, box.clientWidth || 900);
  const about = new Map(((state.card && state.card.layers) || []).map((l) => [l.name, l]));
  for (const l of layers) {
    l.bytes = decode64(l.data);
    const info = about.get(l.name) || {};
    const canvas = el("canvas", { "data-layer": l.name, tabindex: "0", role: "button",
      "aria-label": `${l.name}: ${l.channels} maps of ${l.height}x${l.width}. Arrow keys choose a map, Enter enlarges it.` });
    let all = false, selected = null, geo = null;
    const first = Math.min(l.channels, Math.max(1, Math.floor(width / (Math.max(1, Math.round(48 / l.height)) * l.width + 2))) * SHOWN_ROWS);
    const shownCount = () => (all ? l.channels : first);
    const more = el("button", { class: "more" });
    const show = () => {
      geo = drawMaps(canvas, l, shownCount(), width, selected);
      more.textContent = all ? `show the strongest ${first} only` : `show all ${l.channels} maps`;
      more.setAttribute("aria-expanded", String(all));
    };
    more.addEventListener("click", () => { all = !all; show(); });
    canvas.addEventListener("click", (ev) => {
      const r = canvas.getBoundingClientRect();
      const x = (ev.clientX - r.left) * canvas.width / r.width, y = (ev.clientY - r.top) * canvas.height / r.height;
      const m = Math.floor(y / (geo.cell + geo.gap)) * geo.cols + Math.floor(x / (geo.cellW + geo.gap));
      if (m < shownCount()) { selected = m; show(); zoom(l, m, canvas); }
    });
    canvas.addEventListener("keydown", (ev) => {
      const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: geo.cols, ArrowUp: -geo.cols, Home: -1e9, End: 1e9 };
      if (ev.key in moves) {
        ev.preventDefault();
        selected = Math.max(0, Math.min(shownCount() - 1, (selected === null ? 0 : selected + moves[ev.key])));
        show();
        $("#layers-live").textContent = `${l.name} map ${selected + 1} of ${l.channels} (channel ${l.order[selected]})`;
      } else if ((ev.key === "Enter" || ev.key === " ") && shownCount()) {
        ev.preventDefault();
        if (selected === null) selected = 0;
        show();
        zoom(l, selected, canvas);
      }
    });
    canvas.addEventListener("focus", () => {  // the keyboard starts at the strongest map
      if (selected !== null) return;
      selected = 0;
      show();
      $("#layers-live").textContent = `${l.name} map 1 of ${l.channels} (channel ${l.order[0]})`;
    });
    canvas.addEventListener("blur", () => { if (selected !== null && !$("#zoom").open) { selected = null; show(); } });
    show();
    const mark = state.answer && state.answer.cam && state.answer.cam.layer === l.name
      ? el("span", { class: "cam-mark", text: " (the heat map's layer)" }) : "";
    box.append(el("div", { class: "layer" },
      el("h3", { text: `${l.name} ` }, el("span", { class: "muted",
        text: `${info.caption || l.kind}: ${l.channels} maps of ${l.height}x${l.width}, strongest first ` +
          `(values ${fmt(l.min)} to ${fmt(l.max)})` }), mark),
      el("p", { class: "explain", text: info.about || "" }), canvas, first < l.channels ? more : ""));
  }
}

// ---------- the enlarged map: a dialog ----------

function zoom(l, m, opener) {
  const channel = l.order[m], info = ((state.card && state.card.layers) || []).find((x) => x.name === l.name) || {};
  state.unit = { l, m, channel, y: Math.floor(l.height / 2), x: Math.floor(l.width / 2), opener };
  $("#zoom-title").textContent = `${l.name}, map ${channel} (rank ${m + 1} of ${l.channels}, mean ${fmt(l.strength[m])})`;
  $("#zoom-caption").textContent = `${info.caption || ""}. ` + (info.receptive_field
    ? `Each value depends on a ${info.receptive_field}x${info.receptive_field} window of the input (its receptive field).` : "");
  $("#zoom-math").replaceChildren();
  drawZoomMap();
  drawZoomInput(null);
  renderZoomKernel(l, channel, info);
  const dialog = $("#zoom");
  if (!dialog.open) dialog.showModal();
  $("#zoom-map").focus();
}

function drawZoomMap() {
  const u = state.unit, l = u.l, c = $("#zoom-map"), ctx = c.getContext("2d");
  const small = document.createElement("canvas");
  small.width = l.width; small.height = l.height;
  const sctx = small.getContext("2d"), img = sctx.createImageData(l.width, l.height);
  mapPixels(l, u.m, img, 0, 0, l.width, 1);
  sctx.putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(small, 0, 0, c.width, c.height);
  const sx = c.width / l.width, sy = c.height / l.height;
  ctx.strokeStyle = "#22d3ee"; ctx.lineWidth = 2;
  ctx.strokeRect(u.x * sx + 1, u.y * sy + 1, Math.max(2, sx - 2), Math.max(2, sy - 2));
  c.setAttribute("aria-label", `map ${u.channel} of ${l.name}; chosen pixel row ${u.y + 1}, column ${u.x + 1}`);
}

function drawZoomInput(box) {
  const c = $("#zoom-input"), ctx = c.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage($("#seen"), 0, 0, c.width, c.height);
  if (!box) return;
  const [top, left, bottom, right] = box.box, s = c.width / box.side;
  ctx.strokeStyle = "#22d3ee"; ctx.lineWidth = 2;
  ctx.strokeRect(left * s, top * s, (right - left + 1) * s, (bottom - top + 1) * s);
}

async function renderZoomKernel(l, channel, info) {
  const box = $("#zoom-kernel-box");
  box.replaceChildren();
  if (l.kind !== "conv") {
    box.append(el("p", { class: "explain", text: "This layer has no learned kernel: it rescales or pools the maps of the layer before it." }));
    return;
  }
  if (info.inputs && info.inputs <= 3) {  // a kernel over the image itself can be shown as an image
    box.append(el("figure", {}, el("img", { id: "zoom-kernel", src: runUrl(state.id, `/kernel/${l.name}/${channel}.png?v=${state.version}`),
      alt: `the kernel of map ${channel}`, width: "112", height: "112" }),
      el("figcaption", { text: "its kernel: the pattern of input pixels this map responds to (bright = positive weight)" })));
    return;
  }
  box.append(el("h4", { text: "The training images that excite this map most" }),
    el("p", { class: "explain", text: `Its kernel spans ${info.inputs} input maps, so no picture of it says what it looks ` +
      "for; these are the parts of training images (each the receptive field of its strongest value) where it responds most." }));
  try {
    const ex = await api(runUrl(state.id, `/examples/${l.name}/${channel}`));
    const row = el("div", { class: "examples" });
    for (const e of ex.examples) row.append(el("figure", {}, el("img", { src: e.url, alt: `training image ${e.image}, the patch that excites it` }),
      el("figcaption", { text: `#${e.image}: ${fmt(e.value)}` })));
    box.append(row);
  } catch (e) { box.append(el("p", { class: "hint", text: e.message })); }
}

async function explainUnit() {
  const u = state.unit;
  if (!u || !state.source) return;
  const [q, options] = request(state.source, { layer: u.l.name, channel: String(u.channel), y: String(u.y), x: String(u.x) });
  const box = $("#zoom-math");
  box.replaceChildren(el("p", { class: "hint", text: "Computing..." }));
  let r;
  try { r = await api(runUrl(state.id, `/unit?${q}`), options); } catch (e) { box.replaceChildren(el("p", { class: "hint", text: e.message })); return; }
  drawZoomInput(r);
  const parts = [el("p", { text: `Value at row ${r.y + 1}, column ${r.x + 1}: ${fmt(r.value, 4)}. It depends on input pixels ` +
    `rows ${r.box[0] + 1}-${r.box[2] + 1}, columns ${r.box[1] + 1}-${r.box[3] + 1} (the box on the input).` })];
  if (r.sum !== undefined) {
    if (r.patch) {
      const grid = (rows, title) => el("table", { class: "grid" }, el("caption", { text: title }),
        ...rows.map((row) => el("tr", {}, ...row.map((v) => el("td", { text: fmt(v, 2) })))));
      const patches = el("div", { class: "row" });
      r.patch.forEach((p, i) => patches.append(grid(p, `input ${r.first_input + i} (normalized)`), el("span", { text: "x" }),
        grid(r.weights[i], `kernel, input ${r.first_input + i}`)));
      parts.push(patches);
    }
    const signed = (v, i) => (i === 0 ? fmt(v) : v < 0 ? ` - ${fmt(-v)}` : ` + ${fmt(v)}`);
    const terms = r.terms.map((t, i) => `${signed(t.sum, i)} (input map ${t.input})`).join("");
    const rest = r.inputs > r.terms.length ? `${signed(r.rest, 1)} (the other ${r.inputs - r.terms.length} input maps)` : "";
    parts.push(el("p", { text: `Sum of input x kernel over ${r.inputs} input map(s): ${terms}${rest}; ` +
      `bias ${signed(r.bias, 1)} = ${fmt(r.sum, 4)}` }));
    for (const s of r.steps) parts.push(el("p", { text: `-> ${s.op}: ${fmt(s.value, 4)}` +
      (s.divisor ? ` (divided by ${fmt(s.divisor, 4)}, from the activity of the neighbouring maps)` : "") }));
  }
  box.replaceChildren(...parts);
}

function zoomKeys(ev) {
  const u = state.unit;
  if (!u) return;
  const moves = { ArrowRight: [0, 1], ArrowLeft: [0, -1], ArrowDown: [1, 0], ArrowUp: [-1, 0] };
  if (ev.key in moves) {
    ev.preventDefault();
    u.y = Math.max(0, Math.min(u.l.height - 1, u.y + moves[ev.key][0]));
    u.x = Math.max(0, Math.min(u.l.width - 1, u.x + moves[ev.key][1]));
    drawZoomMap();
  } else if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); explainUnit(); }
}

// ---------- charts ----------

// Round tick values ("nice numbers", Heckbert 1990) covering lo..hi with about n ticks.
function niceTicks(lo, hi, n = 5, integer = false) {
  if (!(hi > lo)) hi = lo + 1;
  const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw))), f = raw / mag;
  let step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
  if (integer) step = Math.max(1, Math.round(step));
  const out = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}

function logTicks(lo, hi) {
  const out = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) { const v = m * Math.pow(10, e); if (v >= lo * 0.999 && v <= hi * 1.001) out.push(v); }
  }
  return out.length >= 2 ? out : [lo, hi];
}

// A chart of panels side by side, drawn at the screen's pixel density; hover shows each series' value.
function chart(canvas, panels) {
  const dpr = window.devicePixelRatio || 1;
  if (!canvas.dataset.w) { canvas.dataset.w = canvas.width; canvas.dataset.h = canvas.height; }
  // as wide as its place allows; on a narrow screen the panels stand one above the other, each full width
  const avail = canvas.parentElement.clientWidth || +canvas.dataset.w;
  const W = Math.max(240, Math.min(+canvas.dataset.w, avail));
  const stacked = panels.length > 1 && W / panels.length < 260, PH = +canvas.dataset.h;
  const H = stacked ? PH * panels.length : PH;
  const box = (k) => (stacked ? [0, k * PH, W] : [k * W / panels.length, 0, W / panels.length]);  // x, y, width
  canvas.width = W * dpr; canvas.height = H * dpr;
  canvas.style.width = `${W}px`; canvas.style.aspectRatio = `${W} / ${H}`;
  canvas._panels = panels;
  const geo = [];
  const draw = (hover) => {
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, W, H);
    ctx.font = "12px system-ui, sans-serif";
    geo.length = 0;
    panels.forEach((panel, k) => {
      const [px, py, pw] = box(k);
      const x0 = px + 52, x1 = px + pw - 12;
      const spots = [];  // the legend, entry by entry, wrapped to the plot's width: above it, never on the data
      let lx = x0, row = 0;
      for (const s of panel.series) {
        const w = 24 + ctx.measureText(s.label).width;
        if (lx > x0 && lx + w > x1) { lx = x0; row += 1; }
        spots.push([lx, py + 28 + 15 * row]);
        lx += w + 8;
      }
      const y0 = py + 22 + 15 * (panel.series.length ? row + 1 : 0), y1 = py + PH - 34;
      const pts = panel.series.flatMap((s) => s.points).filter((p) => p[1] !== null && isFinite(p[1]) && (!panel.log || p[1] > 0));
      ctx.fillStyle = "#1d2330"; ctx.textAlign = "left";
      ctx.fillText(panel.title, px + 8, py + 13);
      panel.series.forEach((s, j) => {
        const [sx, sy] = spots[j];
        ctx.fillStyle = s.color; ctx.fillRect(sx, sy - 8, 14, 3);
        ctx.fillStyle = "#1d2330"; ctx.fillText(s.label, sx + 18, sy - 3);
      });
      if (!pts.length) { ctx.fillStyle = "#545f6d"; ctx.fillText("no epochs yet", x0, y0 + 30); return; }
      let lo = panel.min !== undefined ? panel.min : Math.min(...pts.map((p) => p[1]));
      let hi = panel.max !== undefined ? panel.max : Math.max(...pts.map((p) => p[1]));
      if (hi === lo) { hi = lo === 0 ? 1 : hi * 1.1; lo = panel.min !== undefined ? lo : lo * 0.9; }
      const yt = panel.log ? logTicks(lo, hi) : niceTicks(lo, hi, 4);
      if (!panel.log) { lo = Math.min(lo, yt[0]); hi = Math.max(hi, yt[yt.length - 1]); }
      const emax = Math.max(2, ...pts.map((p) => p[0]));
      const X = (e) => x0 + (x1 - x0) * (e - 1) / (emax - 1);
      const Y = panel.log ? (v) => y1 - (y1 - y0) * (Math.log(v) - Math.log(lo)) / (Math.log(hi) - Math.log(lo))
                          : (v) => y1 - (y1 - y0) * (v - lo) / (hi - lo);
      geo.push({ panel, x0, x1, X, Y, emax });
      ctx.strokeStyle = "#e3e7ed"; ctx.fillStyle = "#545f6d"; ctx.lineWidth = 1; ctx.textAlign = "right";
      for (const v of yt) {
        const y = Math.round(Y(v)) + 0.5;
        ctx.beginPath(); ctx.moveTo(x0, y); ctx.lineTo(x1, y); ctx.stroke();
        ctx.fillText(panel.format ? panel.format(v) : fmt(v), x0 - 5, y + 4);
      }
      ctx.textAlign = "center";
      for (const e of niceTicks(1, emax, Math.min(8, emax - 1), true).filter((e) => e >= 1)) {
        const x = Math.round(X(e)) + 0.5;
        ctx.beginPath(); ctx.moveTo(x, y1); ctx.lineTo(x, y1 + 4); ctx.stroke();
        ctx.fillText(String(e), x, y1 + 16);
      }
      ctx.fillText("epoch", (x0 + x1) / 2, py + PH - 4);
      panel.series.forEach((s) => {
        const good = s.points.filter((p) => p[1] !== null && isFinite(p[1]) && (!panel.log || p[1] > 0));
        ctx.strokeStyle = s.color; ctx.fillStyle = s.color; ctx.lineWidth = 2;
        ctx.beginPath();
        good.forEach(([e, v], i) => (i ? ctx.lineTo(X(e), Y(v)) : ctx.moveTo(X(e), Y(v))));
        ctx.stroke();
        if (good.length < 40) good.forEach(([e, v]) => { ctx.beginPath(); ctx.arc(X(e), Y(v), 2.5, 0, 7); ctx.fill(); });
      });
      if (hover !== undefined && hover >= 1 && hover <= emax) {  // the values at the hovered epoch
        const x = X(hover);
        ctx.strokeStyle = "#545f6d"; ctx.beginPath(); ctx.moveTo(x, y0); ctx.lineTo(x, y1); ctx.stroke();
        const lines = [`epoch ${hover}`, ...panel.series.map((s) => {
          const p = s.points.find((q) => q[0] === hover);
          return `${s.label}: ${p && p[1] !== null ? (panel.format ? panel.format(p[1]) : fmt(p[1], 4)) : "-"}`;
        })];
        const bw = Math.max(...lines.map((t) => ctx.measureText(t).width)) + 12, bh = 15 * lines.length + 6;
        const bx = Math.min(x + 8, x1 - bw), by = y0 + 4;
        ctx.fillStyle = "rgba(255,255,255,.95)"; ctx.strokeStyle = "#8b95a3";
        ctx.fillRect(bx, by, bw, bh); ctx.strokeRect(bx, by, bw, bh);
        ctx.fillStyle = "#1d2330"; ctx.textAlign = "left";
        lines.forEach((t, i) => ctx.fillText(t, bx + 6, by + 15 * (i + 1)));
      }
    });
  };
  canvas.onmousemove = (ev) => {
    const r = canvas.getBoundingClientRect(), x = (ev.clientX - r.left) * W / r.width;
    const g = geo.find((q) => x >= q.x0 - 10 && x <= q.x1 + 10);
    if (!g) { draw(); return; }
    const e = Math.round(1 + (x - g.x0) / (g.x1 - g.x0) * (g.emax - 1));
    draw(Math.max(1, Math.min(g.emax, e)));
  };
  canvas.onmouseleave = () => draw();
  draw();
}

const asPct = (v) => `${+v.toFixed(1)}%`;

function drawCurves() {
  const h = state.history, pts = (key, mul = 1) => h.map((r) => [r.epoch, r[key] === undefined || r[key] === null ? null : mul * r[key]]);
  const panels = [
    { title: "loss (cross-entropy)", log: $("#log-scale").checked, series: [{ label: "train", color: COLORS[0], points: pts("train_loss") },
      { label: "val", color: COLORS[1], points: pts("val_loss") }] },
    { title: "accuracy (%)", format: asPct, series: [{ label: "train top-1", color: COLORS[0], points: pts("train_top1", 100) },
      { label: "val top-1", color: COLORS[1], points: pts("val_top1", 100) },
      { label: "val top-5", color: COLORS[2], points: pts("val_top5", 100) }] },
    { title: "learning rate", min: 0, series: [{ label: "lr", color: COLORS[4], points: pts("lr") }] },
  ];
  chart($("#curves"), panels);
  const last = h[h.length - 1];
  $("#curves").setAttribute("aria-label", last ? `training curves over ${h.length} epochs; at epoch ${last.epoch}: ` +
    `training loss ${fmt(last.train_loss)}, validation top-1 ${pct(last.val_top1)}, learning rate ${fmt(last.lr)}` : "training curves: no epochs yet");
  renderHealth(h);
}

// The training doctor's record (a "health" key in metrics.jsonl), when the run has one: the layers of the
// newest record, and every alert so far.
function renderHealth(h) {
  const box = $("#health");
  box.replaceChildren();
  const withHealth = h.filter((r) => r.health && typeof r.health === "object");
  if (!withHealth.length) return;
  const last = withHealth[withHealth.length - 1].health;
  const alerts = withHealth.flatMap((r) => r.health.alerts || []);
  box.append(el("h3", { text: `Training health (epoch ${withHealth[withHealth.length - 1].epoch})` }));
  if (alerts.length) {
    const list = el("ul", { class: "alerts", "aria-label": "training alerts" });
    for (const a of alerts) list.append(el("li", { text: `step ${a.step}: ${a.kind}: ${a.message}` }));
    box.append(list);
  }
  const flagged = new Set(alerts.map((a) => (a.message.match(/\b([A-Za-z_]+\d+)\b/) || [])[1]).filter(Boolean));
  const cols = [["layer", "name"], ["act mean", "act_mean"], ["act std", "act_std"], ["dead", "dead_fraction"],
    ["grad norm", "grad_norm"], ["weight norm", "weight_norm"], ["update / weight", "update_ratio"]];
  const table = el("table", { class: "table", id: "health-table" },
    el("tr", {}, ...cols.map(([t], i) => el("th", { class: i ? "num" : "", text: t }))));
  for (const l of last.layers || []) {
    const row = el("tr", {}, ...cols.map(([, k], i) => el("td", { class: i ? "num" : "",
      text: i === 0 ? String(l[k]) : k === "dead_fraction" ? (l[k] === null || l[k] === undefined ? "-" : pct(l[k])) : fmt(l[k]) })));
    if (flagged.has(l.name)) row.classList.add("alert");
    table.append(row);
  }
  box.append(el("div", { class: "scroll" }, table));
}

async function pollMetrics() {
  const id = state.id;
  if (!id) return;
  try {
    const m = await api(runUrl(id, `/metrics?since=${state.lastEpoch}`));
    if (id !== state.id) return;
    if (m.history.length) {
      state.history = state.history.concat(m.history);
      state.lastEpoch = state.history[state.history.length - 1].epoch;
    }
    $("#live").hidden = m.status !== "training";
    $("#live").textContent = m.status === "training" ? `live: epoch ${state.lastEpoch} of ${m.epochs}` : "";
    if (m.history.length || !state.history.length) drawCurves();
    if (state.card && (m.status !== state.status || m.version !== state.version)) {
      state.status = m.status; state.version = m.version;
      await reloadCard();  // ended, or a new checkpoint: the card, the kernels and the results anew
      refreshRuns();
    }
  } catch (e) { /* the next poll tries again */ }
}

// ---------- errors: the confusion matrix and the projection ----------

async function loadErrors() {
  const id = state.id, box = $("#confusion");
  box.replaceChildren();
  $("#cell-images").replaceChildren();
  for (;;) {
    let e;
    try { e = await api(runUrl(id, "/errors")); } catch (err) {
      box.replaceChildren(el("p", { class: "hint", text: err.message }));
      return;
    }
    if (id !== state.id) return;
    if (e.state === "ready") { state.errors = e; break; }
    box.replaceChildren(el("p", { class: "hint", text: "Answering the test images..." }));
    await new Promise((r) => setTimeout(r, 500));
  }
  const e = state.errors;
  state.wrong = new Map(e.images.filter((r) => r[1] !== r[2]).map((r) => [r[0], e.class_names[r[2]]]));
  renderConfusion(e);
  renderTestset(state.card);
  renderProjection();
}

function renderConfusion(e) {
  const box = $("#confusion"), k = e.class_names.length;
  const shown = e.shown < e.total ? `${e.shown} of the ${e.total} test images (evenly spaced)` : `all ${e.total} test images`;
  $("#errors-text").textContent = `The model's answers on ${shown}: ${e.correct} right (${pct(e.correct / e.shown)}). ` +
    "Rows are the true classes, columns the answers; choose a cell to see its images.";
  if (k > 40) { box.replaceChildren(el("p", { class: "hint", text: `${k} classes: too many for a matrix on a page; pick images from the test set instead.` })); return; }
  const table = el("table", { class: "confusion" });
  table.append(el("tr", {}, el("th", { text: "true \\ answer", scope: "col" }), ...e.class_names.map((n) => el("th", { scope: "col", text: n }))));
  const rowsTotal = e.confusion.map((r) => r.reduce((a, b) => a + b, 0));
  e.confusion.forEach((row, i) => {
    const tr = el("tr", {}, el("th", { scope: "row", text: e.class_names[i] }));
    row.forEach((n, j) => {
      const share = rowsTotal[i] ? n / rowsTotal[i] : 0;
      const b = el("button", { "data-cell": `${i},${j}`, "aria-pressed": "false",
        "aria-label": `true ${e.class_names[i]}, answered ${e.class_names[j]}: ${n} images` , text: String(n) });
      const [bg, ink] = cellColours(i === j ? [30, 58, 138] : [153, 27, 27], n ? 0.1 + 0.9 * share : 0);
      b.style.background = bg;
      b.style.color = ink;
      b.disabled = n === 0;
      b.addEventListener("click", () => openCell(i, j, b));
      tr.append(el("td", {}, b));
    });
    table.append(tr);
  });
  box.replaceChildren(table);
}

// A cell's colour (its share over white) and the ink that keeps a contrast of 4.5:1 (WCAG AA) on it: the
// colour is deepened where neither black nor white would.
function cellColours(base, alpha) {
  const lum = (rgb) => rgb.map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
    .reduce((acc, v, k) => acc + [0.2126, 0.7152, 0.0722][k] * v, 0);
  const dark = lum([29, 35, 48]);
  for (let a = alpha; ; a = Math.min(1, a + 0.05)) {
    const rgb = base.map((v) => Math.round(a * v + (1 - a) * 255)), L = lum(rgb);
    const onWhite = 1.05 / (L + 0.05), onDark = (L + 0.05) / (dark + 0.05);
    if (Math.max(onWhite, onDark) >= 4.5 || a >= 1) return [`rgb(${rgb.join(",")})`, onWhite > onDark ? "#fff" : "#1d2330"];
  }
}

function openCell(i, j, button) {
  const e = state.errors, box = $("#cell-images");
  document.querySelectorAll("#confusion button[aria-pressed=true]").forEach((b) => b.setAttribute("aria-pressed", "false"));
  button.setAttribute("aria-pressed", "true");
  const hits = e.images.filter((r) => r[1] === i && r[2] === j);
  box.replaceChildren(el("p", { class: "muted", text: `True ${e.class_names[i]}, answered ${e.class_names[j]}: ${hits.length} image(s)` +
    (hits.length > 60 ? ", the first 60" : "") + "." }));
  for (const [index, , , conf] of hits.slice(0, 60)) {
    const it = { index, url: runUrl(state.id, `/images/test/${index}.png`) };
    const b = thumb(it, `${pct(conf)}`, () => { predict({ test: index, label: e.class_names[i] }); $("#result-panel").scrollIntoView(); });
    box.append(b);
  }
}

async function renderProjection() {
  const canvas = $("#projection"), method = $("#projection-method").value, id = state.id;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "#545f6d"; ctx.font = "13px system-ui, sans-serif";
  ctx.fillText(method === "tsne" ? "computing t-SNE (a few seconds)..." : "computing...", 12, 24);
  let p;
  try { p = await api(runUrl(id, `/projection?method=${method}`)); } catch (e) {
    ctx.clearRect(0, 0, canvas.width, canvas.height); ctx.fillText(e.message.slice(0, 60), 12, 24); return;
  }
  if (id !== state.id) return;
  const names = state.errors ? state.errors.class_names : [];
  const xs = p.points.map((q) => q[0]), ys = p.points.map((q) => q[1]);
  const [xl, xh, yl, yh] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const W = canvas.width, H = canvas.height, m = 12;
  const X = (v) => m + (W - 2 * m) * (v - xl) / ((xh - xl) || 1), Y = (v) => H - m - (H - 2 * m) * (v - yl) / ((yh - yl) || 1);
  ctx.clearRect(0, 0, W, H);
  for (const [a, b, , y, pr] of p.points) {
    ctx.fillStyle = COLORS[y % COLORS.length];
    ctx.beginPath(); ctx.arc(X(a), Y(b), 3, 0, 7); ctx.fill();
    if (y !== pr) { ctx.strokeStyle = "#000"; ctx.lineWidth = 1.5; ctx.beginPath(); ctx.arc(X(a), Y(b), 5.5, 0, 7); ctx.stroke(); }
  }
  canvas.onclick = (ev) => {
    const r = canvas.getBoundingClientRect(), cx = (ev.clientX - r.left) * W / r.width, cy = (ev.clientY - r.top) * H / r.height;
    let best = null, bd = 100;
    for (const q of p.points) { const d = (X(q[0]) - cx) ** 2 + (Y(q[1]) - cy) ** 2; if (d < bd) { bd = d; best = q; } }
    if (best) { predict({ test: best[2], label: names[best[3]] }); $("#result-panel").scrollIntoView(); }
  };
  const legend = $("#projection-legend");
  legend.replaceChildren();
  if (names.length <= 20) names.forEach((n, i) => { const s = el("span", {}, el("i", {}), n); s.firstChild.style.background = COLORS[i % COLORS.length]; legend.append(s); });
  canvas.setAttribute("aria-label", `${p.points.length} test images by their ${p.embedding} vectors, ${method === "pca" ? "PCA" : "t-SNE"}, coloured by class`);
}

// ---------- compare ----------

const DIFF_SKIP = new Set(["data"]);

async function renderCompare() {
  let rows;
  try { rows = await api("/api/compare"); } catch (e) { return; }
  if (state.compareIds === null) state.compareIds = new Set(rows.map((r) => r.id));
  for (const r of rows) if (!state.known || !state.known.has(r.id)) state.compareIds.add(r.id);
  state.known = new Set(rows.map((r) => r.id));
  state.compareRows = rows;
  const table = $("#compare");
  table.replaceChildren(el("tr", {}, ...["plot", "run", "model", "data", "recipe", "epochs", "status", "top-1 error",
    "top-5 error", "train time"].map((t, i) => el("th", { class: i > 6 ? "num" : "", text: t }))));
  for (const r of rows) {
    const res = r.results || {};
    const box = el("input", { type: "checkbox", "aria-label": `plot ${r.id}` });
    box.checked = state.compareIds.has(r.id);
    box.addEventListener("change", () => { if (box.checked) state.compareIds.add(r.id); else state.compareIds.delete(r.id); drawCompare(); });
    table.append(el("tr", {}, el("td", {}, box), el("td", { text: r.id }), el("td", { text: r.model || "-" }), el("td", { text: r.data || "-" }),
      el("td", { text: r.recipe || "-" }), el("td", { text: r.epochs ?? "-" }), el("td", { text: r.status }),
      el("td", { class: "num", text: res.test_top1_error === undefined ? "-" : pct(res.test_top1_error) }),
      el("td", { class: "num", text: res.test_top5_error === undefined ? "-" : pct(res.test_top5_error) }),
      el("td", { class: "num", text: res.train_seconds ? `${res.train_seconds.toFixed(0)} s` : "-" })));
  }
  drawCompare();
}

function drawCompare() {
  const rows = (state.compareRows || []).filter((r) => state.compareIds.has(r.id));
  const metric = $("#compare-metric").value, label = $("#compare-metric").selectedOptions[0].textContent;
  const percent = metric.includes("top");
  chart($("#compare-curves"), [{ title: `${label}${percent ? " (%)" : ""} per epoch`, format: percent ? asPct : undefined,
    min: metric === "lr" ? 0 : undefined, log: false,
    series: rows.map((r) => ({ label: r.id, color: COLORS[state.compareRows.indexOf(r) % COLORS.length],
      points: r.history.map((h) => [h.epoch, h[metric] === null || h[metric] === undefined ? null : (percent ? 100 : 1) * h[metric]]) })) }]);
  const flat = rows.map((r) => {
    const c = { model: r.model, ...(r.config || {}) };
    const opts = c.model_opts || {};
    delete c.model_opts;
    for (const [k, v] of Object.entries(opts)) c[`model: ${k}`] = v;
    return c;
  });
  const keys = [...new Set(flat.flatMap((c) => Object.keys(c)))].filter((k) => !DIFF_SKIP.has(k))
    .filter((k) => new Set(flat.map((c) => JSON.stringify(c[k] ?? null))).size > 1).sort();
  const table = $("#config-diff");
  table.replaceChildren();
  if (rows.length < 2) { table.append(el("tr", {}, el("td", { text: "Tick two runs or more to see where they differ." }))); return; }
  if (!keys.length) { table.append(el("tr", {}, el("td", { text: "The ticked runs share every setting." }))); return; }
  table.append(el("tr", {}, el("th", { text: "setting" }), ...rows.map((r) => el("th", { text: r.id }))));
  for (const k of keys) table.append(el("tr", {}, el("td", { text: k }),
    ...flat.map((c) => el("td", { text: c[k] === undefined ? "-" : typeof c[k] === "object" ? JSON.stringify(c[k]) : String(c[k]) }))));
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

const tabs = [...document.querySelectorAll("[role=tab]")];
function selectTab(b, focus) {
  for (const t of tabs) {
    const on = t === b;
    t.setAttribute("aria-selected", String(on));
    t.tabIndex = on ? 0 : -1;
    $(`#${t.getAttribute("aria-controls")}`).hidden = !on;
  }
  if (focus) b.focus();
}
tabs.forEach((b, i) => {
  b.addEventListener("click", () => selectTab(b, false));
  b.addEventListener("keydown", (ev) => {  // the ARIA tabs pattern: arrows move between tabs, Home / End
    const to = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[ev.key];
    if (to === undefined) return;
    ev.preventDefault();
    selectTab(tabs[(to + tabs.length) % tabs.length], true);
  });
});
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
$("#zoom-close").addEventListener("click", () => $("#zoom").close());
$("#zoom").addEventListener("close", () => { if (state.unit && state.unit.opener) state.unit.opener.focus(); });
$("#zoom").addEventListener("click", (ev) => {  // a click on the backdrop (outside the dialog's box) closes it
  const r = $("#zoom").getBoundingClientRect();
  if (ev.target.id === "zoom" && (ev.clientX < r.left || ev.clientX > r.right || ev.clientY < r.top || ev.clientY > r.bottom)) $("#zoom").close();
});
$("#zoom-map").addEventListener("keydown", zoomKeys);
$("#zoom").addEventListener("keydown", (ev) => {  // Tab cycles inside the dialog (showModal alone lets it leave the page)
  if (ev.key !== "Tab") return;
  const items = [...$("#zoom").querySelectorAll("button, [href], [tabindex]:not([tabindex='-1'])")].filter((n) => !n.disabled && n.offsetParent);
  if (!items.length) return;
  const i = items.indexOf(document.activeElement), last = items.length - 1;
  if (ev.shiftKey && i <= 0) { ev.preventDefault(); items[last].focus(); }
  else if (!ev.shiftKey && (i === last || i < 0)) { ev.preventDefault(); items[0].focus(); }
});
$("#zoom-map").addEventListener("click", (ev) => {
  const u = state.unit, c = $("#zoom-map"), r = c.getBoundingClientRect();
  u.x = Math.min(u.l.width - 1, Math.floor((ev.clientX - r.left) / r.width * u.l.width));
  u.y = Math.min(u.l.height - 1, Math.floor((ev.clientY - r.top) / r.height * u.l.height));
  drawZoomMap();
  explainUnit();
});
$("#across").addEventListener("click", acrossRuns);
$("#log-scale").addEventListener("change", drawCurves);
$("#compare-metric").addEventListener("change", drawCompare);
$("#projection-method").addEventListener("change", renderProjection);
$("#only-wrong").addEventListener("change", () => state.card && renderTestset(state.card));
new ResizeObserver(() => document.documentElement.style.setProperty("--header-h", `${$("#top").offsetHeight}px`)).observe($("#top"));

clearDrawing();
drawColorbar();
renderSamples().catch((e) => showMessage(e.message));
loadRuns().catch((e) => showMessage(e.message));
setInterval(pollMetrics, 2000);
setInterval(refreshRuns, 5000);
