// edge-ser's page: live audio over a WebSocket (the service's own events), files over HTTP, the model and the
// device. Plain JavaScript, nothing fetched from elsewhere: it must work on a device with no internet.
"use strict";

// Okabe and Ito's palette: told apart with every common colour-vision deficiency. Labels are written too.
const PALETTE = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999"];
const TIMELINE_SECONDS = 300;
const CHUNK_SECONDS = 0.02;

const $ = (id) => document.getElementById(id);
const state = { info: null, colours: {}, ws: null, audio: null, utterances: [], started: 0, heard: 0 };

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function textOn(colour) {  // black or white, whichever reads on this background
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(colour.slice(i, i + 2), 16) / 255);
  return 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 ? "#000" : "#fff";
}

function pct(p) { return `${(100 * p).toFixed(1)}%`; }

function bars(probabilities) {
  const grid = el("div", { class: "bars" });
  for (const [label, p] of Object.entries(probabilities)) {
    const fill = el("div");
    fill.style.width = `${Math.max(0, Math.min(100, 100 * p))}%`;
    fill.style.background = state.colours[label] || "#555";
    grid.append(el("span", { text: label }), el("div", { class: "bar", role: "img", "aria-label": `${label} ${pct(p)}` }, fill),
                el("span", { class: "num", text: pct(p) }));
  }
  return grid;
}

// ---- tabs ---------------------------------------------------------------------------------------------------

function showTab(tab) {
  for (const other of document.querySelectorAll('[role="tab"]')) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
    $(other.getAttribute("aria-controls")).hidden = !selected;
  }
  tab.focus();
}

function setUpTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => showTab(tab));
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (step) showTab(tabs[(i + step + tabs.length) % tabs.length]);
    });
  });
}

// ---- model and device ---------------------------------------------------------------------------------------

function facts(pairs) {
  const list = el("dl", { class: "facts" });
  for (const [term, value] of pairs) list.append(el("dt", { text: term }), el("dd", { text: String(value) }));
  return list;
}

function renderInfo(info) {
  const model = info.model, server = info.server, device = info.device;
  $("model-name").textContent = `${model.name}`;
  model.labels.forEach((label, i) => { state.colours[label] = PALETTE[i % PALETTE.length]; });
  const legend = $("legend");
  legend.replaceChildren(...model.labels.map((label) => {
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = state.colours[label];
    return el("li", {}, swatch, label);
  }));
  if (model.synthetic) {
    $("note").hidden = false;
    $("note").textContent = "The demo model tells apart synthetic speech styles, not real emotions.";
  }
  if (server.device_microphone) {
    $("source-choice").hidden = false;
    $("source").value = "device";
  }
  const rule = model.early_exit;
  const precisions = Object.keys(model.exits[0]?.dev_uar_by_precision || {});
  const table = el("table", { id: "exits-table" });
  table.append(el("caption", { text: "Exits: parameters on the path, UAR per precision (dev), test UAR" }));
  table.append(el("tr", {}, el("th", { text: "exit" }), el("th", { text: "parameters" }),
                  ...precisions.map((p) => el("th", { text: `dev UAR ${p}` })), el("th", { text: "test UAR" }),
                  el("th", { text: `MB at ${server.precision}` })));
  for (const e of model.exits) {
    table.append(el("tr", { "data-exit": e.layer }, el("td", { text: e.layer }),
                    el("td", { text: e.path_parameters.toLocaleString("en") }),
                    ...precisions.map((p) => el("td", { text: e.dev_uar_by_precision[p] == null ? "-" : pct(e.dev_uar_by_precision[p]) })),
                    el("td", { text: e.test_uar == null ? "-" : pct(e.test_uar) }), el("td", { text: e.megabytes.toFixed(1) })));
  }
  const streaming = model.streaming.exact_at.length
    ? `the encoder runs while audio arrives (checked exact at ${model.streaming.exact_at.join(", ")})`
    : `the encoder runs at the end of each utterance (${model.streaming.reason || "no streaming check"})`;
  const choice = device.precision_choice;
  $("model-info").replaceChildren(
    el("h2", { text: "Model" }),
    facts([["name", model.name], ["description", model.description], ["labels", model.labels.join(", ")],
           ["sample rate", `${model.sample_rate} Hz`],
           ["early exit", rule ? `${rule.measure} >= ${rule.threshold == null ? "-" : rule.threshold.toFixed(3)}: dev UAR ${pct(rule.dev_uar)} against ${pct(rule.full_uar)} at full depth, ${pct(rule.compute_share)} of the compute` : "none (no calibrated thresholds)"],
           ["streaming", streaming], ["precisions verified", model.verified_precisions.join(", ")],
           ["export's default", model.default_precision]]),
    el("div", { class: "scroll" }, table),
    el("h2", { text: "This server" }),
    facts([["precision", `${server.precision} (${{ asked: "asked for", profile: "the device profile's", device: "this device's choice from edge-ser calibrate", manifest: "the export machine's default" }[server.precision_from] || server.precision_from})`],
           ["voice detector", server.detector], ["budget", server.run.budget_ms == null ? "none" : `${server.run.budget_ms} ms`],
           ["exit", server.run.exit], ["longest file", `${server.limits.clip_seconds} s`], ["clients at once", server.limits.clients]]),
    el("h2", { text: "Device" }),
    facts([["cpu", `${device.cpu}, ${device.cores} cores`], ["memory", `${device.memory_gb} GB`], ["system", `${device.os} ${device.machine}`],
           ["onnxruntime", `${device.onnxruntime} (${device.providers.join(", ")})`],
           ["precision chosen here", choice ? `${choice.precision} (${Object.entries(choice.full_depth_ms).map(([p, ms]) => `${p} ${ms.toFixed(1)} ms`).join(", ")}; ${choice.date})` : "not calibrated here (edge-ser calibrate)"],
           ["device profile", device.profile ? `${device.profile.precision}, planned at the ${device.profile.quantile} quantile` : "none (budgets are estimated)"]]));
}

// ---- live ---------------------------------------------------------------------------------------------------

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function setSpeech(on) {
  $("speech").textContent = on ? "speech" : "no speech";
  $("speech").classList.toggle("on", on);
}

function setLevel(dbfs) {
  const width = Math.max(0, Math.min(100, (dbfs + 80) * 100 / 80));
  $("level-bar").style.width = `${width}%`;
  $("level-text").textContent = `${Math.round(dbfs)} dBFS`;
}

function addUtterance(result) {
  state.utterances.push(result);
  state.heard = Math.max(state.heard, result.end || 0);
  const p = result.probabilities[result.label];
  const budget = result.budget_ms == null ? "no budget" : `budget ${result.budget_met ? "met" : "MISSED"} (${result.budget_ms} ms)`;
  const card = el("li", { class: "card utterance", "data-label": result.label },
    el("div", { class: "title", text: `${result.label} ${pct(p)}` }),
    el("div", { class: "muted", text: `${result.start.toFixed(2)}-${result.end.toFixed(2)} s, exit ${result.exit_layer} ` +
      `(${result.stopped_by}), ${result.latency_ms.toFixed(1)} ms after the end, ${budget}` }),
    bars(result.probabilities));
  $("utterances").prepend(card);
  drawTimeline();
}

function drawTimeline() {
  const now = Math.max(state.heard, state.started ? (performance.now() - state.started) / 1000 : 0);
  const from = Math.max(0, now - TIMELINE_SECONDS), span = Math.max(now - from, 1);
  const segments = state.utterances.filter((u) => u.end > from).map((u) => {
    const colour = state.colours[u.label] || "#555";
    const segment = el("div", { class: "segment", title: `${u.label}, ${u.start.toFixed(1)}-${u.end.toFixed(1)} s`, text: u.label });
    segment.style.left = `${100 * (Math.max(u.start, from) - from) / span}%`;
    segment.style.width = `${Math.max(0.5, 100 * (u.end - Math.max(u.start, from)) / span)}%`;
    segment.style.background = colour;
    segment.style.color = textOn(colour);
    return segment;
  });
  $("timeline").replaceChildren(...segments);
}

function onEvent(event) {
  const { type, data } = event;
  if (type === "voice-started") setSpeech(true);
  else if (type === "voice-stopped") setSpeech(false);
  else if (type === "emotion") addUtterance(data);
  else if (type === "level") setLevel(data.dbfs);
  else if (type === "error") setStatus(data.text, true);
  else if (type === "emotion-stop") setStatus("stopped");
}

function openSocket(path, onOpen) {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`);
  ws.binaryType = "arraybuffer";
  ws.addEventListener("open", () => onOpen(ws));
  ws.addEventListener("message", (message) => { if (typeof message.data === "string") onEvent(JSON.parse(message.data)); });
  ws.addEventListener("close", () => { if (state.ws === ws) stopListening(); });
  return ws;
}

async function startBrowserMicrophone() {
  const media = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
  const context = new AudioContext();
  await context.audioWorklet.addModule("/worklet.js");
  const source = context.createMediaStreamSource(media);
  const tap = new AudioWorkletNode(context, "edge-ser-tap");
  const chunk = Math.round(CHUNK_SECONDS * context.sampleRate);
  let held = [], count = 0;
  tap.port.onmessage = ({ data }) => {
    held.push(data);
    count += data.length;
    if (count < chunk) return;
    const pcm = new Int16Array(count);
    let at = 0, energy = 0;
    for (const block of held) for (const x of block) {
      const v = Math.max(-1, Math.min(1, x));
      energy += v * v;
      pcm[at++] = v < 0 ? v * 32768 : v * 32767;
    }
    held = []; count = 0;
    setLevel(10 * Math.log10(energy / pcm.length + 1e-12));
    const ws = state.ws;
    if (ws && ws.readyState === WebSocket.OPEN && ws.bufferedAmount < 1 << 20) ws.send(pcm.buffer);
  };
  source.connect(tap);
  state.audio = { media, context };
  state.ws = openSocket("/ws", (ws) => {
    ws.send(JSON.stringify({ type: "classify", data: { mode: "listen" } }));
    ws.send(JSON.stringify({ type: "audio-start", data: { rate: context.sampleRate, width: 2, channels: 1 } }));
  });
}

async function startListening() {
  state.utterances = []; state.heard = 0; state.started = performance.now();
  $("utterances").replaceChildren();
  drawTimeline();
  $("start").textContent = "Stop";
  $("start").setAttribute("aria-pressed", "true");
  try {
    if (!$("source-choice").hidden && $("source").value === "device") {
      state.ws = openSocket("/ws/device", () => setStatus("showing the device's microphone"));
    } else {
      await startBrowserMicrophone();
      setStatus("listening");
    }
  } catch (problem) {
    setStatus(`cannot listen: ${problem.message || problem}`, true);
    stopListening();
  }
}

function stopListening() {
  const ws = state.ws;
  state.ws = null;
  if (ws && ws.readyState === WebSocket.OPEN) {
    ws.send(JSON.stringify({ type: "audio-stop", data: {} }));
    setTimeout(() => ws.close(), 3000);  // the last utterance's result comes back first
  }
  if (state.audio) {
    state.audio.media.getTracks().forEach((track) => track.stop());
    state.audio.context.close();
    state.audio = null;
  }
  setSpeech(false);
  $("start").textContent = "Start listening";
  $("start").setAttribute("aria-pressed", "false");
}

// ---- files --------------------------------------------------------------------------------------------------

function windowsChart(windows) {
  const chart = $("file-windows");
  chart.replaceChildren(...windows.map((w) => {
    const exit = w.stops_at ?? Object.keys(w.exits).at(-1);
    const probabilities = w.exits[String(exit)];
    const column = el("div", { class: "column", role: "img",
      "aria-label": `${w.start.toFixed(1)}-${w.end.toFixed(1)} s: ` + Object.entries(probabilities).map(([l, p]) => `${l} ${pct(p)}`).join(", ") });
    for (const [label, p] of Object.entries(probabilities)) {
      const piece = el("div", { class: "piece", text: p > 0.12 ? label : "" });
      piece.style.height = `${100 * p}%`;
      piece.style.background = state.colours[label];
      piece.style.color = textOn(state.colours[label]);
      column.append(piece);
    }
    column.append(el("span", { class: "when", text: `${w.start.toFixed(0)} s` }));
    return column;
  }));
}

function exitsTable(w, rule) {
  const labels = Object.keys(Object.values(w.exits)[0]);
  const table = el("table", { class: "exits" });
  const ruleText = rule ? (rule.measure === "patience" ? `patience ${rule.patience}` : `${rule.measure} >= ${rule.threshold.toFixed(3)}`) : "none";
  table.append(el("caption", { text: `${w.start.toFixed(1)}-${w.end.toFixed(1)} s; stop rule: ${ruleText}` }));
  table.append(el("tr", {}, el("th", { text: "exit" }), el("th", { text: "top label" }), el("th", { text: "certainty" }), el("th", { text: "probabilities" })));
  for (const [layer, probabilities] of Object.entries(w.exits)) {
    const top = labels.reduce((a, b) => (probabilities[a] >= probabilities[b] ? a : b));
    const stops = String(w.stops_at) === layer;
    const certainty = w.certainty[layer];
    table.append(el("tr", { class: stops ? "stop" : "", "data-exit": layer },
      el("td", { text: stops ? `${layer} (stops here)` : layer }), el("td", { text: top }),
      el("td", { text: certainty == null ? "-" : certainty.toFixed(3) }), el("td", {}, bars(probabilities))));
  }
  return table;
}

async function classifyFile(file) {
  $("file-status").textContent = `classifying ${file.name} ...`;
  $("file-status").className = "";
  $("file-result").hidden = true;
  let answer;
  try {
    const response = await fetch("/api/classify", { method: "POST", body: file, headers: { "X-Filename": encodeURIComponent(file.name) } });
    answer = await response.json();
  } catch (problem) {
    answer = { error: String(problem) };
  }
  if (answer.error) {
    $("file-status").textContent = `${file.name}: ${answer.error}`;
    $("file-status").className = "error";
    return;
  }
  const r = answer.result;
  const budget = r.budget_ms == null ? "no budget" : `budget ${r.budget_met ? "met" : "MISSED"} (${r.budget_ms} ms)`;
  $("file-summary").replaceChildren(
    el("div", { class: "title", id: "file-label", text: `${r.speech === false ? "(no speech) " : ""}${r.label} ${pct(r.probabilities[r.label])}` }),
    el("div", { class: "muted", text: `${r.source}: ${r.seconds.toFixed(2)} s, exit ${r.exit_layer} (${r.stopped_by}), ` +
      `${r.latency_ms.toFixed(1)} ms (decoding ${r.decode_ms == null ? "-" : r.decode_ms.toFixed(1)} ms apart), ${budget}` }),
    ...(r.warning ? [el("div", { class: "note", text: r.warning })] : []),
    bars(r.probabilities));
  windowsChart(answer.windows);
  $("file-exits").replaceChildren(...answer.windows.map((w) => el("div", { class: "scroll" }, exitsTable(w, answer.stop_rule))));
  $("file-status").textContent = `${r.source} classified`;
  $("file-result").hidden = false;
}

function setUpFiles() {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => { if (event.target.files[0]) classifyFile(event.target.files[0]); });
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files[0]) classifyFile(event.dataTransfer.files[0]);
  });
  drop.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") $("file").click(); });
}

// ---- start --------------------------------------------------------------------------------------------------

async function main() {
  setUpTabs();
  setUpFiles();
  $("start").addEventListener("click", () => (state.ws || state.audio ? stopListening() : startListening()));
  setInterval(() => { if (state.ws) drawTimeline(); }, 1000);
  try {
    state.info = await (await fetch("/api/info")).json();
    renderInfo(state.info);
    document.body.dataset.ready = "true";
  } catch (problem) {
    setStatus(`cannot reach the server: ${problem}`, true);
  }
}

main();
