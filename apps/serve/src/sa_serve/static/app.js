// sa-serve web page: one tab per served model; nothing is loaded from another host (the NIfTI viewer,
// NiiVue, is vendored under /static/vendor/ by scripts/vendor-niivue at build time).
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
};

function token() { return sessionStorage.getItem("sa-serve-token") || ""; }
function authHeaders() { const t = token(); return t ? { Authorization: "Bearer " + t } : {}; }

async function errorText(resp) {
  let msg = resp.statusText;
  try { const j = await resp.json(); msg = typeof j.detail === "string" ? j.detail : JSON.stringify(j.detail); } catch (e) { /* not JSON */ }
  const retry = resp.headers.get("Retry-After");
  const hint = resp.status === 401 ? " (enter the server's token at the top)" : resp.status === 503 && retry ? ` (retry in ${retry} s)` : "";
  return `Rejected (HTTP ${resp.status}): ${msg}${hint}`;
}

function b64ToBlob(b64, type) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Blob([bytes], { type });
}
const blobUrl = (b64, type) => URL.createObjectURL(b64ToBlob(b64, type));
const isFiniteNumber = (v) => typeof v === "number" && Number.isFinite(v);
const fmt = (v) => (Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(2) : v.toFixed(3));

async function post(domain, body, isJson) {
  const headers = authHeaders();
  let payload = body;
  if (isJson) { headers["Content-Type"] = "application/json"; }
  else { payload = new FormData(); payload.append("file", body, body.name || "upload"); }
  return fetch(`/v1/${domain}/predict`, { method: "POST", headers, body: payload });
}

// An image box of the input's aspect whose longer side is at most maxSide CSS pixels (small inputs are enlarged).
function fitBox(box, w, h, maxSide = 640) {
  box.style.width = `min(100%, ${Math.round(maxSide * Math.min(1, w / h))}px)`;
  return box;
}

async function loadedImage(src, attrs = {}) {
  const img = el("img", { ...attrs, src });
  await img.decode();
  return img;
}

// ------------------------------------------------------------------------------------------- panels

// One run of a panel: the status line always ends in "done ..." or "failed: ..." (never stuck on running).
async function runRequest(ctx, send, render) {
  const { status, error, result } = ctx;
  error.hidden = true; result.replaceChildren();
  status.className = "status"; status.textContent = "running\u2026";
  const t0 = performance.now();
  const fail = (shortText, longText) => {
    status.className = "status failed"; status.textContent = "failed: " + shortText;
    error.textContent = longText; error.hidden = false;
  };
  let resp;
  try { resp = await send(); } catch (e) { fail("no answer from the server", "Request failed: " + e); return; }
  if (!resp.ok) { const text = await errorText(resp); fail(`HTTP ${resp.status}`, text); return; }
  try { await render(resp, result); } catch (e) { fail("the answer could not be shown", "Could not show the result: " + e); return; }
  status.textContent = `done in ${((performance.now() - t0) / 1000).toFixed(2)} s`;
}

function panelShell(domain, model) {
  const panel = el("section", { class: "panel", id: `panel-${domain}`, role: "tabpanel", "aria-labelledby": `tab-${domain}` });
  const status = el("span", { class: "status", role: "status", "data-testid": `${domain}-status` });
  const error = el("div", { class: "error", hidden: "" });
  const result = el("div", { class: "result", "data-testid": `${domain}-result` });
  panel.append(describe(model));
  return { panel, status, error, result };
}

function filePanel(domain, model, accept, label, render) {
  const ctx = panelShell(domain, model);
  const input = el("input", { type: "file", accept, "data-testid": `${domain}-file` });
  const button = el("button", { type: "button", "data-testid": `${domain}-run` }, label);
  ctx.panel.append(el("div", { class: "controls" }, input, button, ctx.status), ctx.error, ctx.result);
  button.addEventListener("click", () => {
    const file = input.files[0];
    if (!file) {
      ctx.status.className = "status failed"; ctx.status.textContent = "failed: no file chosen";
      ctx.error.textContent = "Choose a file first."; ctx.error.hidden = false; return;
    }
    runRequest(ctx, () => post(domain, file, false), (resp, result) => render(resp, file, result));
  });
  return ctx.panel;
}

function jsonPanel(domain, model, example, label, render) {
  const ctx = panelShell(domain, model);
  const area = el("textarea", { "data-testid": `${domain}-json`, spellcheck: "false" });
  area.value = example;
  const button = el("button", { type: "button", "data-testid": `${domain}-run` }, label);
  ctx.panel.append(area, el("div", { class: "controls" }, button, ctx.status), ctx.error, ctx.result);
  button.addEventListener("click", () => {
    let parsed;
    try { parsed = JSON.parse(area.value); } catch (e) {
      ctx.status.className = "status failed"; ctx.status.textContent = "failed: not valid JSON";
      ctx.error.textContent = "Not valid JSON: " + e.message; ctx.error.hidden = false; return;
    }
    runRequest(ctx, () => post(domain, JSON.stringify(parsed), true), (resp, result) => render(resp, parsed, result));
  });
  return ctx.panel;
}

// A model whose run could not be loaded: its reason instead of a form (the other models keep serving).
function failedPanel(domain, model) {
  const panel = el("section", { class: "panel", id: `panel-${domain}`, role: "tabpanel", "aria-labelledby": `tab-${domain}` });
  panel.append(
    el("p", { class: "muted" }, `${model.source || domain}`),
    el("div", { class: "error", "data-testid": `${domain}-load-error` },
      `This model failed to load, so it cannot be run: ${model.error || "no reason given"}`),
  );
  return panel;
}

function describe(model) {
  const io = model.io || {};
  const inputs = (io.inputs || []).map((f) => `${f.name} (${f.kind}${f.shape ? ", " + f.shape : ""}): ${f.description || ""}`);
  const limits = model.limits ? ` Upload limit ${(model.limits.max_upload_bytes / 1048576).toFixed(0)} MiB.` : "";
  const params = model.parameters ? ` ${model.parameters.toLocaleString()} parameters.` : "";
  return el("p", { class: "muted" }, `${model.source || ""}.${params}${limits} Input: ${inputs.join("; ")}`);
}

function slider(labelText, initial, onInput, testid) {
  const attrs = { type: "range", min: "0", max: "100", value: String(initial) };
  if (testid) attrs["data-testid"] = testid;
  const range = el("input", attrs);
  const shown = el("span", { class: "value" });
  const apply = () => { shown.textContent = range.value + " %"; onInput(Number(range.value)); };
  range.addEventListener("input", apply);
  apply();
  return el("label", { class: "controls" }, labelText + " ", range, shown);
}

// -------------------------------------------------------------------------------------- restoration

async function renderRestoration(resp, file, result) {
  const afterUrl = URL.createObjectURL(await resp.blob());
  const beforeUrl = URL.createObjectURL(file);
  const after = el("img", { class: "after", src: afterUrl, alt: "model output", "data-testid": "restoration-after" });
  const before = el("img", { class: "before", src: beforeUrl, alt: "input (upscaled by the browser)" });
  const divider = el("div", { class: "divider" });
  const box = el("div", { class: "compare" }, after, before, divider);
  const info = el("p", { class: "muted" });
  after.addEventListener("load", () => { info.textContent = `output ${after.naturalWidth}\u00d7${after.naturalHeight}; left of the line: input, right: model output`; });
  const s = slider("before / after", 50, (v) => { before.style.clipPath = `inset(0 ${100 - v}% 0 0)`; divider.style.left = v + "%"; });
  const dl = el("a", { href: afterUrl, download: (file.name || "image").replace(/\.[^.]*$/, "") + "_sr.png" }, "download PNG");
  result.append(s, box, info, dl);
}

// ------------------------------------------------------------------------------------------ anomaly

// The JET colour map (what the anomaly predictor paints its heatmap with), as CSS gradient stops.
const JET_STOPS = [[0, "#000080"], [0.125, "#0000ff"], [0.375, "#00ffff"], [0.625, "#ffff00"], [0.875, "#ff0000"], [1, "#800000"]];

function colourLegend(lo, hi, testid) {
  const bar = el("span", { class: "gradient" });
  bar.style.background = `linear-gradient(to right, ${JET_STOPS.map(([p, c]) => `${c} ${p * 100}%`).join(", ")})`;
  return el("div", { class: "legend", "data-testid": testid },
    el("span", { class: "lo", "data-testid": `${testid}-min` }, lo), bar, el("span", { class: "hi", "data-testid": `${testid}-max` }, hi));
}

async function renderAnomaly(resp, file, result) {
  const j = await resp.json();
  const hasThreshold = isFiniteNumber(j.threshold);
  const anomalous = hasThreshold && j.score > j.threshold;
  const verdict = !hasThreshold ? "no threshold calibrated" : anomalous ? "ANOMALOUS" : "normal";
  const box = el("div", { class: "score-box" + (anomalous ? " anomalous" : ""), "data-testid": "anomaly-score" },
    `score ${Number(j.score).toFixed(4)}` + (hasThreshold ? ` (threshold ${Number(j.threshold).toFixed(4)})` : "") + ` \u2014 ${verdict}`);
  const heat = await loadedImage(blobUrl(j.heatmap_png, "image/png"), { class: "overlay", alt: "anomaly heatmap", "data-testid": "anomaly-heatmap" });
  const [hw, hh] = [heat.naturalWidth, heat.naturalHeight];
  const hasRange = isFiniteNumber(j.heatmap_min) && isFiniteNumber(j.heatmap_max);
  const legend = colourLegend(hasRange ? fmt(j.heatmap_min) : "low", hasRange ? fmt(j.heatmap_max) : "high", "anomaly-legend");
  const s = slider("heatmap opacity", 50, (v) => { heat.style.opacity = String(v / 100); }, "anomaly-opacity");
  let base = null;  // a format the browser cannot show (TIFF): the heatmap alone
  try { base = await loadedImage(URL.createObjectURL(file), { class: "base", alt: "input", "data-testid": "anomaly-input" }); } catch (e) { /* shown below */ }
  const [iw, ih] = base ? [base.naturalWidth, base.naturalHeight] : [hw, hh];
  // Registered (same aspect as the input): drawn over the input at its displayed size. A map of another aspect
  // (an older predictor's centre crop) is never stretched over the input: it is shown next to it.
  const registered = Math.abs(hw * ih - hh * iw) <= Math.max(iw, ih);
  let figure, note;
  if (!base) {
    heat.className = "side";
    figure = heat;
    note = `heatmap ${hw}\u00d7${hh}; this browser cannot display the uploaded image itself`;
  } else if (registered) {
    figure = fitBox(el("div", { class: "stack", "data-testid": "anomaly-stack" }, base, heat), iw, ih);
    note = `heatmap ${hw}\u00d7${hh} over the input ${iw}\u00d7${ih}`;
  } else {
    heat.className = "side";
    figure = el("div", { class: "row" }, fitBox(el("div", { class: "stack" }, base), iw, ih, 480), heat);
    note = `the heatmap (${hw}\u00d7${hh}) covers the part of the input the model saw (input ${iw}\u00d7${ih}); it is shown next to the input, not stretched over it`;
  }
  result.append(box, el("div", { class: "controls" }, s, legend), figure, el("p", { class: "muted" }, note));
}

// ------------------------------------------------------------------------------------------- medseg

// Label colours by label id (0 = background, transparent); the same in the PNG overlay and the NIfTI viewer.
const LABEL_COLOURS = [[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 225, 25], [245, 130, 48],
  [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [170, 110, 40]];

function labelColour(k) {
  if (k < LABEL_COLOURS.length) return LABEL_COLOURS[k];
  const h = (k * 137.508) % 360, s = 0.7, l = 0.55;  // golden-angle hues beyond the table
  const f = (n) => { const a = s * Math.min(l, 1 - l); const t = (n + h / 30) % 12; return Math.round(255 * (l - a * Math.max(-1, Math.min(t - 3, 9 - t, 1)))); };
  return [f(0), f(8), f(4)];
}
const rgb = (c) => `rgb(${c[0]}, ${c[1]}, ${c[2]})`;

function labelLegend(classes) {
  const legend = el("ul", { class: "label-legend", "data-testid": "medseg-legend" });
  classes.forEach((name, k) => {
    const swatch = el("span", { class: "swatch" + (k === 0 ? " clear" : "") });
    if (k > 0) swatch.style.background = rgb(labelColour(k));
    legend.append(el("li", {}, swatch, `${k}: ${name}${k === 0 ? " (not drawn)" : ""}`));
  });
  return legend;
}

// The PNG label map (one grey value per label id) painted with the label colours, at the labels' own size.
async function labelCanvas(labelsB64) {
  const bitmap = await createImageBitmap(b64ToBlob(labelsB64, "image/png"));
  const canvas = el("canvas", { class: "overlay", width: String(bitmap.width), height: String(bitmap.height), "data-testid": "medseg-overlay" });
  const g = canvas.getContext("2d");
  g.drawImage(bitmap, 0, 0);
  const px = g.getImageData(0, 0, bitmap.width, bitmap.height);
  const d = px.data;
  for (let i = 0; i < d.length; i += 4) {
    const k = d[i];
    if (k === 0) { d[i + 3] = 0; continue; }
    const c = labelColour(k);
    d[i] = c[0]; d[i + 1] = c[1]; d[i + 2] = c[2]; d[i + 3] = 255;
  }
  g.putImageData(px, 0, 0);
  return canvas;
}

async function renderMedsegSlice(j, file, result) {
  const base = await loadedImage(URL.createObjectURL(file), { class: "base", alt: "input slice", "data-testid": "medseg-input" });
  let overlay;
  if (j.labels_png) overlay = await labelCanvas(j.labels_png);
  else overlay = await loadedImage(blobUrl(j.overlay_png, "image/png"), { class: "overlay", alt: "label overlay", "data-testid": "medseg-overlay" });
  const w = overlay.width || overlay.naturalWidth, h = overlay.height || overlay.naturalHeight;
  const s = slider("label opacity", 50, (v) => { overlay.style.opacity = String(v / 100); }, "medseg-opacity");
  const same = w === base.naturalWidth && h === base.naturalHeight;
  const note = same ? `labels ${w}\u00d7${h}, registered to the input slice` : `labels ${w}\u00d7${h} drawn over the input ${base.naturalWidth}\u00d7${base.naturalHeight}`;
  result.append(s, el("div", { class: "row" }, fitBox(el("div", { class: "stack", "data-testid": "medseg-stack" }, base, overlay), base.naturalWidth, base.naturalHeight), labelLegend(j.classes || [])),
    el("p", { class: "muted" }, note));
  if (j.labels_png) result.append(el("p", {}, el("a", { href: blobUrl(j.labels_png, "image/png"), download: "labels.png" }, "download label map (PNG)")));
}

// NiiVue, loaded once from the vendored bundle; rejects with a clear message when it was not vendored.
const NIIVUE_URL = "/static/vendor/niivue.js";
let niivueModule = null;
function loadNiivue() {
  if (!niivueModule) {
    niivueModule = import(NIIVUE_URL).catch(() => {
      throw new Error("The slice viewer (NiiVue) is not installed on this server: run scripts/vendor-niivue "
        + "(part of the bootstrap) and reload. The predicted label volume can still be downloaded.");
    });
  }
  return niivueModule;
}

const VIEWS = [["axial", "sliceTypeAxial", 2], ["coronal", "sliceTypeCoronal", 1], ["sagittal", "sliceTypeSagittal", 0], ["all three", "sliceTypeMultiplanar", -1]];

async function renderMedsegVolume(j, file, result) {
  const classes = j.classes || [];
  const labelsUrl = blobUrl(j.labels_nifti, "application/gzip");
  const download = el("p", {}, el("a", { href: labelsUrl, download: "labels.nii.gz", "data-testid": "medseg-nifti" }, "download label volume (NIfTI, input affine kept)"));
  let mod;
  try { mod = await loadNiivue(); } catch (e) {
    result.append(el("div", { class: "note warn", "data-testid": "medseg-viewer-missing" }, e.message), labelLegend(classes), download);
    return;
  }
  try {
    await niftiViewer(mod, file, labelsUrl, classes, result);
  } catch (e) {  // no WebGL2, or a volume NiiVue cannot read: the legend and the download stay
    result.append(el("div", { class: "note warn", "data-testid": "medseg-viewer-error" }, "The slice viewer could not show this volume: " + e));
  }
  result.append(download);
}

let liveViewer = null;  // the WebGL context of the last volume shown (released when the next one replaces it)

async function niftiViewer(mod, file, labelsUrl, classes, result) {
  if (liveViewer) { const ext = liveViewer.getExtension("WEBGL_lose_context"); if (ext) ext.loseContext(); liveViewer = null; }
  const canvas = el("canvas", { "data-testid": "medseg-viewer" });
  const holder = el("div", { class: "viewer" }, canvas);
  const where = el("p", { class: "muted", "data-testid": "medseg-location" });
  const sliceRange = el("input", { type: "range", min: "0", max: "0", value: "0", "data-testid": "medseg-slice" });
  const sliceText = el("span", { class: "value" });
  const viewButtons = el("span", { class: "views", role: "group", "aria-label": "slice orientation" });
  const toolbar = el("div", { class: "controls" }, viewButtons, el("label", {}, "slice ", sliceRange, sliceText));
  result.append(toolbar, el("div", { class: "row" }, holder, labelLegend(classes)), where);

  const nv = new mod.Niivue({ backColor: [0, 0, 0, 1], show3Dcrosshair: false, crosshairColor: [1, 1, 0, 0.6],
    crosshairWidth: 0.4, crosshairWidthUnit: "percent",
    dragAndDropEnabled: false, isColorbar: false, logLevel: "error", loadingText: "loading..." });
  await nv.attachToCanvas(canvas);
  liveViewer = nv.gl;
  const inputName = /\.nii(\.gz)?$/i.test(file.name || "") ? file.name : "input.nii.gz";
  await nv.loadVolumes([
    { url: URL.createObjectURL(file), name: inputName, colormap: "gray" },
    { url: labelsUrl, name: "labels.nii.gz", opacity: 0.5 },
  ]);
  const cm = { R: [], G: [], B: [], A: [], I: [], labels: [] };
  const n = Math.max(classes.length, 2);
  for (let k = 0; k < n; k++) {
    const c = labelColour(k);
    cm.R.push(c[0]); cm.G.push(c[1]); cm.B.push(c[2]); cm.A.push(k === 0 ? 0 : 255); cm.I.push(k); cm.labels.push(classes[k] || String(k));
  }
  nv.volumes[1].setColormapLabel(cm);
  nv.updateGLVolume();

  const dims = nv.volumes[0].dimsRAS;  // [3, X, Y, Z] in RAS order (the viewer's axes)
  let axis = 2;
  const syncSlider = () => {
    if (axis < 0) { sliceRange.disabled = true; sliceText.textContent = "(click or scroll in a view)"; return; }
    const vox = nv.frac2vox(nv.scene.crosshairPos);
    sliceRange.disabled = false;
    sliceRange.max = String(dims[axis + 1] - 1);
    sliceRange.value = String(vox[axis]);
    sliceText.textContent = `${vox[axis] + 1} / ${dims[axis + 1]}`;
  };
  sliceRange.addEventListener("input", () => {
    if (axis < 0) return;
    const delta = [0, 0, 0];
    delta[axis] = Number(sliceRange.value) - nv.frac2vox(nv.scene.crosshairPos)[axis];
    nv.moveCrosshairInVox(delta[0], delta[1], delta[2]);
  });
  nv.onLocationChange = (loc) => {
    syncSlider();
    const label = loc.values && loc.values[1] ? Math.round(loc.values[1].value) : null;
    const voxel = loc.values && loc.values[0] ? loc.values[0].vox : loc.vox;
    where.textContent = `voxel (${Array.from(voxel).join(", ")}) of the input`
      + (label !== null ? `, label ${label}${classes[label] ? " (" + classes[label] + ")" : ""}` : "");
  };
  for (const [name, key, ax] of VIEWS) {
    const b = el("button", { type: "button", "data-testid": `medseg-view-${name.replace(/ /g, "-")}`, "aria-pressed": String(ax === 2) }, name);
    b.addEventListener("click", () => {
      axis = ax;
      for (const other of viewButtons.children) other.setAttribute("aria-pressed", String(other === b));
      nv.setSliceType(nv[key]);
      syncSlider();
    });
    viewButtons.append(b);
  }
  const s = slider("label opacity", 50, (v) => nv.setOpacity(1, v / 100), "medseg-opacity");
  toolbar.append(s);
  nv.setSliceType(nv.sliceTypeAxial);
  syncSlider();
  where.textContent = `volume ${dims.slice(1).join("\u00d7")} voxels; scroll or drag the slider to move through the slices, click to pick a point`;
  canvas.dataset.ready = "true";
}

async function renderMedseg(resp, file, result) {
  const j = await resp.json();
  if (j.labels_nifti) await renderMedsegVolume(j, file, result);  // a volume: slices in NiiVue, never an <img>
  else if (j.labels_png || j.overlay_png) await renderMedsegSlice(j, file, result);
  else result.append(el("pre", {}, JSON.stringify(j, null, 2)));
}

// ------------------------------------------------------------------------------------ speech, ranking

async function renderSpeech(resp, file, result) {
  const j = await resp.json();
  result.append(el("p", {}, `mixture (${j.sample_rate} Hz)`), el("audio", { controls: "", src: URL.createObjectURL(file) }));
  j.sources_wav.forEach((b64, i) => {
    const url = blobUrl(b64, "audio/wav");
    result.append(el("p", {}, `speaker ${i + 1} `, el("a", { href: url, download: `speaker${i + 1}.wav` }, "download")),
      el("audio", { controls: "", src: url, "data-testid": `speechsep-source-${i}` }));
  });
}

async function renderRanking(resp, candidates, result) {
  const j = await resp.json();
  const rows = j.scores.map((s, i) => ({ i, s })).sort((a, b) => b.s - a.s);
  const table = el("table", { class: "scores", "data-testid": "ranking-table" },
    el("tr", {}, el("th", {}, "rank"), el("th", {}, "candidate #"), el("th", {}, "score"), el("th", {}, "candidate")));
  const list = Array.isArray(candidates) ? candidates : candidates.candidates || [];
  rows.forEach((r, k) => table.append(el("tr", {}, el("td", {}, String(k + 1)), el("td", {}, String(r.i)),
    el("td", {}, Number(r.s).toFixed(4)), el("td", {}, JSON.stringify(list[r.i] || "").slice(0, 120)))));
  result.append(table);
}

async function renderJson(resp, _input, result) {
  result.append(el("pre", { "data-testid": "json-result" }, JSON.stringify(await resp.json(), null, 2)));
}

// Candidate rows built from a feature schema ({"dense": [...], "sparse": [...]}, fields as names or objects):
// two rows with different values, so that clicking run at once shows two different scores.
function exampleFromSchema(schema) {
  const fields = (list) => (Array.isArray(list) ? list : []).map((f) => (typeof f === "string" ? { name: f } : f)).filter((f) => f && f.name);
  const dense = fields(schema.dense), sparse = fields(schema.sparse);
  if (!dense.length && !sparse.length) return null;
  return [0, 1].map((r) => {
    const row = {};
    for (const f of dense) row[f.name] = r === 0 ? 0.5 : 1.5;
    for (const f of sparse) {
      const id = r + 1;
      const one = (k) => (f.encoding === "hex" ? k.toString(16).padStart(8, "0") : f.encoding === "hash" ? `value${k}` : k);
      row[f.name] = f.multi_hot ? [one(id), one(id + 2)] : one(id);
    }
    return row;
  });
}

function examplesFor(domain, model) {
  const io = model.io || {};
  const first = (io.inputs && io.inputs[0]) || {};
  const ex = (first.constraints || {}).example ?? first.example ?? model.example;
  if (ex !== undefined && ex !== null) return JSON.stringify(ex, null, 2);
  const schema = model.schema || (first.constraints || {}).schema;
  const built = schema && typeof schema === "object" ? exampleFromSchema(schema) : null;
  if (built) return JSON.stringify(built, null, 2);
  if (domain === "toy") return JSON.stringify({ sequences: [[2, 5, 1, 7, 3, 0, 4, 6, 2, 1]] });
  return "[]";
}

// The panel comes from the predictor's I/O spec (its "view", decided from the kinds of its fields), never
// from the domain's name: a new domain with the same kinds of inputs and outputs gets the same page.
function acceptOf(model) {
  const types = (((model.io || {}).inputs || [{}])[0].media_types || []);
  const extra = types.includes("application/gzip") ? [".nii", ".nii.gz", ".gz"] : [];
  return [...types, ...extra].join(",") || "*/*";
}

function volumeNote(panel) {
  const note = el("div", { class: "note warn", hidden: "", "data-testid": "medseg-viewer-missing" });
  panel.insertBefore(note, panel.children[1] || null);
  loadNiivue().catch((e) => { note.textContent = e.message; note.hidden = false; });
  return panel;
}

function buildPanel(domain, model) {
  if (model.state === "failed") return failedPanel(domain, model);
  const view = (model.io || {}).view || "file";
  const accept = acceptOf(model);
  if (view === "image-to-image") return filePanel(domain, model, accept, "Run", renderRestoration);
  if (view === "image-heatmap") return filePanel(domain, model, accept, "Score", renderAnomaly);
  if (view === "volume-segmentation") return volumeNote(filePanel(domain, model, accept, "Segment", renderMedseg));
  if (view === "audio-sources") return filePanel(domain, model, accept, "Separate", renderSpeech);
  if (view === "json-scores") return jsonPanel(domain, model, examplesFor(domain, model), "Score candidates", renderRanking);
  if (view === "json") return jsonPanel(domain, model, examplesFor(domain, model), "Run", renderJson);
  return filePanel(domain, model, accept, "Run", renderJson);
}

function select(domain) {
  for (const b of document.querySelectorAll("#tabs button")) b.setAttribute("aria-selected", String(b.dataset.domain === domain));
  for (const p of document.querySelectorAll("#panels section")) p.hidden = p.id !== `panel-${domain}`;
  location.hash = domain;
}

async function init() {
  $("#token").value = token();
  const gerr = $("#global-error");
  gerr.hidden = true;
  let resp;
  try { resp = await fetch("/v1/info", { headers: authHeaders() }); } catch (e) { gerr.textContent = "Server unreachable: " + e; gerr.hidden = false; return; }
  if (!resp.ok) { gerr.textContent = await errorText(resp); gerr.hidden = false; return; }
  const info = await resp.json();
  const failed = Object.values(info.models).filter((m) => m.state === "failed").length;
  $("#server-line").textContent = `v${info.server.version} \u00b7 ${Object.keys(info.models).length} model(s)` + (failed ? ` \u00b7 ${failed} failed to load` : "");
  const tabs = $("#tabs"), panels = $("#panels");
  tabs.replaceChildren(); panels.replaceChildren();
  for (const [domain, model] of Object.entries(info.models)) {
    const attrs = { type: "button", role: "tab", "data-domain": domain, id: `tab-${domain}` };
    if (model.state === "failed") { attrs.class = "failed"; attrs.title = "failed to load: " + (model.error || ""); }
    const b = el("button", attrs, domain);
    b.addEventListener("click", () => select(domain));
    tabs.append(b);
    panels.append(buildPanel(domain, model));
  }
  const first = Object.keys(info.models)[0];
  const wanted = location.hash.slice(1);
  if (first) select(info.models[wanted] ? wanted : first);
  else { gerr.textContent = "This server has no models loaded."; gerr.hidden = false; }
}

$("#token-apply").addEventListener("click", () => { sessionStorage.setItem("sa-serve-token", $("#token").value.trim()); init(); });
init();
