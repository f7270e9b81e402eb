// sa-serve web page: one tab per served model; no external resources.
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

async function post(domain, body, isJson) {
  const headers = authHeaders();
  let payload = body;
  if (isJson) { headers["Content-Type"] = "application/json"; }
  else { payload = new FormData(); payload.append("file", body, body.name || "upload"); }
  return fetch(`/v1/${domain}/predict`, { method: "POST", headers, body: payload });
}

// ------------------------------------------------------------------------------------------- panels

function filePanel(domain, model, accept, label, render) {
  const panel = el("section", { class: "panel", id: `panel-${domain}`, role: "tabpanel" });
  const input = el("input", { type: "file", accept, "data-testid": `${domain}-file` });
  const button = el("button", { type: "button", "data-testid": `${domain}-run` }, label);
  const status = el("span", { class: "status" });
  const error = el("div", { class: "error", hidden: "" });
  const result = el("div", { class: "result", "data-testid": `${domain}-result` });
  panel.append(describe(model), el("div", { class: "controls" }, input, button, status), error, result);
  button.addEventListener("click", async () => {
    error.hidden = true; result.replaceChildren();
    const file = input.files[0];
    if (!file) { error.textContent = "Choose a file first."; error.hidden = false; return; }
    status.textContent = "running\u2026";
    const t0 = performance.now();
    try {
      const resp = await post(domain, file, false);
      if (!resp.ok) { error.textContent = await errorText(resp); error.hidden = false; status.textContent = ""; return; }
      await render(resp, file, result);
      status.textContent = `done in ${((performance.now() - t0) / 1000).toFixed(2)} s`;
    } catch (e) {
      error.textContent = "Request failed: " + e; error.hidden = false; status.textContent = "";
    }
  });
  return panel;
}

function jsonPanel(domain, model, example, label, render) {
  const panel = el("section", { class: "panel", id: `panel-${domain}`, role: "tabpanel" });
  const area = el("textarea", { "data-testid": `${domain}-json`, spellcheck: "false" });
  area.value = example;
  const button = el("button", { type: "button", "data-testid": `${domain}-run` }, label);
  const status = el("span", { class: "status" });
  const error = el("div", { class: "error", hidden: "" });
  const result = el("div", { class: "result", "data-testid": `${domain}-result` });
  panel.append(describe(model), area, el("div", { class: "controls" }, button, status), error, result);
  button.addEventListener("click", async () => {
    error.hidden = true; result.replaceChildren();
    let parsed;
    try { parsed = JSON.parse(area.value); } catch (e) { error.textContent = "Not valid JSON: " + e.message; error.hidden = false; return; }
    status.textContent = "running\u2026";
    const resp = await post(domain, JSON.stringify(parsed), true);
    if (!resp.ok) { error.textContent = await errorText(resp); error.hidden = false; status.textContent = ""; return; }
    await render(resp, parsed, result);
    status.textContent = "done";
  });
  return panel;
}

function describe(model) {
  const io = model.io || {};
  const inputs = (io.inputs || []).map((f) => `${f.name} (${f.kind}${f.shape ? ", " + f.shape : ""}): ${f.description || ""}`);
  const limits = model.limits ? ` Upload limit ${(model.limits.max_upload_bytes / 1048576).toFixed(0)} MiB.` : "";
  const params = model.parameters ? ` ${model.parameters.toLocaleString()} parameters.` : "";
  return el("p", { class: "muted" }, `${model.source || ""}.${params}${limits} Input: ${inputs.join("; ")}`);
}

function slider(labelText, initial, onInput) {
  const range = el("input", { type: "range", min: "0", max: "100", value: String(initial) });
  range.addEventListener("input", () => onInput(Number(range.value)));
  onInput(initial);
  return el("label", { class: "controls" }, labelText + " ", range);
}

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

async function renderAnomaly(resp, file, result) {
  const j = await resp.json();
  const anomalous = j.threshold !== null && j.threshold !== undefined && j.score > j.threshold;
  const verdict = j.threshold === null || j.threshold === undefined ? "no threshold calibrated" : anomalous ? "ANOMALOUS" : "normal";
  const box = el("div", { class: "score-box" + (anomalous ? " anomalous" : ""), "data-testid": "anomaly-score" },
    `score ${Number(j.score).toFixed(4)}` + (j.threshold != null ? ` (threshold ${Number(j.threshold).toFixed(4)})` : "") + ` \u2014 ${verdict}`);
  const base = el("img", { src: URL.createObjectURL(file), alt: "input" });
  const overlay = el("img", { class: "overlay", src: blobUrl(j.heatmap_png, "image/png"), alt: "anomaly heatmap", "data-testid": "anomaly-heatmap" });
  const s = slider("heatmap opacity", 100, (v) => { overlay.style.opacity = v / 100; });
  result.append(box, s, el("div", { class: "stack" }, base, overlay));
}

async function renderMedseg(resp, file, result) {
  const j = await resp.json();
  if (j.classes) result.append(el("p", {}, "classes: " + j.classes.join(", ")));
  if (j.overlay_png || j.labels_png) {
    const base = el("img", { src: URL.createObjectURL(file), alt: "input slice" });
    const overlay = el("img", { class: "overlay", src: blobUrl(j.overlay_png || j.labels_png, "image/png"), alt: "label overlay", "data-testid": "medseg-overlay" });
    const s = slider("label opacity", 70, (v) => { overlay.style.opacity = v / 100; });
    result.append(s, el("div", { class: "stack" }, base, overlay));
    if (j.labels_png) result.append(el("p", {}, el("a", { href: blobUrl(j.labels_png, "image/png"), download: "labels.png" }, "download label map (PNG)")));
  }
  if (j.labels_nifti) {
    result.append(el("p", {}, el("a", { href: blobUrl(j.labels_nifti, "application/gzip"), download: "labels.nii.gz", "data-testid": "medseg-nifti" }, "download label volume (NIfTI, input affine kept)")));
  }
}

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

function examplesFor(domain, model) {
  const ex = (model.io && model.io.inputs && model.io.inputs[0] && model.io.inputs[0].constraints || {}).example;
  if (ex) return JSON.stringify(ex, null, 2);
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

function buildPanel(domain, model) {
  const view = (model.io || {}).view || "file";
  const accept = acceptOf(model);
  if (view === "image-to-image") return filePanel(domain, model, accept, "Run", renderRestoration);
  if (view === "image-heatmap") return filePanel(domain, model, accept, "Score", renderAnomaly);
  if (view === "volume-segmentation") return filePanel(domain, model, accept, "Segment", renderMedseg);
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
  $("#server-line").textContent = `v${info.server.version} \u00b7 ${Object.keys(info.models).length} model(s)`;
  const tabs = $("#tabs"), panels = $("#panels");
  tabs.replaceChildren(); panels.replaceChildren();
  for (const [domain, model] of Object.entries(info.models)) {
    const b = el("button", { type: "button", role: "tab", "data-domain": domain, id: `tab-${domain}` }, domain);
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
