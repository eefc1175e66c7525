// byeline dashboard: plain DOM, no framework, no build step. Every value from the API is put in
// the page with textContent (never innerHTML): SIP headers come from the outside world.
"use strict";

const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "href") node.setAttribute("href", value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

async function api(path) {
  const response = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (response.status === 401) {
    location.href = "/ui/login?next=" + encodeURIComponent(location.pathname);
    throw new Error("not logged in");
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function showError(error) {
  const box = document.getElementById("error");
  if (!box) return;
  box.hidden = !error;
  box.textContent = error ? "⚠ " + error.message : "";
}

function when(epoch) {
  if (!epoch) return "";
  const d = new Date(epoch * 1000);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function seconds(value) {
  if (value === null || value === undefined) return "";
  return value < 10 ? value.toFixed(2) + " s" : Math.round(value) + " s";
}

function badge(text, kind) {
  return el("span", { class: "badge " + (kind || text || "none") }, text || "—");
}

function routeText(route) {
  return Object.values(route || {}).filter((v) => !String(v).startsWith("{")).join(" · ");
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

// -- the index: live and recent calls -------------------------------------------------------

const listState = { offset: 0, limit: 25, total: 0 };

async function refreshLive() {
  const { calls } = await api("/live");
  const tbody = document.querySelector("#live tbody");
  fill(tbody, calls.map((c) => el("tr", { "data-call": c.call_id },
    el("td", {}, el("a", { href: "/ui/calls/" + encodeURIComponent(c.call_id) }, c.call_id)),
    el("td", {}, badge(c.state)),
    el("td", {}, c.caller), el("td", {}, c.callee), el("td", {}, c.five9_call_id || ""),
    el("td", {}, c.started_at ? seconds(Date.now() / 1000 - c.started_at) : ""),
    el("td", {}, routeText(c.route)))));
  document.getElementById("live-empty").hidden = calls.length > 0;
  document.getElementById("live-count").textContent = calls.length ? `(${calls.length})` : "";
}

async function refreshRecent() {
  const query = new URLSearchParams({ limit: listState.limit, offset: listState.offset });
  for (const [key, value] of new FormData(document.getElementById("filters"))) {
    if (value) query.set(key, value);
  }
  const page = await api("/calls?" + query);
  listState.total = page.total;
  const tbody = document.querySelector("#recent tbody");
  fill(tbody, page.calls.map((c) => el("tr", { "data-call": c.call_id, class: "delivery-" + (c.delivery || "none") },
    el("td", {}, when(c.started_at)),
    el("td", {}, el("a", { href: "/ui/calls/" + encodeURIComponent(c.call_id) }, c.call_id)),
    el("td", {}, c.caller || ""), el("td", {}, c.five9_call_id || ""),
    el("td", {}, c.status === "ended" ? badge(c.ended_by) : badge(c.status)),
    el("td", {}, badge(c.delivery), c.delivery_code ? " " + c.delivery_code : ""),
    el("td", {}, routeText(c.route)),
    el("td", {}, c.ended_at ? seconds(c.ended_at - c.started_at) : ""))));
  document.getElementById("recent-empty").hidden = page.calls.length > 0;
  document.getElementById("recent-count").textContent = `(${page.total})`;
  document.getElementById("prev").disabled = listState.offset === 0;
  document.getElementById("next").disabled = page.next === null;
}

async function refreshHealth() {
  const response = await fetch("/healthz");
  const health = await response.json();
  const node = document.getElementById("health");
  node.textContent = health.status === "ok" ? "store ok" :
    `database ${health.database}, ${health.spooled_rows} records spooled`;
  node.className = "health " + health.status;
}

function startIndex() {
  const tick = async () => {
    try {
      await Promise.all([refreshLive(), refreshRecent(), refreshHealth()]);
      showError(null);
    } catch (error) {
      showError(error);
    }
  };
  const filters = document.getElementById("filters");
  filters.addEventListener("input", () => { listState.offset = 0; tick(); });
  filters.addEventListener("submit", (event) => event.preventDefault());
  document.getElementById("prev").addEventListener("click", () => {
    listState.offset = Math.max(0, listState.offset - listState.limit); tick();
  });
  document.getElementById("next").addEventListener("click", () => {
    listState.offset += listState.limit; tick();
  });
  tick();
  setInterval(tick, 2000);
}

// -- a call: summary, routing result, ladder, attributes, transcript ------------------------

function headerLines(raw) {
  const head = raw.split(/\r?\n\r?\n/, 1)[0];
  return head.split(/\r?\n/).slice(1);
}

function messageLabel(message) {
  const line = message.first_line;
  if (line.startsWith("SIP/2.0 ")) {
    const cseq = headerLines(message.raw).find((h) => /^cseq\s*:/i.test(h));
    const method = cseq ? cseq.split(/\s+/).pop() : "";
    return line.slice(8) + (method ? ` (${method})` : "");
  }
  return line.split(" ", 1)[0];
}

function isBye(message) {
  return message.first_line.startsWith("BYE ");
}

function drawLadder(call) {
  const box = document.getElementById("ladder");
  const trace = call.trace;
  if (!trace.length) {
    box.replaceChildren(el("p", { class: "empty" }, "No SIP message recorded."));
    return;
  }
  const width = 760, left = 190, right = 640, top = 46, row = 34, headerRow = 16;
  const t0 = trace[0].at;
  // Rows first: a BYE gets extra lines for its X- headers.
  let y = top;
  const rows = trace.map((message) => {
    const extra = isBye(message) ? headerLines(message.raw).filter((h) => /^x-/i.test(h)) : [];
    const entry = { message, y: y + 18, extra };
    y += row + extra.length * headerRow + (extra.length ? 8 : 0);
    return entry;
  });
  const height = y + 10;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "ladder-svg", role: "img" });
  const peer = call.remote || "Five9";
  root.append(
    svg("text", { x: left, y: 18, class: "lane-title", "text-anchor": "middle" }, "Five9"),
    svg("text", { x: left, y: 34, class: "lane-sub", "text-anchor": "middle" }, peer),
    svg("text", { x: right, y: 18, class: "lane-title", "text-anchor": "middle" }, "byeline"),
    svg("text", { x: right, y: 34, class: "lane-sub", "text-anchor": "middle" }, call.transport || ""),
    svg("line", { x1: left, y1: top, x2: left, y2: height, class: "lane" }),
    svg("line", { x1: right, y1: top, x2: right, y2: height, class: "lane" }),
  );
  const raw = document.getElementById("raw");
  for (const { message, y: ay, extra } of rows) {
    const inbound = message.direction === "in";
    const [x1, x2] = inbound ? [left, right] : [right, left];
    const bye = isBye(message);
    const group = svg("g", {
      class: "msg " + (bye ? "bye " : "") + (message.first_line.startsWith("SIP/2.0") ? "response" : "request"),
      "data-direction": message.direction, tabindex: "0",
    });
    if (bye) {
      group.append(svg("rect", { x: 4, y: ay - 16, width: width - 8, height: 26 + extra.length * headerRow + (extra.length ? 8 : 0), class: "bye-band", rx: 4 }));
    }
    const tip = inbound ? x2 - 9 : x2 + 9;
    group.append(
      svg("text", { x: 8, y: ay + 4, class: "time" }, "+" + (message.at - t0).toFixed(3) + " s"),
      svg("line", { x1, y1: ay, x2: tip, y2: ay, class: "arrow" }),
      svg("polygon", { points: `${x2},${ay} ${tip},${ay - 5} ${tip},${ay + 5}`, class: "head" }),
      svg("text", { x: (left + right) / 2, y: ay - 6, "text-anchor": "middle", class: "label" }, messageLabel(message)),
    );
    extra.forEach((h, i) => {
      group.append(svg("text", { x: (left + right) / 2, y: ay + 20 + i * headerRow, "text-anchor": "middle", class: "bye-header" },
        h.length > 90 ? h.slice(0, 88) + "…" : h));
    });
    const title = svg("title", {}, message.first_line);
    group.append(title);
    const show = () => {
      raw.hidden = false;
      raw.textContent = `${message.direction === "in" ? "received from" : "sent to"} ${message.peer} over ${message.transport}\n\n` + message.raw;
      for (const g of root.querySelectorAll(".msg.selected")) g.classList.remove("selected");
      group.classList.add("selected");
    };
    group.addEventListener("click", show);
    group.addEventListener("keydown", (event) => { if (event.key === "Enter") show(); });
    root.append(group);
  }
  box.replaceChildren(root);
}

function drawCall(call) {
  document.title = "byeline · " + call.call_id;
  document.getElementById("call-id").textContent = call.call_id;
  const summary = document.getElementById("summary");
  const facts = [
    ["status", badge(call.status)], ["ended by", badge(call.ended_by)],
    ["delivery", el("span", {}, badge(call.delivery), call.delivery_code ? " " + call.delivery_code : "")],
    ["caller", call.caller], ["called", call.callee], ["Five9 call id", call.five9_call_id],
    ["Five9 session", call.five9_session_id], ["trunk", call.trunk_id], ["from", call.remote],
    ["started", when(call.started_at)],
    ["answered", call.answered_at ? "+" + seconds(call.answered_at - call.started_at) : ""],
    ["ended", call.ended_at ? "+" + seconds(call.ended_at - call.started_at) : ""],
  ];
  summary.replaceChildren(el("dl", {}, ...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v || "—")])));

  const handoff = call.handoff;
  const sent = new Map(handoff.headers_sent.map(([n, v]) => [n.toLowerCase(), v]));
  const refused = new Map(handoff.header_refusals.map((r) => [String(r.name).toLowerCase(), r.reason]));
  fill(document.querySelector("#handoff tbody"), Object.entries(handoff.headers).map(([name, value]) => {
    const key = name.toLowerCase();
    const state = refused.has(key) ? "refused: " + refused.get(key) : sent.has(key) ? (handoff.delivered ? "delivered" : "sent, " + (call.delivery || "")) : "not sent";
    return el("tr", { class: sent.has(key) && handoff.delivered ? "ok" : "warn" },
      el("td", {}, el("code", {}, name)), el("td", { class: "value" }, value), el("td", {}, state));
  }));
  document.getElementById("handoff-note").textContent = handoff.delivered
    ? "Five9 acknowledged the BYE that carried these headers."
    : "These headers did not all reach Five9 on the BYE: the IVR can read them from GET /handoff/" + (call.five9_call_id || "{five9_call_id}") + " and the webhooks carry them.";

  drawLadder(call);

  fill(document.querySelector("#attributes tbody"), Object.entries(call.attributes).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) =>
    el("tr", { class: k.startsWith("five9.") ? "route" : "" }, el("td", {}, el("code", {}, k)), el("td", { class: "value" }, v))));

  if (call.recording) {
    document.getElementById("recording").src = call.recording;
    document.getElementById("recording-box").hidden = false;
  }

  const transcript = document.getElementById("transcript");
  transcript.replaceChildren(...call.transcript.map((line) =>
    el("li", { class: "said " + line.role }, el("span", { class: "who" }, line.role), el("span", { class: "at" }, "+" + seconds(line.at - call.started_at)), el("span", { class: "text" }, line.text))));
  document.getElementById("transcript-empty").hidden = call.transcript.length > 0;

  fill(document.querySelector("#webhooks tbody"), call.webhooks.map((w) =>
    el("tr", {}, el("td", {}, w.url), el("td", {}, badge(w.state)), el("td", {}, w.attempts),
      el("td", {}, w.last_status ? "HTTP " + w.last_status : (w.last_error || "")))));
  document.getElementById("webhooks-empty").hidden = call.webhooks.length > 0;
}

function startCall() {
  const id = decodeURIComponent(location.pathname.split("/").pop());
  const tick = async () => {
    try {
      const call = await api("/calls/" + encodeURIComponent(id));
      drawCall(call);
      showError(null);
      if (call.status !== "ended") setTimeout(tick, 2000);
    } catch (error) {
      showError(error);
      setTimeout(tick, 4000);
    }
  };
  tick();
}

function startLogin() {
  const params = new URLSearchParams(location.search);
  document.getElementById("failed").hidden = !params.has("failed");
  const next = params.get("next");
  if (next) document.getElementById("login").action = "/ui/login?next=" + encodeURIComponent(next);
}

const page = document.body.dataset.page;
if (page === "index") startIndex();
else if (page === "call") startCall();
else if (page === "login") startLogin();
