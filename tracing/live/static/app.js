// muxlab live view. The Go side parses every trace line into an event (tracing/live/parse.go); this
// file only folds events into a picture of the loop (fold), draws it (draw), and wires the three
// modes: Replay (a transcript, turn by turn), Live (a real server, real sockets, events as they come)
// and Compare (two steps on one scenario). No library, nothing fetched from anywhere but this server.
"use strict";

const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

// ---- the model: events folded into the state of the loop after them ----

// A wait line is where a turn starts: the loop hands the kernel what it watches and sleeps.
const WAITS = new Set(["select", "epoll_wait", "enter", "block"]);

function newState() {
  return { socks: new Map(), loops: new Map(), exit: null, signal: "", epoll: false, notes: [] };
}

// sockKey names a socket in the state: step09's loops each have a signals pipe and an inbox of their
// own under the same name, so those are told apart by their loop.
function sockKey(name, loopName) {
  return (name === "signals" || name === "inbox") && loopName ? name + "@" + loopName : name;
}

function sock(st, name, loopName) {
  if (!name) return null;
  const key = sockKey(name, loopName);
  let s = st.socks.get(key);
  if (!s) {
    const role = name === "listener" ? "listener" : /^c\d+$/.test(name) ? "client" : "aux";
    s = { name: key, label: name, role, open: true, reason: "", interest: "", pending: 0, high: 0, limit: 0, paused: false,
      everPaused: false, reading: true, loop: "", note: "", inflight: [], lane: [], sentBytes: 0, recvBytes: 0,
      eof: false, member: "" };
    st.socks.set(key, s);
  }
  return s;
}

function loop(st, name) {
  const key = name || "";
  let l = st.loops.get(key);
  if (!l) {
    l = { name: key, asked: null, came: null, changes: [], completions: [], turn: 0 };
    st.loops.set(key, l);
  }
  return l;
}

// fold applies one event to the state. (Counts of 0 are left out of the JSON: they read as 0 here.)
function fold(st, ev) {
  const e = { pending: 0, bytes: 0, limit: 0, count: 0, ...ev };
  const l = loop(st, e.loop);
  const s = sock(st, e.sock, e.loop);
  if (s && e.loop && e.kind !== "deliver") s.loop = e.loop;
  switch (e.kind) {
    case "select": case "epoll_wait": case "enter": case "block":
      l.asked = e; l.came = null; l.completions = []; l.turn++;
      for (const n of [...(e.read || []), ...(e.write || []), ...(e.except || [])]) sock(st, n, e.loop);
      break;
    case "ready":
      l.came = e; l.changes = [];
      for (const r of e.ready || []) sock(st, r.sock, e.loop);
      break;
    case "epoll_ctl":
      st.epoll = true; s.interest = e.flags; l.changes.push(e);
      break;
    case "accept":
      if (!e.result) { s.open = true; }
      break;
    case "close":
      s.open = false; s.reason = e.reason; s.interest = ""; s.pending = 0; s.paused = false;
      break;
    case "read":
      if (e.result === "EOF") s.eof = true;
      break;
    case "queue": case "unqueue":
      st.queues = true;
      s.pending = e.pending; s.high = Math.max(s.high, e.pending);
      break;
    case "pause":
      s.paused = true; s.everPaused = true; s.limit = e.limit; s.pending = e.pending; s.high = Math.max(s.high, e.pending);
      break;
    case "resume":
      s.paused = false;
      break;
    case "drop":
      s.pending = 0; s.note = "queue dropped";
      break;
    case "too-slow":
      s.limit = e.limit; s.note = "too slow: put out";
      break;
    case "join":
      s.member = e.detail.replace(/^as /, "");
      break;
    case "nick":
      s.member = e.detail.split(" is now ")[1] || s.member;
      break;
    case "leave": case "finish": case "linger": case "too-long": case "owed":
      s.note = e.kind + ": " + e.detail;
      break;
    case "timeout":
      if (s) s.note = "timeout: " + e.reason;
      break;
    case "submit":
      if (s) s.inflight.push(e.op);
      break;
    case "complete":
      if (s) {
        const i = s.inflight.indexOf(e.op);
        if (i >= 0 && e.detail !== "(more)") s.inflight.splice(i, 1);
      }
      l.completions.push(e);
      break;
    case "pass":
      s.loop = e.peer;
      break;
    case "signal":
      st.signal = e.detail;
      break;
    case "exit":
      st.exit = e.result;
      break;
    case "client":
      if (e.op === "signal") { st.signal = "SIGTERM sent"; break; }
      s.lane.push({ dir: "sent", text: clientText(e) });
      if (e.op === "send") s.sentBytes += e.bytes;
      if (e.op === "stop reading") s.reading = false;
      if (e.op === "resume reading") s.reading = true;
      break;
    case "received":
      if (e.result === "nothing") s.lane.push({ dir: "recv", text: "nothing for " + e.detail });
      else if (e.result) { s.lane.push({ dir: "eof", text: e.result }); s.eof = true; }
      else { s.lane.push({ dir: "recv", text: e.data || e.bytes + " bytes" }); s.recvBytes += e.bytes; }
      break;
  }
}

function clientText(e) {
  if (e.op === "send") return "send " + (e.data || e.bytes + " bytes");
  return e.op + (e.detail ? " " + e.detail : "");
}

// stateAt folds events[0..n] (n = -1: before the first line). Transcripts are hundreds of lines, so
// stepping back simply folds again from the start.
function stateAt(events, n) {
  const st = newState();
  for (let i = 0; i <= n && i < events.length; i++) fold(st, events[i]);
  return st;
}

// ---- drawing ----

const BOX_W = 136, BOX_H = 74, GAP = 20, BAR_H = 14;

function draw(view, st) {
  const socks = [...st.socks.values()];
  const loops = [...st.loops.values()].filter((l) => l.asked || l.came);
  let html = '<div class="waits">';
  for (const l of loops.length ? loops : [loop(st, "")]) {
    const who = l.name ? l.name + " " : "";
    html += `<div class="asked"><b>${esc(who)}asked</b>${esc(l.asked ? strip(l.asked.text) : "(no wait line yet; step10 has none: the Go runtime's netpoller waits for it)")}</div>`;
    let came = l.came ? strip(l.came.text) : l.asked ? "(asleep: nothing came back yet)" : "";
    if (l.completions.length) came = l.completions.map((c) => strip(c.text).replace(/^complete\s+/, "")).join(" · ");
    html += `<div class="came"><b>${esc(who)}came back</b>${esc(came)}</div>`;
  }
  html += "</div>";
  html += drawSockets(st, socks, loops, view.id);
  if (st.epoll) html += drawInterest(st, socks, loops);
  const notes = [];
  if (st.signal) notes.push("signal: " + st.signal);
  if (st.exit !== null) notes.push("the server exited with status " + st.exit);
  if (notes.length) html += `<div class="notes">${esc(notes.join(" · "))}</div>`;
  html += '<div class="lanes">';
  for (const s of socks.filter((s) => s.role === "client")) {
    const recent = s.lane.slice(-10);
    html += `<div class="lane" id="${view.id}-lane-${esc(s.name)}" data-sent-bytes="${s.sentBytes}" data-recv-bytes="${s.recvBytes}">` +
      `<h3>${esc(s.name)}${s.member ? " (" + esc(s.member) + ")" : ""}: sent ${s.sentBytes} B, received ${s.recvBytes} B${s.reading ? "" : " · not reading"}</h3>`;
    if (s.lane.length > recent.length) html += `<div>… ${s.lane.length - recent.length} earlier</div>`;
    for (const x of recent) html += `<div class="${x.dir}">${x.dir === "sent" ? "&gt;&gt; " : "&lt;&lt; "}${esc(x.text)}</div>`;
    html += "</div>";
  }
  html += "</div>";
  view.innerHTML = html;
}

// strip drops the loop prefix's padding for display: the verb column is for the text pane.
function strip(text) { return text.replace(/^L\d+ /, "").replace(/\s{2,}/g, " "); }

function drawSockets(st, socks, loops, prefix) {
  const asked = { r: new Set(), w: new Set(), x: new Set() };
  const came = new Map();
  for (const l of loops) {
    for (const n of l.asked?.read || []) asked.r.add(n);
    for (const n of l.asked?.write || []) asked.w.add(n);
    for (const n of l.asked?.except || []) asked.x.add(n);
    if (l.asked?.kind === "block") asked.r.add(l.asked.sock);
    for (const n of l.came?.read || []) came.set(n, "R");
    for (const n of l.came?.write || []) came.set(n, (came.get(n) || "") + "W");
    for (const r of l.came?.ready || []) came.set(sockKey(r.sock, l.name), r.events);
    for (const c of l.completions) if (c.sock) came.set(c.sock, c.op + " " + c.result);
  }
  const perRow = Math.max(1, Math.min(socks.length, 8));
  const rows = Math.max(1, Math.ceil(socks.length / perRow));
  const rowH = BOX_H + BAR_H + 34;
  const w = perRow * (BOX_W + GAP) + GAP, h = rows * rowH + GAP;
  let svg = `<svg class="sockets" viewBox="0 0 ${w} ${h}" style="max-width:${w * 1.4}px">`;
  socks.forEach((s, i) => {
    const x = GAP + (i % perRow) * (BOX_W + GAP), y = GAP + Math.floor(i / perRow) * rowH;
    const cls = ["sock", s.role, s.open ? "open" : "closed", came.has(s.name) ? "came" : "", s.paused ? "paused" : ""].join(" ");
    svg += `<g class="${cls}" id="${prefix}-sock-${esc(s.name)}" data-open="${s.open}" data-reason="${esc(s.reason)}" data-pending="${s.pending}" ` +
      `data-high="${s.high}" data-limit="${s.limit}" data-paused="${s.paused}" data-ever-paused="${s.everPaused}" transform="translate(${x},${y})">`;
    svg += `<rect class="box" width="${BOX_W}" height="${BOX_H}" rx="6"/>`;
    svg += `<text x="8" y="16" font-weight="bold">${esc(s.label)}${s.loop ? " · " + esc(s.loop) : ""}</text>`;
    const marks = (asked.r.has(s.name) ? "R" : "") + (asked.w.has(s.name) ? "W" : "") + (asked.x.has(s.name) ? "X" : "");
    if (marks) svg += `<text class="mark" x="${BOX_W - 6}" y="16" text-anchor="end" fill="#7a4c00">watch ${marks}</text>`;
    let line2 = s.open ? (s.role === "client" ? (s.member || "open") : s.role === "listener" ? "listening" : "open") : "closed (" + s.reason + ")";
    svg += `<text x="8" y="32">${esc(line2)}</text>`;
    if (s.interest) svg += `<text x="8" y="46" fill="#555">${esc(s.interest)}</text>`;
    else if (s.inflight.length) svg += `<text x="8" y="46" fill="#555">in flight: ${esc(s.inflight.join(","))}</text>`;
    if (came.has(s.name)) svg += `<text x="8" y="62" fill="#e07b00" font-weight="bold">ready: ${esc(came.get(s.name))}</text>`;
    else if (s.note) svg += `<text x="8" y="62" fill="#777">${esc(s.note.slice(0, 18))}</text>`;
    if (s.role === "client" && st.queues) svg += drawQueue(s); // steps 01 and 02 have no queues
    svg += "</g>";
  });
  return svg + "</svg>";
}

// drawQueue draws a client's queue as a bar under its box: what is pending now, the high-water mark
// it reached (a black tick) and the pause threshold (a red dashed tick) when the step has one.
function drawQueue(s) {
  const scale = Math.max(s.limit * 1.5, s.high * 1.1, 1024);
  const px = (n) => Math.min(BOX_W, (n / scale) * BOX_W);
  const y = BOX_H + 4;
  let g = `<g class="queue"><rect class="bar-bg" y="${y}" width="${BOX_W}" height="${BAR_H}"/>`;
  g += `<rect class="bar" y="${y}" width="${px(s.pending)}" height="${BAR_H}"/>`;
  if (s.high) g += `<line class="high" x1="${px(s.high)}" x2="${px(s.high)}" y1="${y - 2}" y2="${y + BAR_H + 2}"/>`;
  if (s.limit) g += `<line class="limit" x1="${px(s.limit)}" x2="${px(s.limit)}" y1="${y - 3}" y2="${y + BAR_H + 3}"/>`;
  const label = `queue ${s.pending} B` + (s.paused ? ", paused" : s.everPaused ? ", was paused" : "");
  g += `<text y="${y + BAR_H + 12}">${esc(label)}</text></g>`;
  return g;
}

// drawInterest lists epoll's interest list (or, for io_uring, nothing: it has none) with the changes
// made since the last wait came back.
function drawInterest(st, socks, loops) {
  const changed = new Set();
  for (const l of loops) for (const c of l.changes) changed.add(sockKey(c.sock, l.name));
  let html = '<div class="interest"><table><tr><th>epoll interest</th><th>events</th><th>change this turn</th></tr>';
  for (const s of socks.filter((s) => s.interest)) {
    const ch = loops.flatMap((l) => l.changes.filter((c) => sockKey(c.sock, l.name) === s.name)).map((c) => c.op + " " + c.flags).join(", ");
    html += `<tr class="${changed.has(s.name) ? "changed" : ""}"><td>${esc(s.label)}${s.loop ? " (" + esc(s.loop) + ")" : ""}</td><td>${esc(s.interest)}</td><td>${esc(ch)}</td></tr>`;
  }
  return html + "</table></div>";
}

// The text pane: every line, the current one highlighted, the ones still to come greyed.
function drawLines(ol, events, n, onPick) {
  if (ol.childElementCount !== events.length) {
    ol.innerHTML = events.map((e) => `<li class="${e.kind === "client" || e.kind === "received" ? e.kind : ""}">${esc(e.text)}</li>`).join("");
    if (onPick) [...ol.children].forEach((li, i) => li.addEventListener("click", () => onPick(i)));
  }
  [...ol.children].forEach((li, i) => {
    li.classList.toggle("current", i === n);
    li.classList.toggle("future", i > n);
  });
  const cur = ol.children[n];
  if (cur) cur.scrollIntoView({ block: "nearest" });
}

// ---- talking to the server ----

async function api(path, options) {
  const res = await fetch(path, options);
  let body;
  try { body = await res.json(); } catch { body = { error: `${res.status} ${res.statusText}` }; }
  if (!res.ok || body?.error) throw new Error(body?.error || res.statusText);
  return body;
}

function showError(el, err) {
  el.hidden = !err;
  el.textContent = err ? String(err.message || err) : "";
}

let steps = [];

function fillSteps(select, chosen) {
  select.innerHTML = steps.map((s) => `<option value="${s.name}">${s.name} (${esc(s.dir.replace(/^step\d+-/, ""))})</option>`).join("");
  if (chosen) select.value = chosen;
}

function fillScenarios(select, stepName, chosen) {
  const st = steps.find((s) => s.name === stepName);
  select.innerHTML = (st?.scenarios || []).map((s) => `<option>${esc(s.name)}</option>`).join("");
  if (chosen) select.value = chosen;
}

// ---- Replay ----

const replay = { events: [], n: -1, timer: null };

async function loadReplay() {
  stopPlaying();
  const step = $("replay-step").value, scenario = $("replay-scenario").value;
  showError($("replay-error"), null);
  $("replay-pos").textContent = `replaying ${scenario} on ${step}…`;
  $("replay-pos").dataset.loaded = "false";
  try {
    const p = await api(`/api/replay?step=${encodeURIComponent(step)}&scenario=${encodeURIComponent(scenario)}`);
    replay.events = p.events;
    if (p.error) showError($("replay-error"), "The replay stopped: " + p.error);
    setReplay(-1);
    $("replay-pos").dataset.loaded = "true";
    history.replaceState(null, "", `?mode=replay&step=${step}&scenario=${scenario}`);
  } catch (err) {
    replay.events = [];
    setReplay(-1);
    showError($("replay-error"), err);
  }
}

function setReplay(n) {
  replay.n = Math.max(-1, Math.min(n, replay.events.length - 1));
  draw($("replay-view"), stateAt(replay.events, replay.n));
  drawLines($("replay-lines"), replay.events, replay.n, setReplay);
  const pos = $("replay-pos");
  pos.textContent = `line ${replay.n + 1} of ${replay.events.length}`;
  pos.dataset.n = replay.n + 1;
  pos.dataset.total = replay.events.length;
  if (replay.n >= replay.events.length - 1) stopPlaying();
}

// nextTurn is the index of the next wait line after n (or the end): one turn of the loop.
function nextTurn(events, n, dir) {
  for (let i = n + dir; i >= 0 && i < events.length; i += dir) if (WAITS.has(events[i].kind)) return i;
  return dir > 0 ? events.length - 1 : -1;
}

function stopPlaying() {
  clearInterval(replay.timer);
  replay.timer = null;
  $("replay-play").textContent = "▶ play";
}

function togglePlay() {
  if (replay.timer) return stopPlaying();
  if (replay.n >= replay.events.length - 1) setReplay(-1);
  $("replay-play").textContent = "⏸ pause";
  const tick = () => setReplay(replay.n + 1);
  replay.timer = setInterval(tick, 1000 / Number($("replay-speed").value));
}

function setupReplay() {
  $("replay-step").addEventListener("change", () => fillScenarios($("replay-scenario"), $("replay-step").value));
  $("replay-load").addEventListener("click", loadReplay);
  $("replay-play").addEventListener("click", togglePlay);
  $("replay-first").addEventListener("click", () => setReplay(-1));
  $("replay-last").addEventListener("click", () => setReplay(replay.events.length - 1));
  $("replay-back").addEventListener("click", () => setReplay(replay.n - 1));
  $("replay-fwd").addEventListener("click", () => setReplay(replay.n + 1));
  $("replay-back-turn").addEventListener("click", () => setReplay(nextTurn(replay.events, replay.n, -1)));
  $("replay-fwd-turn").addEventListener("click", () => setReplay(nextTurn(replay.events, replay.n, 1)));
  $("replay-speed").addEventListener("input", () => {
    $("replay-speed-out").textContent = $("replay-speed").value;
    if (replay.timer) { stopPlaying(); togglePlay(); }
  });
}

// ---- Live ----

const live = { id: null, source: null, events: [], state: newState(), clients: [] };

// Flags that make a stall show at once: small socket buffers, the echo on steps that serve the room by
// default, two loops on step09.
function defaultArgs(step) {
  const n = Number(step.replace("step", ""));
  const args = [];
  if (n >= 2 && n <= 9) args.push("-sndbuf 4096");
  if (n >= 5) args.push("-echo");
  if (n === 9) args.push("-loops 2");
  return args.join(" ");
}

function setStatus(state, message, seq) {
  const el = $("live-status");
  // The answer to an action and the event stream both report a status: keep the latest.
  if (seq !== undefined && seq < Number(el.dataset.seq)) return;
  el.dataset.state = state;
  if (seq !== undefined) el.dataset.seq = seq;
  el.textContent = message;
}

async function startLive() {
  await stopLive();
  const step = $("live-step").value;
  live.events = []; live.state = newState(); live.clients = [];
  drawLive();
  setStatus("starting", `building and starting ${step}…`);
  $("live-start").disabled = true;
  try {
    const body = new URLSearchParams({ step, args: $("live-args").value });
    const se = await api("/api/live", { method: "POST", body });
    live.id = se.id;
    live.source = new EventSource(`/api/live/${se.id}/events`);
    live.source.addEventListener("line", (m) => {
      const e = JSON.parse(m.data);
      live.events.push(e);
      fold(live.state, e);
      if (e.kind === "client" && e.op === "connect" && !live.clients.includes(e.sock)) live.clients.push(e.sock);
      scheduleDraw();
    });
    live.source.addEventListener("status", (m) => {
      const s = JSON.parse(m.data);
      setStatus(s.state, s.message, s.seq);
      if (s.state === "ended") endedLive();
    });
    live.source.onerror = () => { if (live.id) { setStatus("ended", "the connection to the live view was lost"); endedLive(); } };
    for (const id of ["live-stop", "live-connect", "live-term"]) $(id).disabled = false;
    history.replaceState(null, "", `?mode=live&step=${step}`);
  } catch (err) {
    setStatus("error", String(err.message || err));
  } finally {
    $("live-start").disabled = false;
  }
}

function endedLive() {
  if (live.source) live.source.close();
  live.source = null; live.id = null;
  for (const id of ["live-stop", "live-connect", "live-term"]) $(id).disabled = true;
  drawClientControls();
}

async function stopLive() {
  if (!live.id) return;
  const id = live.id;
  endedLive();
  try { await api(`/api/live/${id}/close`, { method: "POST" }); } catch { /* already over */ }
  setStatus("ended", "the session is over: its server and clients are gone");
}

async function act(action) {
  if (!live.id) return;
  try {
    const s = await api(`/api/live/${live.id}/act`, { method: "POST", body: JSON.stringify(action) });
    setStatus(s.state, s.message, s.seq);
  } catch (err) {
    setStatus("error", String(err.message || err));
  }
}

let drawPending = false;
function scheduleDraw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => { drawPending = false; drawLive(); });
}

function drawLive() {
  draw($("live-view"), live.state);
  drawLines($("live-lines"), live.events, live.events.length - 1, null);
  drawClientControls();
}

// One row of buttons per client, acting on its real socket.
function drawClientControls() {
  const box = $("live-clients");
  const have = new Set([...box.children].map((d) => d.dataset.client));
  for (const name of live.clients) {
    if (have.has(name)) continue;
    const d = document.createElement("div");
    d.className = "client-ctl";
    d.dataset.client = name;
    d.innerHTML = `<b>${esc(name)}</b>
      <input size="10" value="hello?" data-role="text"><button data-act="send">send line</button>
      <input size="7" value="200000" data-role="bytes"><button data-act="send-bytes">send bytes</button>
      <button data-act="stop-reading">stop reading</button><button data-act="resume-reading">resume reading</button>
      <button data-act="shutdown">half-close</button><button data-act="reset">reset</button><button data-act="close">close</button>`;
    d.addEventListener("click", (ev) => {
      const verb = ev.target.dataset?.act;
      if (!verb) return;
      act({ verb, client: name, text: d.querySelector("[data-role=text]").value, bytes: Number(d.querySelector("[data-role=bytes]").value) });
    });
    box.appendChild(d);
  }
  for (const d of box.children) {
    const s = live.state.socks.get(d.dataset.client);
    const gone = !live.id || (s && s.lane.some((x) => x.dir === "sent" && /^(reset|close)/.test(x.text)));
    d.querySelectorAll("button").forEach((b) => { b.disabled = gone; });
  }
}

function setupLive() {
  $("live-step").addEventListener("change", () => { $("live-args").value = defaultArgs($("live-step").value); });
  $("live-start").addEventListener("click", startLive);
  $("live-stop").addEventListener("click", stopLive);
  $("live-connect").addEventListener("click", () => act({ verb: "connect" }));
  $("live-term").addEventListener("click", () => act({ verb: "signal" }));
  $("live-clients").replaceChildren();
  window.addEventListener("pagehide", () => { if (live.id) navigator.sendBeacon(`/api/live/${live.id}/close`); });
}

// ---- Compare ----

const compare = { data: null, row: -1 };

function fillCompareScenarios() {
  fillScenarios($("compare-scenario"), $("compare-a").value, $("compare-scenario").value);
}

async function loadCompare() {
  const a = $("compare-a").value, b = $("compare-b").value, scenario = $("compare-scenario").value;
  showError($("compare-error"), null);
  $("compare-pos").textContent = `replaying ${scenario} on ${a} and ${b}…`;
  $("compare-pos").dataset.loaded = "false";
  try {
    compare.data = await api(`/api/compare?a=${a}&b=${b}&scenario=${encodeURIComponent(scenario)}`);
    const errs = [compare.data.a, compare.data.b].filter((p) => p.error).map((p) => `${p.step}: ${p.error}`);
    if (errs.length) showError($("compare-error"), errs.join("\n"));
    $("compare-a-title").textContent = `${a} ${compare.data.a.args.join(" ")}`;
    $("compare-b-title").textContent = `${b} ${compare.data.b.args.join(" ")}`;
    const rows = compare.data.rows;
    const text = (p, i) => (i >= 0 ? esc(p.events[i].text) : "");
    $("compare-rows").innerHTML = rows.map((r, i) =>
      `<tr class="${r.diff ? "diff" : ""}" data-row="${i}"><td class="a">${text(compare.data.a, r.a)}</td><td class="b">${text(compare.data.b, r.b)}</td></tr>`).join("");
    [...$("compare-rows").rows].forEach((tr, i) => tr.addEventListener("click", () => setCompare(i)));
    $("compare-pos").dataset.loaded = "true";
    $("compare-pos").dataset.diffs = rows.filter((r) => r.diff).length;
    setCompare(rows.findIndex((r) => r.diff));
    history.replaceState(null, "", `?mode=compare&a=${a}&b=${b}&scenario=${scenario}`);
  } catch (err) {
    compare.data = null;
    $("compare-rows").innerHTML = "";
    showError($("compare-error"), err);
  }
}

// setCompare draws both steps at row i: each side folded up to its last line at or before the row.
function setCompare(i) {
  if (!compare.data) return;
  const rows = compare.data.rows;
  compare.row = Math.max(0, Math.min(i, rows.length - 1));
  let na = -1, nb = -1;
  for (let k = 0; k <= compare.row; k++) { if (rows[k].a >= 0) na = rows[k].a; if (rows[k].b >= 0) nb = rows[k].b; }
  draw($("compare-a-view"), stateAt(compare.data.a.events, na));
  draw($("compare-b-view"), stateAt(compare.data.b.events, nb));
  [...$("compare-rows").rows].forEach((tr, k) => tr.classList.toggle("current", k === compare.row));
  $("compare-rows").rows[compare.row]?.scrollIntoView({ block: "nearest" });
  $("compare-pos").textContent = `row ${compare.row + 1} of ${rows.length}; ${$("compare-pos").dataset.diffs} lines differ`;
}

function setupCompare() {
  $("compare-a").addEventListener("change", fillCompareScenarios);
  $("compare-load").addEventListener("click", loadCompare);
  $("compare-back").addEventListener("click", () => setCompare(compare.row - 1));
  $("compare-fwd").addEventListener("click", () => setCompare(compare.row + 1));
  $("compare-next-diff").addEventListener("click", () => {
    const rows = compare.data?.rows || [];
    let k = compare.row + 1;
    while (k < rows.length && !(rows[k].diff && !rows[k - 1]?.diff)) k++;
    if (k < rows.length) setCompare(k);
  });
}

// ---- modes ----

function setMode(mode) {
  for (const s of document.querySelectorAll(".mode")) s.hidden = s.id !== mode;
  for (const t of document.querySelectorAll(".tab")) t.classList.toggle("on", t.dataset.mode === mode);
  document.body.dataset.mode = mode;
}

async function main() {
  for (const t of document.querySelectorAll(".tab")) t.addEventListener("click", () => setMode(t.dataset.mode));
  setupReplay(); setupLive(); setupCompare();
  const q = new URLSearchParams(location.search);
  const mode = q.get("mode") || "replay";
  setMode(mode);
  try {
    steps = await api("/api/steps");
  } catch (err) {
    $("message").hidden = false;
    $("message").textContent = "Cannot list the steps: " + err.message;
    return;
  }
  const step = q.get("step") || "step03";
  fillSteps($("replay-step"), step);
  fillScenarios($("replay-scenario"), $("replay-step").value, q.get("scenario") || "slow-reader");
  fillSteps($("live-step"), q.get("step") || "step02");
  $("live-args").value = defaultArgs($("live-step").value);
  fillSteps($("compare-a"), q.get("a") || "step02");
  fillSteps($("compare-b"), q.get("b") || "step03");
  fillScenarios($("compare-scenario"), $("compare-a").value, q.get("scenario") || "seed");
  if (q.get("step") && !steps.some((s) => s.name === q.get("step"))) {
    $("message").hidden = false;
    $("message").textContent = `Unknown step ${q.get("step")}: pick one of ${steps.map((s) => s.name).join(", ")}.`;
  }
  document.body.dataset.ready = "true";
  if (mode === "replay" && q.get("scenario")) loadReplay().then(() => { if (q.get("at")) setReplay(Number(q.get("at")) - 1); });
  if (mode === "compare" && q.get("scenario")) loadCompare();
}

main();
