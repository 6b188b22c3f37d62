// genforge studio: the page of `genforge serve`. Plain ES2020, no framework, no build step, nothing fetched
// from outside the studio (it must work with the network off). Every URL is relative, so a ?token= the page
// was opened with (the server turned it into a cookie) and a reverse proxy's prefix both just work.
//
// The generate and refine forms are built from what a run declares (GET api/runs/{id}: capabilities), never
// from family or modality names, so a new family shows up here without a change to this page.
"use strict";

// ---- small helpers ------------------------------------------------------------------------------------------
const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

/** A new element: attrs holds properties (className, textContent, hidden...), `dataset`, `on` (event -> handler)
 *  and plain attributes (anything with a dash, or `attrs`); children are nodes or strings. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "on") for (const [type, fn] of Object.entries(value)) node.addEventListener(type, fn);
    else if (key === "attrs" || key.includes("-")) {
      for (const [name, v] of Object.entries(key === "attrs" ? value : { [key]: value })) node.setAttribute(name, v);
    } else node[key] = value;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

/** JSON from the studio's API; a 4xx/5xx throws an Error carrying the server's one-line `detail`. */
async function api(path, { method = "GET", body, form } = {}) {
  const options = { method, headers: {} };
  if (form) options.body = form; // multipart: the browser sets the boundary
  else if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(`api/${path}`, options);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    let detail = data && data.detail !== undefined ? data.detail : text || response.statusText;
    if (Array.isArray(detail)) { // FastAPI's 422: a list of {loc, msg}
      detail = detail.map((d) => `${(d.loc || []).filter((p) => p !== "body").join(".")}: ${d.msg}`).join("; ");
    }
    throw new Error(`${String(detail).split("\n")[0]} (HTTP ${response.status})`);
  }
  return data;
}

/** The one-line message under the header: errors in red, news in the normal colour. */
function say(text, kind = "info") {
  const box = $("#message");
  $(".text", box).textContent = text;
  box.className = kind;
  box.hidden = false;
}
const sayError = (error) => say(error instanceof Error ? error.message : String(error), "error");

/** Runs an async UI action, showing its failure as the message line instead of an uncaught rejection (the
 *  error of an earlier action is cleared first: it no longer describes what is on screen). */
function guarded(fn) {
  return async (...args) => {
    if ($("#message").classList.contains("error")) $("#message").hidden = true;
    try { return await fn(...args); } catch (error) { sayError(error); }
  };
}

const short = (id) => String(id).slice(0, 8);
const fmtNumber = (v) => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toPrecision(4)) : String(v));
const isImage = (item) => item.media_type.startsWith("image/");
const isText = (item) => item.media_type.startsWith("text/");
const fileUrl = (item, download = false) => `api/gallery/${item.id}/file${download ? "?download=true" : ""}`;

function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

// ---- state -----------------------------------------------------------------------------------------------------
const state = {
  runs: [], // GET api/runs
  run: null, // GET api/runs/{id} of the picked run
  details: new Map(), // run id -> its GET api/runs/{id} (other runs' capabilities, for items of theirs)
  compareFirst: null, // the first item picked for a side-by-side comparison
  gallery: { offset: 0, limit: 24, total: 0 },
};

async function runDetail(id, fresh = false) {
  if (fresh || !state.details.has(id)) state.details.set(id, await api(`runs/${encodeURIComponent(id)}`));
  return state.details.get(id);
}

// ---- runs --------------------------------------------------------------------------------------------------
async function loadRuns() {
  state.runs = await api("runs");
  const list = $("#run-list");
  const checked = new Set($$(".run-check:checked").map((c) => c.value));
  list.replaceChildren(...state.runs.map((run) => el("li", { dataset: { runId: run.id } },
    el("input", { type: "checkbox", className: "run-check", value: run.id, checked: checked.has(run.id),
      title: "include in a comparison", "data-testid": `run-check-${run.id}` }),
    el("button", { type: "button", className: "run-pick", title: run.data, "data-testid": `run-${run.id}`,
      on: { click: guarded(() => selectRun(run.id)) } },
      el("b", { textContent: run.id }),
      el("span", { className: "sub", textContent: `${run.family} · ${run.modality} · ${run.data}` }),
      el("span", { className: "sub",
        textContent: `step ${run.step ?? 0}/${run.steps}${run.ready ? "" : " · no weights"}` })))));
  if (state.run) $(`li[data-run-id="${CSS.escape(state.run.id)}"]`, list)?.classList.add("active");
  // the gallery's filters offer what the runs have
  const runSelect = $("#gf-run");
  const picked = runSelect.value;
  runSelect.replaceChildren(el("option", { value: "", textContent: "any" }),
    ...state.runs.map((r) => el("option", { value: r.id, textContent: r.id })));
  runSelect.value = picked;
  const options = (values) => [...new Set(values)].sort().map((v) => el("option", { value: v }));
  $("#dl-families").replaceChildren(...options(state.runs.map((r) => r.family)));
  $("#dl-modalities").replaceChildren(...options(state.runs.map((r) => r.modality)));
}

async function selectRun(id, { show = true } = {}) {
  const run = await runDetail(id, true);
  state.run = run;
  $$("#run-list li").forEach((li) => li.classList.toggle("active", li.dataset.runId === id));
  if (show) showTab("studio");
  $("#no-run").hidden = true;
  const view = $("#run-view");
  view.hidden = false;
  view.dataset.runId = id;
  renderRunAbout(run);
  buildGenerateForm(run);
  $("#outputs").replaceChildren();
  await Promise.all([showLatestGrid(id, $("#run-grid"), $("#run-grid-step")), loadRunCurves(id)]);
}

function renderRunAbout(run) {
  $("#run-title").textContent = run.id;
  const about = [["family", run.family], ["data", run.data], ["modality", run.modality],
    ["step", `${run.step ?? 0} of ${run.steps}`], ["parameters", run.parameters?.toLocaleString()],
    ["writes", run.writes]];
  $("#run-about").replaceChildren(...about.filter(([, v]) => v !== undefined && v !== null)
    .flatMap(([k, v]) => [el("dt", { textContent: k }), el("dd", { textContent: v })]));
  const table = $("#run-metrics");
  const metrics = run.metrics || run.latest_eval?.metrics;
  if (!metrics || !Object.keys(metrics).length) {
    table.replaceChildren(el("tr", {}, el("td", { className: "hint", textContent: "no evaluation yet (genforge eval)" })));
    return;
  }
  const rows = Object.entries(metrics).map(([k, v]) => el("tr", {}, el("th", { textContent: k }),
    el("td", { textContent: typeof v === "object" && v !== null ? JSON.stringify(v) : fmtNumber(v) })));
  const when = run.latest_eval?.created;
  if (when) rows.push(el("tr", {}, el("th", { textContent: "evaluated" }), el("td", { textContent: when })));
  table.replaceChildren(...rows);
}

/** The run's newest training sample grid: a picture, or the text a text run writes. */
async function showLatestGrid(runId, box, caption) {
  const grids = await api(`runs/${encodeURIComponent(runId)}/grids`);
  const latest = grids[grids.length - 1];
  if (!latest) {
    box.replaceChildren(el("p", { className: "hint", textContent: "no sample grid yet" }));
    caption.textContent = "";
    delete box.dataset.file;
    return;
  }
  const key = `${runId}/${latest.file}`;
  if (box.dataset.file === key) return; // unchanged: keep the picture, no flicker
  box.dataset.file = key;
  caption.textContent = `step ${latest.step}`;
  const url = `api/runs/${encodeURIComponent(runId)}/grids/${latest.file}`;
  if (/\.(png|jpe?g|gif|webp)$/.test(latest.file)) {
    box.replaceChildren(el("img", { src: url, alt: `samples at step ${latest.step}`, className: "pixelated" }));
  } else {
    const text = await (await fetch(url)).text();
    box.replaceChildren(el("pre", { className: "text-out", textContent: text }));
  }
}

async function loadRunCurves(runId) {
  const { records } = await api(`runs/${encodeURIComponent(runId)}/metrics`);
  drawCurves($("#run-curve"), lossSeries(records));
}

// ---- plotting ---------------------------------------------------------------------------------------------
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#a16207", "#db2777"];

/** Adds the loss curves of metrics records (keys ending in "/loss", x = step) to `series` {key: [[x, y]...]}. */
function lossSeries(records, series = {}) {
  for (const record of records) {
    for (const [key, value] of Object.entries(record)) {
      if (!key.endsWith("/loss") || typeof value !== "number" || !Number.isFinite(value)) continue;
      (series[key] ||= []).push([record.step, value]);
    }
  }
  return series;
}

/** About `count` round tick values covering [lo, hi], and a formatter with the decimals their step needs. */
function ticks(lo, hi, count = 5) {
  if (hi === lo) { hi = lo + 1; lo -= 1; }
  const raw = (hi - lo) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => raw <= s);
  const values = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) values.push(+v.toPrecision(12));
  const decimals = Math.min(10, Math.max(0, -Math.floor(Math.log10(step) + 1e-9)));
  const big = Math.max(Math.abs(lo), Math.abs(hi)) >= 1e5;
  return { values: values.filter((v) => v >= lo && v <= hi), label: (v) => (big ? v.toExponential(1) : v.toFixed(decimals)) };
}

/** Line chart of `series` on a canvas: axes with ticks, labels, one colour per series, a legend. The number of
 *  points drawn is kept in the canvas's data-points (the browser test watches it grow while a run trains). */
function drawCurves(canvas, series, { xLabel = "step", yLabel = "loss" } = {}) {
  // the drawing is in CSS pixels; the backing store follows the screen's density so lines stay sharp
  const width = Number(canvas.dataset.w ||= canvas.width);
  const height = Number(canvas.dataset.h ||= canvas.height);
  const dpr = window.devicePixelRatio || 1;
  canvas.width = width * dpr;
  canvas.height = height * dpr;
  canvas.style.width = `${width}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, width, height);
  ctx.font = "11px system-ui, sans-serif";

  const names = Object.keys(series).sort();
  const points = names.flatMap((n) => series[n]);
  canvas.dataset.points = String(points.length);
  canvas.dataset.series = String(names.length);
  if (!points.length) {
    ctx.fillStyle = "#666";
    ctx.textAlign = "center";
    ctx.fillText("no loss records yet", width / 2, height / 2);
    return;
  }
  const pad = { left: 52, right: 12, top: 10 + 14 * Math.ceil(names.length / 3), bottom: 34 };
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
  const X = (x) => pad.left + ((x - x0) / (x1 - x0)) * (width - pad.left - pad.right);
  const Y = (y) => height - pad.bottom - ((y - y0) / (y1 - y0)) * (height - pad.top - pad.bottom);

  // grid lines and tick labels
  ctx.strokeStyle = "#e5e7eb";
  ctx.fillStyle = "#444";
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  const yTicks = ticks(y0, y1);
  for (const t of yTicks.values) {
    ctx.beginPath(); ctx.moveTo(pad.left, Y(t)); ctx.lineTo(width - pad.right, Y(t)); ctx.stroke();
    ctx.fillText(yTicks.label(t), pad.left - 4, Y(t));
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const xTicks = ticks(x0, x1);
  for (const t of xTicks.values) {
    ctx.beginPath(); ctx.moveTo(X(t), pad.top); ctx.lineTo(X(t), height - pad.bottom); ctx.stroke();
    ctx.fillText(xTicks.label(t), X(t), height - pad.bottom + 4);
  }
  // axes and their labels
  ctx.strokeStyle = "#333";
  ctx.beginPath();
  ctx.moveTo(pad.left, pad.top); ctx.lineTo(pad.left, height - pad.bottom); ctx.lineTo(width - pad.right, height - pad.bottom);
  ctx.stroke();
  ctx.fillText(xLabel, (pad.left + width - pad.right) / 2, height - 14);
  ctx.save();
  ctx.translate(12, (pad.top + height - pad.bottom) / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textBaseline = "middle";
  ctx.fillText(yLabel, 0, 0);
  ctx.restore();

  // the series, then the legend above the plot
  names.forEach((name, i) => {
    const color = COLORS[i % COLORS.length];
    const data = series[name];
    ctx.strokeStyle = ctx.fillStyle = color;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    data.forEach(([x, y], j) => (j ? ctx.lineTo(X(x), Y(y)) : ctx.moveTo(X(x), Y(y))));
    ctx.stroke();
    if (data.length === 1) { ctx.beginPath(); ctx.arc(X(data[0][0]), Y(data[0][1]), 3, 0, 2 * Math.PI); ctx.fill(); }
    const lx = pad.left + (i % 3) * ((width - pad.left) / 3), ly = 4 + 14 * Math.floor(i / 3);
    ctx.fillRect(lx, ly + 3, 12, 3);
    ctx.fillStyle = "#222";
    ctx.textAlign = "left";
    ctx.fillText(name, lx + 16, ly);
  });
}

// ---- settings forms, built from a capability's declared settings ----------------------------------------------
/** One form field for a declared setting {name, kind, default, range, choices, help}. An empty field is not
 *  sent, so the run's own default applies. */
function settingField(setting, classNames, testPrefix) {
  const common = { name: setting.name, title: setting.help || "", dataset: { setting: setting.name, kind: setting.kind },
    "data-testid": `${testPrefix}${setting.name}` };
  const shownDefault = setting.default === null || setting.default === undefined ? "default" : String(setting.default);
  let input;
  if (setting.choices && setting.choices.length) {
    input = el("select", common, el("option", { value: "", textContent: `(${shownDefault})` }),
      ...setting.choices.map((c) => el("option", { value: String(c), textContent: String(c) })));
  } else if (setting.kind === "int" || setting.kind === "float") {
    const range = setting.range || {};
    input = el("input", { ...common, type: "number", placeholder: shownDefault,
      step: setting.kind === "int" ? "1" : "any", min: range.low ?? undefined, max: range.high ?? undefined });
  } else if (setting.kind === "bool") {
    // a checkbox has no "empty": it is sent only once the user (or "reuse settings") has set it
    input = el("input", { ...common, type: "checkbox", checked: setting.default === true,
      on: { change: (e) => { e.target.dataset.touched = "1"; } } });
  } else if (setting.kind === "label" && classNames && classNames.length) {
    input = el("select", common, el("option", { value: "", textContent: `(${shownDefault})` }),
      ...classNames.map((c, i) => el("option", { value: String(c),
        textContent: String(c) === String(i) ? String(c) : `${c} (${i})` })));
  } else {
    const placeholder = { texts: "a, b, c", pairs: "a=x,b=y" }[setting.kind] || shownDefault;
    input = el("input", { ...common, type: "text", placeholder });
  }
  return el("label", { className: `setting kind-${setting.kind}`, title: setting.help || "" },
    el("span", { textContent: setting.name }), input);
}

/** The fields of `settings` in `box`; test ids are testPrefix + the setting's name. */
function renderSettings(box, settings, classNames, testPrefix = "setting-") {
  box.replaceChildren(...settings.map((s) => settingField(s, classNames, testPrefix)));
}

/** The settings a form's fields hold, typed as the run declared them; empty fields are left out. */
function readSettings(box) {
  const out = {};
  for (const input of $$("[data-setting]", box)) {
    const { setting, kind } = input.dataset;
    if (kind === "bool") {
      if (input.dataset.touched) out[setting] = input.checked;
      continue;
    }
    const raw = input.value.trim();
    if (raw === "") continue;
    if (kind === "int" || kind === "float") out[setting] = Number(raw);
    else if (kind === "texts") out[setting] = splitList(raw);
    else out[setting] = raw; // str, label (a name or id: the server takes both), pairs ("a=x,b=y")
  }
  return out;
}

/** Puts values (an item's params) into the fields of the same names; other fields are emptied. */
function fillSettings(box, params) {
  for (const input of $$("[data-setting]", box)) {
    const { setting, kind } = input.dataset;
    const value = params[setting];
    if (kind === "bool") {
      input.checked = value === true;
      if (value === undefined) delete input.dataset.touched; else input.dataset.touched = "1";
    } else if (value === undefined || value === null) input.value = "";
    else if (Array.isArray(value)) input.value = value.map(escapeList).join(", ");
    else if (typeof value === "object") input.value = Object.entries(value).map(([k, v]) => `${k}=${v}`).join(",");
    else input.value = String(value);
  }
}

/** "a, b\n" -> ["a", "b\n"]: comma separated, with \n, \t, \, and \\ for what a one-line box cannot hold. */
function splitList(text) {
  const out = [];
  let current = "";
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "\\" && i + 1 < text.length) {
      const next = text[++i];
      current += { n: "\n", t: "\t" }[next] ?? next;
    } else if (c === ",") { out.push(current.trim()); current = ""; } else current += c;
  }
  out.push(current.trim());
  return out.filter((s) => s !== "");
}
const escapeList = (s) => String(s).replace(/\\/g, "\\\\").replace(/,/g, "\\,").replace(/\n/g, "\\n").replace(/\t/g, "\\t");

const settingNames = (capability) => new Set((capability?.settings || []).map((s) => s.name));

// ---- generate ----------------------------------------------------------------------------------------------
// settings the generate request carries at its top level, with fields of their own (never twice)
const TOP_LEVEL = new Set(["stop"]);

function buildGenerateForm(run) {
  const caps = run.capabilities || {};
  const ready = !!run.capabilities;
  $("#gen-unready").hidden = ready;
  $("#gen-submit").disabled = !ready;
  const texts = !!caps.stream; // a run that streams text takes a prompt and stop strings
  $("#gen-text").hidden = !texts;
  const settings = (caps.sample?.settings || []).filter((s) => !(texts && TOP_LEVEL.has(s.name)));
  renderSettings($("#gen-settings"), settings, run.class_names);
  $("#infill-form").hidden = !caps.infill;
  $("#upload-btn").hidden = !(ready && run.writes === ".png"); // runs that read and write images
  $("#gen-seed-shown").hidden = true;
  $("#gen-job").hidden = true;
  genJob.detach();
}

async function submitGenerate() {
  const run = state.run;
  const body = { seed: Number($("#gen-seed").value || -1), count: Number($("#gen-count").value || 1),
    settings: readSettings($("#gen-settings")) };
  if (!$("#gen-text").hidden) {
    const prompt = $("#gen-prompt").value;
    const stop = splitList($("#gen-stop").value);
    if (prompt) body.prompt = prompt;
    if (stop.length) body.stop = stop;
  }
  const job = await api(`runs/${encodeURIComponent(run.id)}/generate`, { method: "POST", body });
  followMain(job, `${run.id}: ${body.count} × sample`);
}

/** Follows a job whose outputs belong in the Outputs list (generate, variations, continue, infill). */
function followMain(job, title) {
  $("#gen-seed-shown").hidden = true;
  const batch = newBatch($("#outputs"), job, title);
  genJob.follow(job, {
    items: $(".cards", batch),
    onEnd: (data) => {
      if (data.result && data.result.seed !== undefined) {
        const shown = $("#gen-seed-shown");
        $(".value", shown).textContent = data.result.seed;
        shown.dataset.seed = data.result.seed;
        shown.hidden = false;
        $(".batch-title", batch).textContent += ` · seed ${data.result.seed}`;
      }
    },
  });
}

function newBatch(container, job, title) {
  const batch = el("div", { className: "batch", dataset: { jobId: job.id }, "data-testid": "batch" },
    el("div", { className: "batch-title", textContent: title }), el("div", { className: "cards" }));
  container.prepend(batch);
  return batch;
}

/** Refills the generate form from an item's params: seed, count (n), prompt, stop, and every setting the form has. */
async function reuseSettings(item) {
  if (!state.run || state.run.id !== item.run_id) await selectRun(item.run_id);
  const p = item.params || {};
  if (p.seed !== undefined) $("#gen-seed").value = p.seed;
  if (p.n !== undefined) $("#gen-count").value = p.n;
  if (!$("#gen-text").hidden) {
    $("#gen-prompt").value = p.prompt ?? "";
    $("#gen-stop").value = Array.isArray(p.stop) ? p.stop.map(escapeList).join(", ") : (p.stop ?? "");
  }
  fillSettings($("#gen-settings"), p);
  showTab("studio");
  $("#gen-form").scrollIntoView({ block: "start" });
  say(`settings of ${short(item.id)} are in the form`);
}

async function submitInfill() {
  const run = state.run;
  const infillNames = settingNames(run.capabilities.infill);
  const settings = Object.fromEntries(Object.entries(readSettings($("#gen-settings"))).filter(([k]) => infillNames.has(k)));
  const body = { mode: "infill", prefix: $("#infill-prefix").value, suffix: $("#infill-suffix").value,
    seed: Number($("#gen-seed").value || -1), count: 1, settings };
  const job = await api(`runs/${encodeURIComponent(run.id)}/refine`, { method: "POST", body });
  followMain(job, `${run.id}: infill`);
}

async function uploadImage(file) {
  const form = new FormData();
  form.append("file", file);
  const item = await api(`runs/${encodeURIComponent(state.run.id)}/uploads`, { method: "POST", form });
  const batch = newBatch($("#outputs"), { id: "upload" }, `upload: ${file.name}`);
  $(".cards", batch).append(itemCard(item));
  await openRefine(item);
}

// ---- following a job: its event stream --------------------------------------------------------------------
const TERMINAL = new Set(["done", "failed", "cancelled"]);

/** A job's progress bar, streamed text and cancel button in one box; follows one job at a time through its
 *  server-sent events (status, progress, piece, item). */
class JobView {
  constructor(box) {
    this.box = box;
    this.bar = el("progress", { max: 1, value: 0 });
    this.label = el("span", { className: "job-label", "data-testid": "job-label" });
    this.cancelButton = el("button", { type: "button", className: "job-cancel", textContent: "Cancel",
      "data-testid": "job-cancel", on: { click: guarded(() => this.cancel()) } });
    this.stream = el("pre", { className: "text-out stream", hidden: true, "data-testid": "stream",
      dataset: { pieces: "0" } });
    box.replaceChildren(el("div", { className: "row" }, this.bar, this.label, this.cancelButton), this.stream);
    this.source = null;
    this.job = null;
  }

  follow(job, hooks = {}) {
    this.detach();
    this.job = job;
    this.hooks = hooks;
    this.seq = 0;
    this.position = null;
    this.box.hidden = false;
    this.box.dataset.jobId = job.id;
    this.stream.textContent = "";
    this.stream.dataset.pieces = "0";
    this.stream.hidden = !job.streaming;
    this.bar.removeAttribute("value"); // indeterminate until the first progress event
    this.setStatus(job.status, job);
    const source = new EventSource(`api/jobs/${job.id}/events`);
    this.source = source;
    // An EventSource reconnects on its own, sending Last-Event-ID (the server resumes there); an event seen
    // already is skipped all the same.
    const on = (type, handler) => source.addEventListener(type, (event) => {
      const seq = Number(event.lastEventId);
      if (this.source !== source || seq <= this.seq) return;
      this.seq = seq;
      handler(JSON.parse(event.data));
    });
    on("status", (data) => this.setStatus(data.status, data));
    on("progress", (data) => this.progress(data));
    on("piece", (piece) => {
      this.stream.hidden = false;
      this.stream.append(piece); // a text node: what the model wrote is never read as HTML
      this.stream.dataset.pieces = String(Number(this.stream.dataset.pieces) + 1);
      this.stream.scrollTop = this.stream.scrollHeight;
    });
    on("item", (item) => {
      if (this.hooks.items) this.hooks.items.append(itemCard(item));
      this.hooks.onItem?.(item);
    });
    on("step", (data) => this.hooks.onStep?.(data));
    return new Promise((resolve) => { this.resolve = resolve; });
  }

  setStatus(status, data) {
    this.box.dataset.status = status;
    this.cancelButton.hidden = TERMINAL.has(status);
    if (status === "queued") {
      this.position = data.position ?? this.position; // the job JSON has it, the status event does not
      this.label.textContent = this.position ? `queued, position ${this.position}` : "queued";
      this.pollPosition();
    } else if (status === "running") {
      if (!this.label.textContent.includes("/")) this.label.textContent = "running";
    } else if (status === "cancelling") {
      this.label.textContent = "stopping…";
    } else if (TERMINAL.has(status)) {
      this.finish(status, data);
    }
  }

  /** While queued, the job's place in its device's queue (GET api/jobs/{id} has it; the events do not). */
  pollPosition() {
    clearTimeout(this.positionTimer);
    const job = this.job;
    this.positionTimer = setTimeout(guarded(async () => {
      if (this.job !== job || this.box.dataset.status !== "queued") return;
      const now = await api(`jobs/${job.id}`);
      if (this.job === job && now.status === "queued") {
        this.position = now.position;
        this.label.textContent = `queued, position ${now.position ?? "?"}`;
        this.pollPosition();
      }
    }), 1000);
  }

  progress({ done, total, eta_s: eta }) {
    if (total > 0) {
      this.bar.max = total;
      this.bar.value = done;
    }
    const unit = this.hooks.unit || "steps";
    const left = eta !== null && eta !== undefined && done < total ? `, ETA ${fmtDuration(eta)}` : "";
    this.label.textContent = `${done}/${total} ${unit}${left}`;
  }

  finish(status, data) {
    this.source?.close();
    this.source = null;
    clearTimeout(this.positionTimer);
    if (status === "done") {
      this.bar.max = 1;
      this.bar.value = 1;
      this.label.textContent = "done";
    } else {
      this.label.textContent = `${status}: ${data.error || ""}`;
      if (status === "failed") say(`job failed: ${data.error || "no reason given"}`, "error");
      else say(data.error || "cancelled");
    }
    this.hooks.onEnd?.({ status, ...data });
    this.resolve?.({ status, ...data });
  }

  async cancel() {
    if (this.job) await api(`jobs/${this.job.id}/cancel`, { method: "POST" });
  }

  /** Stops listening (the job itself goes on; the Jobs tab still shows it). */
  detach() {
    this.source?.close();
    this.source = null;
    clearTimeout(this.positionTimer);
    this.job = null;
    delete this.box.dataset.status;
    delete this.box.dataset.jobId;
  }
}

// ---- item cards ---------------------------------------------------------------------------------------------
/** How an item looks: its image, its text, or a link to its file. */
function itemPreview(item, { compact = false } = {}) {
  if (isImage(item)) {
    return el("img", { src: fileUrl(item), alt: `${item.mode} ${short(item.id)}`, className: "pixelated", loading: "lazy" });
  }
  if (isText(item)) {
    const pre = el("pre", { className: "text-out", "data-testid": "item-text" });
    const limit = compact ? 160 : Infinity;
    const put = (text) => { pre.textContent = text.length > limit ? `${text.slice(0, limit)}…` : text; };
    // the gallery keeps the first TEXT_PREVIEW characters of a text; a longer one is read from its file
    if (typeof item.text === "string" && (compact || item.text.length < TEXT_PREVIEW)) put(item.text);
    else fetch(fileUrl(item)).then((r) => r.text()).then(put, () => put(item.text || ""));
    return pre;
  }
  return el("a", { href: fileUrl(item, true), download: "",
    textContent: `${item.suffix} file, ${item.size.toLocaleString()} bytes` });
}

const TEXT_PREVIEW = 20000;

/** Bookkeeping params left out where settings are summed up. */
const PLAIN_PARAMS = new Set(["run", "family", "mode", "parent", "index", "n", "prompt", "middle"]);

function keySettings(item, limit = 4) {
  const p = item.params || {};
  return Object.entries(p).filter(([k]) => !PLAIN_PARAMS.has(k)).slice(0, limit)
    .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`.slice(0, 40)).join(" ");
}

/** An output with everything one can do with it. */
function itemCard(item) {
  const card = el("div", { className: `card${isText(item) ? " wide-card" : ""}`, dataset: { itemId: item.id, mode: item.mode },
    "data-testid": "item-card" });
  const act = (action, label, handler, title) => el("button", { type: "button", textContent: label, title,
    dataset: { action }, "data-testid": `action-${action}`, on: { click: guarded(() => handler(item, card)) } });
  const actions = [
    el("a", { href: fileUrl(item, true), download: "", textContent: "Download", className: "button",
      dataset: { action: "download" }, "data-testid": "action-download" }),
  ];
  if (item.suffix === ".png") { // the studio refines PNG inputs
    actions.push(act("refine", "Refine", openRefine, "inpaint, img2img, interpolate... with this as input"));
    actions.push(act("variations", "Variations", variations, "new images like this one"));
  }
  if (item.suffix === ".txt") actions.push(act("continue", "Continue", continueText, "generate more after this text"));
  actions.push(
    act("reuse", "Reuse settings", reuseSettings, "put this item's seed and settings in the generate form"),
    act("lineage", "Lineage", (it) => openLineage(it.id), "where it came from and what was made from it"),
    act("compare", "Compare", pickForCompare, "pick two items to see them side by side"),
    act("delete", "Delete", deleteItem, "remove it from the gallery (click twice)"));
  card.append(
    el("div", { className: "preview" }, itemPreview(item)),
    el("div", { className: "meta", title: JSON.stringify(item.params, null, 1) },
      el("b", { textContent: item.mode }), ` ${item.run_id} · seed ${item.seed ?? "—"} · ${short(item.id)}`,
      el("div", { className: "sub", textContent: keySettings(item) })),
    el("div", { className: "actions" }, ...actions));
  return card;
}

async function variations(item) {
  const body = { mode: "variations", input_id: item.id, count: 4, seed: -1, settings: {} };
  const job = await api(`runs/${encodeURIComponent(item.run_id)}/refine`, { method: "POST", body });
  if (!state.run || state.run.id !== item.run_id) await selectRun(item.run_id);
  showTab("studio");
  followMain(job, `${item.run_id}: variations of ${short(item.id)}`);
}

async function continueText(item) {
  if (!state.run || state.run.id !== item.run_id) await selectRun(item.run_id);
  const sampleNames = settingNames(state.run.capabilities?.sample);
  const settings = Object.fromEntries(Object.entries(readSettings($("#gen-settings"))).filter(([k]) => sampleNames.has(k)));
  const body = { mode: "continue", input_id: item.id, count: 1, seed: Number($("#gen-seed").value || -1), settings };
  const job = await api(`runs/${encodeURIComponent(item.run_id)}/refine`, { method: "POST", body });
  showTab("studio");
  followMain(job, `${item.run_id}: continue ${short(item.id)}`);
}

async function deleteItem(item, card) {
  const button = $('[data-action="delete"]', card);
  if (!button.dataset.armed) { // a second click within 3 s deletes: no modal confirm() to get in the way
    button.dataset.armed = "1";
    button.textContent = "Really delete?";
    setTimeout(() => { delete button.dataset.armed; button.textContent = "Delete"; }, 3000);
    return;
  }
  await api(`gallery/${item.id}`, { method: "DELETE" });
  $$(`.card[data-item-id="${item.id}"]`).forEach((c) => c.remove());
  say(`deleted ${short(item.id)}`);
}

// ---- comparing two items ------------------------------------------------------------------------------------
function pickForCompare(item) {
  const first = state.compareFirst;
  if (!first || first.id === item.id) {
    state.compareFirst = item;
    $$(".card.picked").forEach((c) => c.classList.remove("picked"));
    $$(`.card[data-item-id="${item.id}"]`).forEach((c) => c.classList.add("picked"));
    say(`compare: ${short(item.id)} picked; press Compare on a second item`);
    return;
  }
  state.compareFirst = null;
  $$(".card.picked").forEach((c) => c.classList.remove("picked"));
  openCompare(first, item);
}

function openCompare(a, b) {
  const item = new Set(["run", "mode"]); // params that repeat the item's own fields
  const keys = [...new Set([...Object.keys(a.params || {}), ...Object.keys(b.params || {})])].filter((k) => !item.has(k)).sort();
  const show = (v) => (v === undefined ? "—" : typeof v === "object" ? JSON.stringify(v) : String(v));
  const rows = [["item", a.id, b.id], ["run", a.run_id, b.run_id], ["mode", a.mode, b.mode], ["created", a.created, b.created],
    ...keys.map((k) => [k, a.params[k], b.params[k]])];
  const side = (item) => el("div", { className: "side" }, itemPreview(item), el("div", { textContent: short(item.id) }));
  $("#compare-body").replaceChildren(
    el("div", { className: "sides" }, side(a), side(b)),
    el("table", { className: "diff", "data-testid": "params-diff" },
      el("thead", {}, el("tr", {}, ...["param", "A", "B"].map((h) => el("th", { textContent: h })))),
      el("tbody", {}, ...rows.map(([k, x, y]) => el("tr", { className: show(x) === show(y) ? "" : "differs" },
        el("th", { textContent: k }), el("td", { textContent: show(x) }), el("td", { textContent: show(y) }))))));
  openDialog("#compare-dialog");
}

// ---- refine panel ---------------------------------------------------------------------------------------------
// How the refine dialog names the image modes; which of them a run offers is the server's to say (run.refine).
const REFINE_MODES = [
  ["inpaint", "inpaint (paint a mask)"],
  ["img2img", "img2img"],
  ["variations", "variations"],
  ["interpolate", "interpolate to a second image"],
  ["attribute", "attribute edit"],
];

const refine = { item: null, run: null, other: null, job: null };

async function openRefine(item) {
  const run = await runDetail(item.run_id);
  refine.item = item;
  refine.run = run;
  refine.other = null;
  $("#refine-title").textContent = `${short(item.id)} · ${item.run_id}`;
  const modeSelect = $("#refine-mode");
  // the modes the run offers (run.refine: mode -> the capability whose settings it takes), as the server says
  const offered = run.refine || {};
  modeSelect.replaceChildren(...REFINE_MODES.filter(([mode]) => mode in offered)
    .map(([mode, label]) => el("option", { value: mode, textContent: label })));
  $("#refine-outputs").replaceChildren();
  $("#refine-job").hidden = true;
  refineJob.detach();
  labelField($("#refine-source-slot"), "refine-source", run.class_names);
  labelField($("#refine-target-slot"), "refine-target", run.class_names);
  onRefineMode();
  openDialog("#refine-dialog");
  await loadMaskImage(item);
}

function labelField(slot, id, classNames) {
  slot.replaceChildren(classNames && classNames.length
    ? el("select", { id }, ...classNames.map((c) => el("option", { value: String(c), textContent: String(c) })))
    : el("input", { id, placeholder: "class id or name", size: 8 }));
}

/** Shows what the picked mode needs: the mask, a strength, a second image, labels, its settings. */
function onRefineMode() {
  const mode = $("#refine-mode").value;
  const caps = refine.run.capabilities || {};
  const capability = caps[(refine.run.refine || {})[mode]];
  const settings = capability?.settings || [];
  const strength = settings.find((s) => s.name === "strength");
  $("#refine-strength-row").hidden = !strength;
  if (strength) {
    $("#refine-strength").value = strength.default ?? 0.5;
    $("#refine-strength-shown").value = $("#refine-strength").value;
  }
  $("#mask-tools").hidden = mode !== "inpaint";
  $("#mask-canvas").hidden = mode !== "inpaint";
  $("#refine-other-row").hidden = mode !== "interpolate";
  $("#refine-labels-row").hidden = mode !== "attribute";
  renderSettings($("#refine-settings"), settings.filter((s) => s.name !== "strength"), refine.run.class_names,
    "refine-setting-");
  if (mode === "interpolate") loadOtherPicks().catch(sayError);
}

/** Second images for interpolation: this run's images in the gallery. */
async function loadOtherPicks() {
  const { items } = await api(`gallery?run=${encodeURIComponent(refine.item.run_id)}&limit=40`);
  $("#refine-other").replaceChildren(...items.filter((i) => i.suffix === ".png" && i.id !== refine.item.id)
    .map((i) => el("button", { type: "button", className: "pick", title: short(i.id), dataset: { itemId: i.id },
      on: { click: () => {
        refine.other = i;
        $("#refine-other-shown").textContent = short(i.id);
        $$("#refine-other .pick").forEach((b) => b.classList.toggle("active", b.dataset.itemId === i.id));
      } } }, el("img", { src: fileUrl(i), alt: short(i.id), className: "pixelated" }))));
}

// The mask canvas has the input's own pixel size (8x8 for 8x8 digits) and is shown scaled up over the image:
// one canvas pixel is one mask pixel, so what is painted is exactly what the server gets.
const mask = { painting: false, last: null };

function loadMaskImage(item) {
  const img = $("#refine-image");
  const canvas = $("#mask-canvas");
  return new Promise((resolve) => {
    img.onload = () => {
      const w = img.naturalWidth, h = img.naturalHeight;
      canvas.width = w;
      canvas.height = h;
      const scale = Math.max(1, Math.floor(Math.min(320 / w, 320 / h)));
      for (const node of [img, canvas]) { node.style.width = `${w * scale}px`; node.style.height = `${h * scale}px`; }
      const brush = $("#brush-size");
      brush.max = String(Math.max(2, Math.round(Math.max(w, h) / 2)));
      brush.value = String(Math.max(1, Math.round(Math.max(w, h) / 8)));
      $("#brush-shown").value = brush.value;
      clearMask();
      resolve();
    };
    img.onerror = () => { sayError(`cannot load item ${short(item.id)}`); resolve(); };
    img.src = fileUrl(item);
  });
}

function clearMask() {
  const canvas = $("#mask-canvas");
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#000"; // black = keep; the PNG has no transparency for the server to misread
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  canvas.dataset.painted = "0";
}

/** The canvas pixel under a mouse event (the canvas is displayed scaled). */
function maskPoint(event) {
  const canvas = $("#mask-canvas");
  const box = canvas.getBoundingClientRect();
  return [Math.floor(((event.clientX - box.left) / box.width) * canvas.width),
    Math.floor(((event.clientY - box.top) / box.height) * canvas.height)];
}

/** White squares of the brush's size from the last point to this one (no gaps when the mouse moves fast). */
function paintTo([x, y]) {
  const canvas = $("#mask-canvas");
  const ctx = canvas.getContext("2d");
  const size = Number($("#brush-size").value);
  const [x0, y0] = mask.last || [x, y];
  const steps = Math.max(Math.abs(x - x0), Math.abs(y - y0), 1);
  ctx.fillStyle = "#fff";
  for (let i = 0; i <= steps; i++) {
    const px = Math.round(x0 + ((x - x0) * i) / steps), py = Math.round(y0 + ((y - y0) * i) / steps);
    ctx.fillRect(px - Math.floor((size - 1) / 2), py - Math.floor((size - 1) / 2), size, size);
  }
  mask.last = [x, y];
}

function countPainted() {
  const canvas = $("#mask-canvas");
  const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
  let n = 0;
  for (let i = 0; i < data.length; i += 4) if (data[i] > 127) n++;
  canvas.dataset.painted = String(n);
  return n;
}

function setupMaskPainting() {
  const canvas = $("#mask-canvas");
  canvas.addEventListener("mousedown", (e) => {
    e.preventDefault(); // no drag-and-drop of the image underneath
    mask.painting = true;
    mask.last = null;
    paintTo(maskPoint(e));
  });
  canvas.addEventListener("mousemove", (e) => { if (mask.painting) paintTo(maskPoint(e)); });
  window.addEventListener("mouseup", () => {
    if (!mask.painting) return;
    mask.painting = false;
    mask.last = null;
    countPainted();
  });
  $("#mask-clear").addEventListener("click", clearMask);
  $("#brush-size").addEventListener("input", (e) => { $("#brush-shown").value = e.target.value; });
  $("#refine-strength").addEventListener("input", (e) => { $("#refine-strength-shown").value = e.target.value; });
}

async function submitRefine() {
  const mode = $("#refine-mode").value;
  const item = refine.item;
  const body = { mode, input_id: item.id, count: Number($("#refine-count").value || 1),
    seed: Number($("#refine-seed").value || -1), settings: readSettings($("#refine-settings")) };
  if (!$("#refine-strength-row").hidden) body.strength = Number($("#refine-strength").value);
  if (mode === "inpaint") {
    if (countPainted() === 0) throw new Error("paint the part to regenerate on the image first (white = regenerate)");
    body.mask = $("#mask-canvas").toDataURL("image/png");
  }
  if (mode === "interpolate") {
    if (!refine.other) throw new Error("pick a second image to interpolate towards");
    body.other_id = refine.other.id;
  }
  if (mode === "attribute") {
    body.source = $("#refine-source").value;
    body.target = $("#refine-target").value;
  }
  const job = await api(`runs/${encodeURIComponent(item.run_id)}/refine`, { method: "POST", body });
  const batch = newBatch($("#refine-outputs"), job, `${mode} of ${short(item.id)}`);
  refineJob.follow(job, {
    items: $(".cards", batch),
    onEnd: (data) => {
      if (data.result?.seed !== undefined) $(".batch-title", batch).textContent += ` · seed ${data.result.seed}`;
    },
  });
}

// ---- lineage ---------------------------------------------------------------------------------------------
/** How an item was made from its parent, for the arrow that leads to it. */
const edgeLabel = (item) => `${item.mode} ${keySettings(item, 3)}`.trim();

function lineageNode(item, current = false) {
  return el("button", { type: "button", className: `lineage-node${current ? " current" : ""}`, title: item.id,
    dataset: { itemId: item.id }, "data-testid": "lineage-node",
    on: { click: guarded(() => openLineage(item.id)) } },
    itemPreview(item, { compact: true }), el("span", { textContent: `${item.mode} · ${short(item.id)}` }));
}

const arrow = (item) => el("span", { className: "arrow", "data-testid": "lineage-edge" },
  el("small", { textContent: edgeLabel(item) }), "⟶");

function descendantsTree(nodes) {
  return el("ul", { className: "tree" }, ...nodes.map(({ item, children }) => el("li", {},
    el("div", { className: "row" }, arrow(item), lineageNode(item)),
    children.length ? descendantsTree(children) : null)));
}

async function openLineage(id) {
  const lineage = await api(`gallery/${id}/lineage`);
  const chain = el("div", { className: "chain", "data-testid": "lineage-chain" });
  lineage.ancestors.forEach((item, i) => {
    if (i > 0) chain.append(arrow(item));
    chain.append(lineageNode(item));
  });
  if (lineage.ancestors.length) chain.append(arrow(lineage.item));
  chain.append(lineageNode(lineage.item, true));
  $("#lineage-body").replaceChildren(el("div", {},
    el("h3", { textContent: lineage.ancestors.length ? "made from" : "an original (no parent)" }), chain,
    el("h3", { textContent: lineage.descendants.length ? "made from it" : "nothing made from it yet" }),
    lineage.descendants.length ? descendantsTree(lineage.descendants) : null,
    lineage.truncated ? el("p", { className: "hint", textContent: "(cut: a very long or wide lineage)" }) : null));
  openDialog("#lineage-dialog");
}

// ---- train, resume, compare runs --------------------------------------------------------------------------
const training = { job: null, runId: null, since: 0, series: {}, timer: null, polling: false };

async function submitTrain() {
  const value = (id) => $(id).value.trim();
  const number = (id) => (value(id) === "" ? undefined : Number(value(id)));
  const body = { name: value("#train-name"), family: value("#train-family"), data: value("#train-data"),
    steps: number("#train-steps"), max_minutes: number("#train-minutes"), batch_size: number("#train-batch"),
    lr: number("#train-lr"), seed: number("#train-seed"),
    sets: $("#train-sets").value.split("\n").map((s) => s.trim()).filter(Boolean) };
  const job = await api("train", { method: "POST", body });
  watchTraining(job, body.name);
}

async function resumeRun() {
  const steps = $("#resume-steps").value.trim();
  const job = await api(`runs/${encodeURIComponent(state.run.id)}/resume`, { method: "POST",
    body: steps ? { steps: Number(steps) } : {} });
  watchTraining(job, state.run.id);
}

/** Shows a training job live: progress from its events, the loss curve and sample grid polled every second. */
function watchTraining(job, runId) {
  clearInterval(training.timer);
  Object.assign(training, { job, runId, since: 0, series: {}, started: false });
  showTab("train");
  $("#train-live").hidden = false;
  $("#train-run").textContent = runId;
  $("#train-grid").replaceChildren();
  delete $("#train-grid").dataset.file;
  $("#train-grid-step").textContent = "";
  drawCurves($("#train-curve"), {});
  $("#train-stop").disabled = false;
  // poll once the trainer has logged a step: before that the run folder may not exist yet (a 404)
  const start = () => {
    if (training.started || training.job !== job) return;
    training.started = true;
    training.timer = setInterval(() => pollTraining(job), 1000);
    pollTraining(job);
    loadRuns().catch(sayError); // a new run is in the list from its first step on
  };
  trainJob.follow(job, {
    onStep: start,
    onEnd: async (data) => {
      clearInterval(training.timer);
      $("#train-stop").disabled = true;
      if (training.job !== job) return;
      if (training.started || data.status === "done" || data.result) await pollTraining(job, true);
      if (data.status === "done") say(`${runId} trained to step ${data.result?.step}`);
      await loadRuns().catch(sayError);
      if (state.run && state.run.id === runId) await selectRun(runId, { show: false }).catch(sayError);
    },
  });
}

async function pollTraining(job, final = false) {
  if (training.polling && !final) return; // a slow answer: skip a beat rather than pile requests up
  training.polling = true;
  try {
    const { records } = await api(`runs/${encodeURIComponent(training.runId)}/metrics?since=${training.since}`);
    if (training.job !== job) return;
    if (records.length) {
      training.since = records[records.length - 1].step;
      lossSeries(records, training.series);
      drawCurves($("#train-curve"), training.series);
    }
    await showLatestGrid(training.runId, $("#train-grid"), $("#train-grid-step"));
  } catch (error) {
    if (final) sayError(error);
  } finally {
    training.polling = false;
  }
}

async function compareRuns() {
  const runs = $$(".run-check:checked").map((c) => c.value);
  if (!runs.length) throw new Error("check the runs to compare in the list first (1 to 8)");
  const n = $("#compare-n").value.trim();
  const job = await api("compare", { method: "POST", body: n ? { runs, n: Number(n) } : { runs } });
  showTab("train");
  $("#compare-live").hidden = false;
  $("#compare-title").textContent = runs.join(", ");
  const frame = $("#compare-report");
  frame.hidden = true;
  compareJob.follow(job, {
    onEnd: (data) => {
      if (data.status !== "done" || !data.result?.report) return;
      frame.src = `api/reports/${data.result.report}`;
      frame.hidden = false;
    },
  });
}

// ---- gallery ------------------------------------------------------------------------------------------------
async function loadGallery() {
  const g = state.gallery;
  const query = new URLSearchParams({ limit: g.limit, offset: g.offset });
  for (const [key, id] of [["run", "#gf-run"], ["family", "#gf-family"], ["modality", "#gf-modality"],
    ["mode", "#gf-mode"], ["setting", "#gf-setting"], ["q", "#gf-q"]]) {
    const v = $(id).value.trim();
    if (v) query.set(key, v);
  }
  // dates are the user's local days: "from" its first second, "to" its last
  const since = $("#gf-since").value, until = $("#gf-until").value;
  if (since) query.set("since", String(new Date(`${since}T00:00:00`).getTime() / 1000));
  if (until) query.set("until", String(new Date(`${until}T23:59:59`).getTime() / 1000));
  const { items, total } = await api(`gallery?${query}`);
  g.total = total;
  $("#gallery-items").replaceChildren(...items.map(itemCard));
  const last = Math.min(g.offset + items.length, total);
  $("#gallery-total").textContent = total ? `${g.offset + 1}–${last} of ${total}, newest first` : "no items";
  $("#gallery-prev").disabled = g.offset === 0;
  $("#gallery-next").disabled = last >= total;
}

// ---- jobs -------------------------------------------------------------------------------------------------
async function loadJobs() {
  const jobs = await api("jobs");
  $("#jobs-body").replaceChildren(...jobs.map((job) => {
    const p = job.progress || {};
    const eta = p.eta_s && job.status === "running" ? `, ETA ${fmtDuration(p.eta_s)}` : "";
    const progress = p.total ? `${p.done}/${p.total}${eta}` : "";
    const live = job.status === "queued" || job.status === "running";
    return el("tr", { className: `status-${job.status}`, dataset: { jobId: job.id } },
      el("td", { textContent: job.kind }), el("td", { textContent: job.run || (job.runs || []).join(", ") }),
      el("td", { textContent: job.mode || "" }),
      el("td", { textContent: job.status, title: job.error || "" }), el("td", { textContent: job.position ?? "" }),
      el("td", { textContent: progress }),
      el("td", { textContent: job.started ? new Date(job.started * 1000).toLocaleTimeString() : "" }),
      el("td", {}, live ? el("button", { type: "button", textContent: "Cancel",
        on: { click: guarded(async () => {
          await api(`jobs/${job.id}/cancel`, { method: "POST" });
          await loadJobs();
        }) } }) : ""));
  }));
}

// ---- tabs, dialogs, start-up --------------------------------------------------------------------------------
function showTab(name) {
  $$(".tabs [data-tab]").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
  $$("main > .tab").forEach((s) => { s.hidden = s.id !== `tab-${name}`; });
  if (name === "gallery") loadGallery().catch(sayError);
  if (name === "jobs") loadJobs().catch(sayError);
}

function openDialog(selector) {
  const dialog = $(selector);
  if (!dialog.open) dialog.showModal();
}

let genJob, refineJob, trainJob, compareJob;

function init() {
  genJob = new JobView($("#gen-job"));
  refineJob = new JobView($("#refine-job"));
  trainJob = new JobView($("#train-job"));
  compareJob = new JobView($("#compare-job"));

  $$(".tabs [data-tab]").forEach((b) => b.addEventListener("click", () => showTab(b.dataset.tab)));
  $("#message .close").addEventListener("click", () => { $("#message").hidden = true; });
  $$(".close-dialog").forEach((b) => b.addEventListener("click", () => b.closest("dialog").close()));
  $("#runs-refresh").addEventListener("click", guarded(loadRuns));
  $("#compare-runs").addEventListener("click", guarded(compareRuns));
  $("#resume-btn").addEventListener("click", guarded(resumeRun));

  const onSubmit = (selector, fn) => $(selector).addEventListener("submit", (e) => { e.preventDefault(); guarded(fn)(); });
  onSubmit("#gen-form", submitGenerate);
  onSubmit("#infill-form", submitInfill);
  onSubmit("#refine-form", submitRefine);
  onSubmit("#train-form", submitTrain);
  onSubmit("#gallery-filters", () => { state.gallery.offset = 0; return loadGallery(); });

  $("#reuse-seed").addEventListener("click", () => { $("#gen-seed").value = $("#gen-seed-shown").dataset.seed; });
  $("#upload-btn").addEventListener("click", () => $("#upload-file").click());
  $("#upload-file").addEventListener("change", guarded(async (e) => {
    const file = e.target.files[0];
    e.target.value = "";
    if (file) await uploadImage(file);
  }));
  $("#refine-mode").addEventListener("change", onRefineMode);
  setupMaskPainting();
  $("#train-stop").addEventListener("click", guarded(() => trainJob.cancel()));
  $("#gallery-prev").addEventListener("click", guarded(() => {
    state.gallery.offset = Math.max(0, state.gallery.offset - state.gallery.limit);
    return loadGallery();
  }));
  $("#gallery-next").addEventListener("click", guarded(() => {
    state.gallery.offset += state.gallery.limit;
    return loadGallery();
  }));
  $("#jobs-refresh").addEventListener("click", guarded(loadJobs));
  // the jobs list refreshes every 2 s while it is on screen
  setInterval(() => { if (!$("#tab-jobs").hidden) loadJobs().catch(sayError); }, 2000);

  $("#train-name").value = `run-${new Date().toISOString().slice(0, 16).replace(/[-:T]/g, "")}`;
  loadRuns().catch(sayError);
  loadCatalog().catch(sayError);
}

/** The training form's families and built-in data sources, as this genforge has them. */
async function loadCatalog() {
  const { families, sources } = await api("catalog");
  const family = $("#train-family");
  const picked = family.value;
  family.replaceChildren(...families.map((f) => el("option", { value: f, textContent: f })));
  if (families.includes(picked)) family.value = picked;
  $("#dl-sources").replaceChildren(...sources.map((s) => el("option", { value: s.name,
    label: `${s.name} (${s.modality}): ${s.description}` })));
}

document.addEventListener("DOMContentLoaded", init);
