// tenure's dashboard: follows /api/events and draws what it says; sends the controls; plays
// the scenarios. No framework, no build step.
"use strict";

const $ = (s) => document.querySelector(s);
const PALETTE = ["#2f6db5", "#c0572b", "#2f8f5b", "#8a4fb3", "#b38f1f", "#1f8f8f", "#b33f6f"];
const colors = new Map();
function colorOf(name) {
  if (!name) return "#9a9a92";
  if (!colors.has(name)) colors.set(name, PALETTE[colors.size % PALETTE.length]);
  return colors.get(name);
}
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-") || k === "title" || k === "type") e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : String(c));
  return e;
}
function clock(ms) {
  const d = new Date(ms);
  return d.toTimeString().slice(0, 8) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

// ----- live view --------------------------------------------------------------------------

let latest = null;

function sparkline(values, label, unit) {
  const w = 110, h = 24;
  const nums = values.map((v) => (v == null ? null : Number(v)));
  const max = Math.max(1e-9, ...nums.filter((v) => v != null));
  const pts = [];
  nums.forEach((v, i) => {
    if (v == null) return;
    const x = nums.length <= 1 ? w : (i * w) / (nums.length - 1);
    pts.push(`${x.toFixed(1)},${(h - 2 - (v / max) * (h - 4)).toFixed(1)}`);
  });
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", pts.join(" "));
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", "#2f6db5");
  line.setAttribute("stroke-width", "1.5");
  svg.append(line);
  const last = [...nums].reverse().find((v) => v != null);
  const text = last == null ? "–" : (last >= 10 ? last.toFixed(0) : last.toFixed(2)) + unit;
  return el("div", { class: "spark" }, el("span", {}, label), svg, el("span", {}, text));
}

function memberCard(m, dev) {
  const gone = ["down", "unreachable", "removed"].includes(m.state);
  const role = gone ? m.state : m.role || "starting";
  const card = el("div", { class: "member", "data-member": m.name, "data-role": m.state === "up" ? (m.role || "") : "", "data-state": m.state });
  const flags = el("span", {});
  if (m.state === "paused") flags.append(el("span", { class: "flag" }, "PAUSED"));
  if (m.isolated) flags.append(el("span", { class: "flag" }, "ISOLATED"));
  if (m.learner) flags.append(el("span", { class: "flag", "data-field": "learner", title: "a learner gets the log but does not vote or count for commits" }, "LEARNER"));
  if (!m.local && dev) flags.append(el("span", { class: "flag", title: "runs in another process: read from its client URL, no controls" }, "REMOTE"));
  card.append(el("div", { class: "head" },
    el("span", {}, el("span", { class: "name" }, m.name), " ", el("span", { class: "note" }, m.client_url.replace("http://", ""))),
    el("span", {}, el("span", { class: "role", "data-field": "role" }, role), flags)));
  const field = (label, name, value) => [el("dt", {}, label), el("dd", { "data-field": name }, value ?? "–")];
  card.append(el("dl", {},
    ...field("term", "term", m.term), ...field("vote", "vote", m.vote),
    ...field("leader", "leader", m.leader), ...field("last", "last", m.last_index),
    ...field("commit", "commit", m.commit_index), ...field("applied", "applied", m.applied_index),
    ...field("snapshot", "snapshot", m.snapshot_index), ...field("log from", "first", m.first_index)));
  const peers = el("div", { class: "peers", "data-field": "peers" }, "peers: ");
  for (const p of m.peers) {
    peers.append(el("span", { class: m.peers_reachable.includes(p) ? "chip" : "chip unreachable" }, p));
  }
  if (m.peers.length === 0) peers.append(gone ? "–" : "none yet");
  card.append(peers);
  card.append(sparkline(m.applied_per_s, "applied/s", ""));
  card.append(sparkline(m.write_latency_ms, "write ms", ""));
  card.append(sparkline(m.fsync_ms, "fsync ms", ""));
  if (dev && m.local) {
    const b = (action, label, enabled, title) =>
      el("button", { "data-action": action, "data-member": m.name, disabled: !enabled, title, onclick: () => control(`/api/members/${m.name}/${action}`) }, label);
    const up = m.state !== "down";
    card.append(el("div", { class: "buttons" },
      up ? b("kill", "kill", true, "stop this member (its data stays)") : b("restart", "restart", true, "start it again from its data"),
      m.state === "paused" ? b("resume", "resume", true, "let it go on") : b("pause", "pause", up, "hold its replica and clock still"),
      m.isolated ? b("heal", "heal", up, "reconnect it") : b("isolate", "isolate", up, "cut it off from its peers")));
  }
  return card;
}

function render(doc) {
  latest = doc;
  const dev = doc.mode === "dev";
  document.body.classList.toggle("mode-dev", dev);
  document.body.classList.toggle("mode-serve", !dev);
  $("#mode").textContent = dev ? "tenure dev" : "tenure serve (watch only)";
  $("#leader").textContent = doc.leader || "none";
  $("#leader").style.color = doc.leader ? colorOf(doc.leader) : "";
  for (const m of doc.members) colorOf(m.name);
  const members = $("#members");
  members.replaceChildren(...doc.members.map((m) => memberCard(m, dev)));
  $("#timeline").replaceChildren(...doc.timeline.map((t) => {
    const box = el("div", { class: t.leader ? "term" : "term none", title: `term ${t.term}: ${t.leader ? "led by " + t.leader : "no leader elected"} (from ${clock(t.at_ms)})` },
      `t${t.term} `, el("b", {}, t.leader || "—"));
    if (t.leader) box.style.background = colorOf(t.leader);
    return box;
  }));
  const list = $("#events");
  const atBottom = list.scrollTop === 0;
  list.replaceChildren(...doc.events.slice().reverse().map((e) =>
    el("li", { class: "k-" + e.kind }, el("span", { class: "time" }, clock(e.at_ms)), el("span", { class: "kind" }, e.kind), e.text)));
  if (atBottom) list.scrollTop = 0;
}

async function control(path, body) {
  const out = $("#control-result");
  out.className = "result";
  out.textContent = "…";
  try {
    const r = await fetch(path, { method: "POST", headers: { "content-type": "application/json" }, body: body ? JSON.stringify(body) : "" });
    const j = await r.json();
    out.textContent = j.ok || (j.revision != null ? `${j.member} wrote it at revision ${j.revision}` : j.error);
    if (!r.ok) out.className = "result error";
  } catch (e) {
    out.className = "result error";
    out.textContent = String(e);
  }
}

for (const b of document.querySelectorAll("[data-leader-action]")) {
  b.addEventListener("click", () => control(`/api/leader/${b.dataset.leaderAction}`));
}
$("#put").addEventListener("submit", (ev) => {
  ev.preventDefault();
  control("/api/put", { key: $("#put-key").value, value: $("#put-value").value });
});

function follow() {
  const source = new EventSource("/api/events");
  source.addEventListener("open", () => { $("#connection").textContent = "live"; $("#connection").className = "badge on"; });
  source.addEventListener("state", (e) => render(JSON.parse(e.data)));
  source.addEventListener("error", () => { $("#connection").textContent = "reconnecting"; $("#connection").className = "badge off"; });
}
follow();

// ----- scenario player --------------------------------------------------------------------

let trace = null;
let step = 0;

function showStep(i) {
  if (!trace || trace.steps.length === 0) return;
  step = Math.max(0, Math.min(trace.steps.length - 1, i));
  const s = trace.steps[step];
  $("#slider").max = trace.steps.length - 1;
  $("#slider").value = step;
  $("#step-count").textContent = `step ${step + 1} of ${trace.steps.length}`;
  $("#command").textContent = s.command;
  $("#command-explanation").textContent = s.command_explanation;
  // The opening comment is the summary above; later ones say what happens from here on.
  $("#note").textContent = s.note === trace.summary ? "" : s.note;
  $("#line").textContent = s.line || "(no output)";
  $("#explanation").textContent = s.explanation || s.command_explanation;
  const from = Math.max(0, step - 8);
  const ctx = $("#context");
  ctx.start = from + 1;
  ctx.replaceChildren(...trace.steps.slice(from, step + 9).map((t, k) =>
    el("li", { class: from + k === step ? "current" : "", onclick: () => showStep(from + k) }, t.line || "> " + t.command)));
  $("#nodes tbody").replaceChildren(...s.nodes.map((n) =>
    el("tr", { class: !n.up ? "down" : n.role === "leader" ? "leader" : "" },
      el("td", {}, n.id), el("td", {}, n.up ? n.role : "down"), el("td", {}, n.term),
      el("td", {}, n.leader || "–"), el("td", {}, n.last_index), el("td", {}, n.applied))));
  $("#prev").disabled = $("#first").disabled = step === 0;
  $("#next").disabled = $("#last").disabled = step === trace.steps.length - 1;
}

async function load(id) {
  const r = await fetch(`/api/scenarios/${encodeURIComponent(id)}`);
  trace = await r.json();
  $("#summary").textContent = trace.summary;
  showStep(0);
}

(async () => {
  const list = await (await fetch("/api/scenarios")).json();
  $("#scenario").replaceChildren(...list.map((s) => el("option", { value: s.id }, s.title)));
  const wanted = new URLSearchParams(location.search).get("scenario");
  if (wanted && list.some((s) => s.id === wanted)) $("#scenario").value = wanted;
  await load($("#scenario").value);
})();
$("#scenario").addEventListener("change", () => load($("#scenario").value));
$("#prev").addEventListener("click", () => showStep(step - 1));
$("#next").addEventListener("click", () => showStep(step + 1));
$("#first").addEventListener("click", () => showStep(0));
$("#last").addEventListener("click", () => showStep(Infinity));
$("#slider").addEventListener("input", () => showStep(Number($("#slider").value)));
document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT" && e.target.type !== "range") return;
  if (e.key === "ArrowRight") showStep(step + 1);
  if (e.key === "ArrowLeft") showStep(step - 1);
});
