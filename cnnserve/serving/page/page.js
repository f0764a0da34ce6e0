"use strict";
// The page at /: one picture through POST /predict, and through POST /explain on request, each answer drawn
// where its pixels say. Colours and the heat rule are annotate.py's, so the page and the PNG answers agree.

const BOX_COLOUR = "rgb(255, 0, 96)";
const HEAT_COLOUR = [255, 190, 0];
const HEAT_OPACITY = 0.65; // of the hottest cell
const HEAT_FLOOR = 0.1; // a map whose largest drop is smaller stays faint

const $ = (id) => document.getElementById(id);
const state = { file: null, listing: null, imageUrl: null, asked: 0 };

function say(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function keyHeaders() {
  const key = $("key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// One API call; a refusal becomes an Error carrying the server's own JSON message.
async function call(path, init = {}) {
  const response = await fetch(path, { ...init, headers: { ...keyHeaders(), ...(init.headers || {}) } });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) $("key-field").hidden = false;
  if (!response.ok) {
    const retry = response.headers.get("Retry-After");
    throw new Error(`${response.status}: ${body.error || response.statusText}${retry ? ` (retry in ${retry} s)` : ""}`);
  }
  return body;
}

async function loadModels() {
  try {
    state.listing = await call("/models");
  } catch (error) {
    say(error.message.startsWith("401") ? "this server asks for an API key: type it above" : error.message, true);
    return;
  }
  const select = $("model");
  const chosen = select.value || state.listing.default_model;
  select.replaceChildren(...state.listing.models.map((m) => new Option(m.name, m.name, false, m.name === chosen)));
  describeModel();
  if (state.file) predict(); else say("choose or drop a picture");
}

function describeModel() {
  const model = state.listing?.models.find((m) => m.name === $("model").value);
  if (!model) return;
  const version = model.versions.find((v) => v.version === model.default_version) || model.versions[0];
  const metrics = version.metrics?.accuracy !== undefined ? `, test accuracy ${version.metrics.accuracy}` : "";
  const input = version.input?.shape ? `, input ${version.input.shape.slice(2).join("×")}` : "";
  $("model-info").textContent = `version ${version.version}: ${version.status}` +
    `${version.precision ? `, ${version.precision.toUpperCase()}` : ""}${input}${metrics}`;
}

function choose(file) {
  if (!file) return;
  state.file = file;
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  state.imageUrl = URL.createObjectURL(file);
  $("image").src = state.imageUrl;
  predict();
}

function form() {
  const body = new FormData();
  body.append("image", state.file);
  return body;
}

function query() {
  return `model=${encodeURIComponent($("model").value)}`;
}

async function predict() {
  const asked = ++state.asked; // a later question supersedes this one
  clear($("heat"));
  $("explain").disabled = true;
  say("asking the model…");
  try {
    const answer = await call(`/predict?${query()}`, { method: "POST", body: form() });
    if (asked !== state.asked) return;
    show(answer);
    $("explain").disabled = false;
    say(`answered by ${answer.model} version ${answer.version} in ${answer.timings.total_ms.toFixed(1)} ms`);
  } catch (error) {
    if (asked === state.asked) say(error.message, true);
  }
}

async function explain() {
  const asked = state.asked;
  $("explain").disabled = true;
  say("occluding the picture piece by piece…");
  try {
    const answer = await call(`/explain?${query()}`, { method: "POST", body: form() });
    if (asked !== state.asked) return;
    drawHeat(answer);
    const o = answer.occlusion;
    say(`occlusion map of "${o.target}": amber where hiding the picture costs the answer most ` +
      `(${answer.timings.occluded_images} occluded copies, ${answer.timings.total_ms.toFixed(0)} ms)`);
  } catch (error) {
    if (asked === state.asked) say(error.message, true);
  } finally {
    if (asked === state.asked) $("explain").disabled = false;
  }
}

function show(answer) {
  $("result").hidden = false;
  $("label").textContent = answer.label;
  $("probability").textContent = `${(answer.probability * 100).toFixed(1)}%`;
  $("bars").replaceChildren(...answer.top_k.map(bar));
  const { width, height } = answer.image_size;
  $("details").textContent = `${width}×${height} px` + (answer.box
    ? `; box x ${answer.box.x1.toFixed(0)}–${answer.box.x2.toFixed(0)}, y ${answer.box.y1.toFixed(0)}–${answer.box.y2.toFixed(0)}`
    : `; ${answer.note}`);
  drawAnswer(answer);
}

function bar({ label, probability }) {
  const item = document.createElement("li");
  const name = document.createElement("span");
  const track = document.createElement("span");
  const fill = document.createElement("span");
  const value = document.createElement("span");
  name.textContent = label;
  track.className = "bar";
  fill.style.width = `${(probability * 100).toFixed(1)}%`;
  track.append(fill);
  value.className = "value";
  value.textContent = `${(probability * 100).toFixed(1)}%`;
  item.append(name, track, value);
  return item;
}

// Canvases in the picture's own pixels (the answer's image_size, after EXIF orientation, as the <img> shows it).
function sized(canvas, { width, height }) {
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, width, height);
  return context;
}

function clear(canvas) {
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
}

function drawAnswer(answer) {
  const context = sized($("overlay"), answer.image_size);
  sized($("heat"), answer.image_size);
  if (!answer.box) return;
  const { width, height } = answer.image_size;
  const line = Math.max(2, Math.round(Math.min(width, height) / 100));
  const { x1, y1, x2, y2 } = answer.box;
  context.strokeStyle = BOX_COLOUR;
  context.lineWidth = line;
  context.strokeRect(x1, y1, x2 - x1, y2 - y1);
  const text = `${answer.label} ${Math.round(answer.probability * 100)}%`;
  const fontSize = Math.max(12, Math.floor(Math.min(width, height) / 14)); // annotate.py's
  context.font = `${fontSize}px sans-serif`;
  context.textBaseline = "top";
  const tag = { w: context.measureText(text).width + 2 * line, h: fontSize + 2 * line };
  const x = Math.min(Math.max(0, x1), Math.max(0, width - tag.w));
  const y = y1 - tag.h >= 0 ? y1 - tag.h : y1 + line;
  context.fillStyle = BOX_COLOUR;
  context.fillRect(x, y, tag.w, tag.h);
  context.fillStyle = "white";
  context.fillText(text, x + line, y + line);
}

function drawHeat(answer) {
  const context = sized($("heat"), answer.image_size);
  const { grid, first_cell: [x1, y1, x2, y2], step: [dx, dy] } = answer.occlusion;
  const hottest = Math.max(HEAT_FLOOR, ...grid.flat());
  grid.forEach((row, r) => row.forEach((drop, c) => {
    const alpha = (Math.max(0, drop) / hottest) * HEAT_OPACITY;
    if (alpha <= 0) return;
    context.fillStyle = `rgba(${HEAT_COLOUR.join(", ")}, ${alpha.toFixed(3)})`;
    context.fillRect(x1 + c * dx, y1 + r * dy, x2 - x1, y2 - y1);
  }));
}

function listen() {
  $("file").addEventListener("change", (event) => choose(event.target.files[0]));
  $("model").addEventListener("change", () => { describeModel(); if (state.file) predict(); });
  $("key").addEventListener("change", loadModels);
  $("explain").addEventListener("click", explain);
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    choose(event.dataTransfer.files[0]);
  });
  drop.addEventListener("keydown", (event) => { if (event.key === "Enter") $("file").click(); });
}

listen();
loadModels();
