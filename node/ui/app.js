// The status page: draws /v1/cluster and refreshes it every few seconds.
"use strict";

const refreshMs = 3000;
const palette = ["#1a73e8", "#e8710a", "#188038", "#d93025", "#9334e6", "#12b5cb", "#b06000", "#5f6368", "#e52592", "#3c8c3c"];

function el(tag, attrs, ...children) {
  const ns = ["svg", "circle", "line", "text", "g"].includes(tag) ? "http://www.w3.org/2000/svg" : null;
  const e = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function since(t) {
  let s = Math.max(0, (Date.now() - new Date(t).getTime()) / 1000);
  if (s < 60) return Math.round(s) + " s";
  if (s < 3600) return Math.round(s / 60) + " min";
  if (s < 86400) return (s / 3600).toFixed(1) + " h";
  return (s / 86400).toFixed(1) + " d";
}

function card(label, value, detail, cls) {
  return el("div", { class: "card" }, el("div", { class: "label" }, label),
    el("div", { class: "value " + (cls || "") }, value), el("div", { class: "detail" }, detail || ""));
}

function healState(h) {
  if (!h) return "";
  if (h.state === "waiting") return "waiting for " + (h.waiting || []).join(", ");
  if (h.state !== "idle") return h.state + " " + Math.round(100 * h.progress) + "%";
  return h.settled ? "settled" : "idle";
}

function render(v) {
  v.vnodes = v.vnodes || [];
  v.nodes = v.nodes || [];
  document.getElementById("self").textContent = "cluster as " + v.self + " sees it";
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  const banner = document.getElementById("banner");
  banner.hidden = !v.error;
  banner.textContent = v.error ? "ring: " + v.error : "";

  const hosts = v.nodes.map(n => n.addr);
  const color = a => palette[hosts.indexOf(a) % palette.length];
  const up = v.nodes.filter(n => n.up);
  const sum = f => up.reduce((t, n) => t + (f(n.status) || 0), 0);
  const stored = sum(s => s.blocks.stored_bytes), written = sum(s => s.blocks.written_bytes), fresh = sum(s => s.blocks.new_bytes);
  const missParts = sum(s => s.heal.missing_partitions), missBlocks = sum(s => s.heal.missing_blocks);
  const waiting = new Set(up.flatMap(n => n.status.heal.waiting || []));
  const down = v.nodes.filter(n => !n.up);
  const healing = up.filter(n => !["idle", "waiting"].includes(n.status.heal.state)).length;
  const settled = up.every(n => n.status.heal.settled);

  document.getElementById("cards").replaceChildren(
    card("nodes", up.length + " / " + v.nodes.length + " up", down.length ? "down: " + down.map(n => n.addr).join(", ") : "all answering", down.length ? "bad" : "ok"),
    card("ring", v.vnodes.length + " vnodes", "N = " + v.replicas + " replicas of every key"),
    card("under-replicated", missParts + " partitions, " + missBlocks + " blocks",
      waiting.size ? "waiting for " + [...waiting].join(", ") : "copies the last passes found missing", (missParts + missBlocks + waiting.size) ? "warn" : "ok"),
    card("healing", healing ? healing + " healing" : (settled ? "settled" : "idle"), "rebalancing and anti-entropy", healing ? "warn" : "ok"),
    card("stored", bytes(stored), "block bytes on disk, all replicas"),
    card("dedup", fresh ? (written / fresh).toFixed(2) + "×" : "–", bytes(written) + " written, " + bytes(fresh) + " new since start"),
    gcCard(up),
  );

  const svg = document.getElementById("ring");
  const r = 120;
  const parts = [el("circle", { cx: 0, cy: 0, r: r, fill: "none", stroke: "#dde1e6", "stroke-width": 10 })];
  for (const vn of v.vnodes) {
    const a = parseInt(vn.id.slice(0, 8), 16) / 2 ** 32 * 2 * Math.PI - Math.PI / 2;
    const x = r * Math.cos(a), y = r * Math.sin(a);
    const dot = el("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r: 6, fill: color(vn.addr), class: "vnode", "data-host": vn.addr });
    dot.append(el("title", {}, vn.addr + "\nvnode " + vn.id.slice(0, 16) + "…"));
    parts.push(dot);
  }
  parts.push(el("text", { x: 0, y: -4, "text-anchor": "middle", "font-size": 22, "font-weight": 600 }, v.vnodes.length));
  parts.push(el("text", { x: 0, y: 16, "text-anchor": "middle", "font-size": 11, fill: "#6b7480" }, "vnodes on " + new Set(v.vnodes.map(x => x.addr)).size + " hosts"));
  svg.replaceChildren(...parts);
  document.getElementById("legend").replaceChildren(...v.nodes.map(n =>
    el("li", {}, el("span", { class: "swatch", style: "background:" + (n.up ? color(n.addr) : "#9aa0a6") }),
      n.addr + (n.status ? " · " + n.status.node.id : "") + (n.up ? "" : " (down)") + (n.in_ring ? "" : " (not in ring)"))));

  document.querySelector("#nodes tbody").replaceChildren(...v.nodes.map(n => {
    const s = n.status;
    if (!s) return el("tr", { class: "node-row" }, el("td", {}, n.addr), el("td", { class: "bad msg", colspan: 9, title: n.error || "" }, "down: no answer"));
    const h = s.heal, busy = h.state !== "idle" && h.state !== "waiting";
    const heal = el("td", { class: h.settled ? "ok" : "warn" }, healState(h));
    if (busy) heal.append(el("span", { class: "bar" }, el("span", { style: "width:" + Math.round(100 * h.progress) + "%" })));
    return el("tr", { class: "node-row", "data-host": n.addr },
      el("td", {}, n.addr), el("td", { class: "ok" }, "up"), el("td", {}, s.node.version), el("td", {}, since(s.started)),
      el("td", {}, bytes(s.rss_bytes)), el("td", {}, bytes(s.store.lsm_bytes + s.store.vlog_bytes + s.blocks.stored_bytes)),
      el("td", {}, bytes(s.store.free_bytes)), el("td", {}, s.blocks.blocks + " (" + bytes(s.blocks.stored_bytes) + ")"),
      el("td", {}, h.partitions), heal);
  }));

  document.querySelector("#healing tbody").replaceChildren(...up.map(n => {
    const h = n.status.heal;
    return el("tr", {}, el("td", {}, n.addr), el("td", {}, h.passes),
      el("td", { class: (h.missing_partitions + h.missing_blocks) ? "warn" : "" }, h.missing_partitions + " partitions, " + h.missing_blocks + " blocks"),
      el("td", {}, h.arcs_differed + " / " + h.arcs_compared), el("td", {}, h.partitions_synced),
      el("td", {}, h.blocks_sent + " blocks (" + bytes(h.bytes_sent) + ")"),
      el("td", {}, h.partitions_dropped + " partitions, " + h.blocks_dropped + " blocks"),
      el("td", { class: h.blocks_corrupt ? "bad" : "" }, h.blocks_scrubbed + " / " + h.blocks_corrupt),
      el("td", { class: h.errors ? "warn" : "", title: h.last_error || "" }, h.errors));
  }));

  const errs = up.flatMap(n => (n.status.recent || []).map(e => ({ ...e, host: n.addr })))
    .sort((a, b) => new Date(b.time) - new Date(a.time)).slice(0, 30);
  document.querySelector("#errors tbody").replaceChildren(...(errs.length ? errs.map(e =>
    el("tr", {}, el("td", {}, new Date(e.time).toLocaleString()), el("td", {}, e.host),
      el("td", { class: e.level === "ERROR" ? "bad" : "warn" }, e.level), el("td", { class: "msg" }, e.message)))
    : [el("tr", {}, el("td", { colspan: 4, class: "muted" }, "none"))]));
}

// gcCard sums garbage collection over the nodes: what their sweeps freed,
// and a cycle under way or the latest one.
function gcCard(up) {
  const gcs = up.map(n => n.status.gc || {});
  const freed = gcs.reduce((t, g) => t + (g.freed_bytes || 0), 0);
  const busy = gcs.find(g => g.state && g.state !== "idle");
  const last = gcs.map(g => g.last).filter(Boolean).sort((a, b) => new Date(b.end) - new Date(a.end))[0];
  const detail = busy ? busy.state + " " + busy.done + "/" + busy.total
    : last ? "last cycle " + since(last.end) + " ago freed " + bytes(last.freed_bytes) : "no cycle yet";
  return card("garbage collected", bytes(freed), detail, busy ? "warn" : "");
}

// The token the page shows the node: given once in the address's fragment
// (#token=…, which no request carries) or typed into the form, and kept in
// this browser's local storage.
const tokenKey = "difuse-token";

function takeTokenFromAddress() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    localStorage.setItem(tokenKey, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname);
  }
}

function askForToken(why) {
  const form = document.getElementById("login");
  form.hidden = false;
  document.getElementById("login-why").textContent = why;
  form.onsubmit = (e) => {
    e.preventDefault();
    const t = document.getElementById("token").value.trim();
    if (!t) return;
    localStorage.setItem(tokenKey, t);
    form.hidden = true;
    refresh();
  };
}

async function refresh() {
  const token = localStorage.getItem(tokenKey);
  try {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    const resp = await fetch("/v1/cluster", { cache: "no-store", headers });
    if (resp.status === 401 || resp.status === 403) {
      if (token) localStorage.removeItem(tokenKey);
      const body = await resp.json().catch(() => ({}));
      askForToken(token ? "the token was refused: " + (body.error || resp.status) : "this node needs a token to show its status");
      return; // until a token is given
    }
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    render(await resp.json());
  } catch (e) {
    const banner = document.getElementById("banner");
    banner.hidden = false;
    banner.textContent = "cannot reach this node: " + e.message;
  }
  setTimeout(refresh, refreshMs);
}

takeTokenFromAddress();
refresh();
