// simlabel's review page: grids of items that share one proposal, a detail view, the keyboard.
// A labelling queue (select's) works by selection: pick items, give them a label by key or by name,
// find more like them by similarity or title. Every text goes in through textContent; the server only
// ever sees catalog ids and item keys.
"use strict";

const TOKEN = document.querySelector('meta[name="review-token"]').content;
const $ = (id) => document.getElementById(id);
// a grid is one page of one proposal: "accept the grid" only ever decides what the reviewer can see
const PAGE = 24;
const state = { items: [], groups: [], pages: [], group: 0, focus: 0, out: new Set(), detail: null, alternatives: [],
  sel: new Set(), anchor: -1, view: { mode: "queue" }, labels: [] };

// a queue of items to label (made by select) rather than proposals to check
function labelMode() {
  const o = $("queue").selectedOptions[0];
  return !!o && o.dataset.kind === "select";
}

function toast(text) {
  const t = $("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 2500);
}

async function api(path, payload) {
  const opts = payload === undefined ? {} : {
    method: "POST", body: JSON.stringify(payload),
    headers: { "Content-Type": "application/json", "X-Review-Token": TOKEN },
  };
  const res = await fetch(path, opts);
  const data = await res.json().catch(() => ({ error: res.statusText }));
  if (!res.ok) { toast(data.error || res.statusText); throw new Error(data.error); }
  return data;
}

function imageUrl(id, size) { return "/image/" + encodeURIComponent(id) + "?size=" + size; }

function showProgress(p) {
  const q = p.queues.find((x) => x.queue === $("queue").value) || { decided: 0, total: 0, beyond: 0 };
  const beyond = q.beyond ? ` (+${q.beyond} more labelled)` : "";
  $("progress").textContent = `${q.decided} / ${q.total} decided in this queue${beyond} · ${p.decided} / ${p.total} in all`;
}

function fetchView() {
  const queue = $("queue").value;
  if (state.view.mode === "similar") return api("/api/similar?" + new URLSearchParams({ queue: queue, id: state.view.id }));
  if (state.view.mode === "search") return api("/api/search?" + new URLSearchParams({ queue: queue, q: state.view.q }));
  const params = new URLSearchParams({ queue: queue, status: $("status").value });
  if ($("min-score").value !== "") params.set("min_score", $("min-score").value);
  return api("/api/items?" + params.toString());
}

async function loadLabels() {
  const on = labelMode();
  $("labelbar").hidden = !on;
  $("label-hint").hidden = !on;
  $("review-hint").hidden = on;
  $("back").hidden = state.view.mode === "queue";
  $("search-box").hidden = document.body.dataset.search !== "yes";
  $("more-like").hidden = document.body.dataset.similar !== "yes";
  if (!on) { state.labels = []; return; }
  const data = await api("/api/labels?" + new URLSearchParams({ queue: $("queue").value }));
  state.labels = data.labels;
  $("label-keys").replaceChildren(...state.labels.slice(0, 9).map((l, n) => {
    const chip = document.createElement("button");
    chip.type = "button"; chip.className = "chip"; chip.dataset.label = l;
    const key = document.createElement("kbd"); key.textContent = String(n + 1);
    chip.append(key, document.createTextNode(l));
    chip.addEventListener("click", () => labelWith(l));
    return chip;
  }));
  $("label-options").replaceChildren(...state.labels.map((l) => { const o = document.createElement("option"); o.value = l; return o; }));
}

async function load(keepGroup) {
  const data = await fetchView();
  const current = state.pages[state.group];
  state.items = data.items;
  state.groups = [...new Set(data.items.map((it) => it.group))];
  state.pages = [];
  for (const g of state.groups) {
    const n = data.items.filter((it) => it.group === g).length;
    for (let start = 0; start < n; start += PAGE) state.pages.push({ group: g, start: start, n: n });
  }
  const sel = $("group");
  sel.replaceChildren(...state.groups.map((g) => {
    const o = document.createElement("option");
    o.value = g; o.textContent = `${g} (${data.items.filter((it) => it.group === g).length})`;
    return o;
  }));
  const again = keepGroup && current ? state.pages.findIndex((pg) => pg.group === current.group && pg.start === current.start) : -1;
  const first = current ? state.pages.findIndex((pg) => pg.group === current.group) : -1;
  state.group = again >= 0 ? again : first >= 0 ? first : Math.min(state.group, Math.max(state.pages.length - 1, 0));
  showProgress(data.progress);
  renderGrid();
}

function groupItems() {
  const pg = state.pages[state.group];
  if (!pg) return [];
  return state.items.filter((it) => it.group === pg.group).slice(pg.start, pg.start + PAGE);
}

function caption(it) {
  const from = it.old ? `${it.old} → ` : "";
  const score = it.score === null ? "" : ` (${it.score.toFixed(2)})`;
  if (labelMode()) return `${it.id}` + (it.proposed ? ` · proposal: ${it.proposed}${score}` : "") + (it.found ? ` · ${it.found}` : "");
  return `${it.id}: ${from}${it.proposed || "to label"}${score}`;
}

function renderGrid() {
  showSelected();
  const items = groupItems();
  const pg = state.pages[state.group];
  $("grid-title").textContent = pg ? `${pg.group} · ${pg.n > PAGE ? `${pg.start + 1}-${pg.start + items.length} of ` : ""}${pg.n} item(s)` : "";
  $("empty").hidden = items.length > 0;
  state.focus = Math.min(state.focus, Math.max(items.length - 1, 0));
  $("group").value = pg ? pg.group : "";
  $("grid").replaceChildren(...items.map((it, n) => {
    const card = document.createElement("div");
    card.className = "card";
    card.dataset.item = it.item;
    const labelling = labelMode();
    if (!labelling && state.out.has(it.item)) card.classList.add("out");
    if (labelling && state.sel.has(it.item)) card.classList.add("selected");
    if (n === state.focus) card.classList.add("focus");
    if (it.decision) card.classList.add(labelling ? (it.decision.new ? "labelled" : "skipped") : it.decision.action);
    const img = document.createElement("img");
    img.src = imageUrl(it.id, "thumb"); img.alt = it.id; img.loading = "lazy";
    const cap = document.createElement("div");
    cap.textContent = caption(it);
    const why = document.createElement("div");
    why.className = "why";
    why.textContent = it.title + (it.decision && !labelling ? ` · ${it.decision.action}${it.decision.new ? ": " + it.decision.new : ""}` : "");
    card.append(img, cap);
    if (labelling && it.decision && it.decision.new) {
      const given = document.createElement("div");
      given.className = "label-given"; given.textContent = "→ " + it.decision.new;
      card.append(given);
    }
    card.append(why);
    card.addEventListener("click", (ev) => { if (labelling) pick(n, ev.shiftKey); else { state.focus = n; toggle(it.item); } });
    card.addEventListener("dblclick", () => { state.focus = n; openDetail(it); });
    return card;
  }));
}

function toggle(key) {
  if (state.out.has(key)) state.out.delete(key); else state.out.add(key);
  renderGrid();
}

// select an item of the grid; with shift, every item from the last one picked
function pick(n, range) {
  const items = groupItems();
  if (range && state.anchor >= 0) {
    const [a, b] = [Math.min(state.anchor, n), Math.max(state.anchor, n)];
    for (let i = a; i <= b && i < items.length; i++) state.sel.add(items[i].item);
  } else if (state.sel.has(items[n].item)) {
    state.sel.delete(items[n].item);
  } else {
    state.sel.add(items[n].item);
  }
  state.anchor = n; state.focus = n;
  renderGrid();
}

function showSelected() {
  const n = groupItems().filter((it) => state.sel.has(it.item)).length;
  $("selected-count").textContent = n ? `${n} selected` : "";
}

// what a key labels: the selection shown, or else the focused item
function targets() {
  const items = groupItems();
  const keys = items.filter((it) => state.sel.has(it.item)).map((it) => it.item);
  return keys.length ? keys : items[state.focus] ? [items[state.focus].item] : [];
}

async function labelWith(label) {
  const keys = targets();
  if (!label || !keys.length) return;
  await decide(keys, "relabel", label);
  state.sel.clear(); state.anchor = -1;
  await loadLabels();
  await load(true);
}

async function acceptProposals() {
  const keys = new Set(targets());
  const with_ = groupItems().filter((it) => keys.has(it.item) && it.proposed).map((it) => it.item);
  if (!with_.length) { toast("no proposal to accept here: give a label (1-9 or l)"); return; }
  await decide(with_, "accept");
  state.sel.clear(); state.anchor = -1;
  await loadLabels();
  await load(true);
}

async function setView(view) {
  if (view.mode !== "search") $("search").value = "";
  state.view = view; state.group = 0; state.focus = 0; state.sel.clear(); state.anchor = -1;
  $("back").hidden = view.mode === "queue";
  await load(false);
}

function moreLike() {
  const it = groupItems()[state.focus];
  if (it && document.body.dataset.similar === "yes") setView({ mode: "similar", id: it.id });
}

async function decide(items, action, label) {
  if (!items.length) return;
  const data = await api("/api/decide", { queue: $("queue").value, items: items, action: action, label: label });
  toast(labelMode() && action === "relabel" ? `${data.written} labelled ${label}` : `${data.written} ${action}${label ? " → " + label : ""}`);
  showProgress(data.progress);
}

async function decideGrid(action) {
  const keys = groupItems().map((it) => it.item).filter((k) => !state.out.has(k));
  await decide(keys, action);
  state.out.clear();
  await load(false);
  nextOpenGroup();
}

function nextOpenGroup() {
  if ($("status").value !== "open") { moveGroup(1); return; }
  renderGrid();
}

function moveGroup(step) {
  if (!state.pages.length) return;
  state.group = (state.group + step + state.pages.length) % state.pages.length;
  state.focus = 0; state.out.clear(); state.sel.clear(); state.anchor = -1;
  renderGrid();
}

async function undo() {
  const data = await api("/api/undo", { queue: $("queue").value });
  toast(data.undone ? `undone: ${data.undone.action} of ${data.count > 1 ? data.count + " items" : data.undone.id}` : "nothing to undo");
  await loadLabels();
  await load(true);
  if (state.detail) await openDetail(state.detail);
}

async function openDetail(it) {
  const params = new URLSearchParams({ queue: it.queue, item: it.item });
  const d = await api("/api/item?" + params.toString());
  state.detail = it;
  // in a labelling queue the keys keep the label bar's numbers
  state.alternatives = labelMode() ? state.labels : d.alternatives;
  $("grid-view").hidden = true;
  $("detail-view").hidden = false;
  $("detail-image").src = imageUrl(d.id, "full");
  $("detail-image").alt = d.id;
  $("detail-title").textContent = d.title || d.id;
  $("detail-labels").textContent = `${d.id} · queue ${d.queue} (${d.kind}) · given: ${d.old || "none"} · proposed: ${d.proposed || "none"}`
    + (d.score === null ? "" : ` · score ${d.score.toFixed(3)}`);
  $("alternatives").replaceChildren(...state.alternatives.slice(0, 9).map((a) => {
    const li = document.createElement("li"); li.textContent = a; return li;
  }));
  $("basis-entry").hidden = d.kind !== "basis";
  if (d.kind === "basis") { $("basis-labels").value = d.decision ? d.decision.new : d.old; }
  $("detail-decision").textContent = d.decision ? `decided: ${d.decision.action}${d.decision.new ? " → " + d.decision.new : ""}` : "open";
  $("explain").replaceChildren(...d.explain.map((e) => {
    const card = document.createElement("div"); card.className = "card";
    if (e.image) { const img = document.createElement("img"); img.src = imageUrl(e.id, "thumb"); img.alt = e.id; card.append(img); }
    const cap = document.createElement("div"); cap.textContent = `${e.id}: ${e.caption}`; card.append(cap);
    return card;
  }));
}

function closeDetail() {
  state.detail = null;
  $("detail-view").hidden = true;
  $("grid-view").hidden = false;
  load(true);
}

function moveDetail(step) {
  const items = groupItems();
  const n = items.findIndex((it) => it.item === state.detail.item);
  const next = items[n + step];
  if (next) { state.focus = n + step; openDetail(next); } else { closeDetail(); }
}

async function detailDecide(action, label) {
  await decide([state.detail.item], action, label);
  await load(true);
  const items = groupItems();
  const n = items.findIndex((it) => it.item === state.detail.item);
  if (n >= 0) moveDetail(1); else if (items[state.focus]) openDetail(items[state.focus]); else closeDetail();
}

document.addEventListener("keydown", (ev) => {
  if (ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT") {
    const text = ev.target.value ? ev.target.value.trim() : "";
    if (ev.target.id === "basis-labels" && ev.key === "Enter" && text) {
      detailDecide("relabel", text);
    } else if (ev.target.id === "label-input" && ev.key === "Enter" && text) {
      ev.target.value = ""; ev.target.blur();
      if (state.detail) detailDecide("relabel", text); else labelWith(text);
    } else if (ev.target.id === "search" && ev.key === "Enter" && text) {
      ev.target.blur(); setView({ mode: "search", q: text });
    } else if (ev.key === "Escape") { ev.target.blur(); }
    return;
  }
  const help = $("help");
  if (ev.key === "?") { help.hidden = !help.hidden; return; }
  if (ev.key === "Escape" && (!help.hidden || state.detail)) { if (!help.hidden) help.hidden = true; else closeDetail(); return; }
  if (ev.key === "u") { undo(); return; }
  if (state.detail) {
    if (ev.key === "l" && labelMode()) { ev.preventDefault(); $("label-input").focus(); return; }
    if (ev.key === "a") detailDecide("accept");
    else if (ev.key === "r") detailDecide("reject");
    else if (ev.key === "s" || ev.key === "n" || ev.key === "ArrowRight") moveDetail(1);
    else if (ev.key === "p" || ev.key === "ArrowLeft") moveDetail(-1);
    else if (/^[1-9]$/.test(ev.key) && state.alternatives[+ev.key - 1] !== undefined) detailDecide("relabel", state.alternatives[+ev.key - 1]);
    return;
  }
  const items = groupItems();
  if (labelMode()) {
    if (/^[1-9]$/.test(ev.key)) { const l = state.labels[+ev.key - 1]; if (l !== undefined) labelWith(l); return; }
    if ((ev.ctrlKey || ev.metaKey) && ev.key === "a") { ev.preventDefault(); items.forEach((it) => state.sel.add(it.item)); renderGrid(); return; }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.key === "a") { acceptProposals(); return; }
    if (ev.key === "l") { ev.preventDefault(); $("label-input").focus(); return; }
    if (ev.key === "/") { ev.preventDefault(); if (!$("search-box").hidden) $("search").focus(); return; }
    if (ev.key === "m") { moreLike(); return; }
    if (ev.key === "b") { if (state.view.mode !== "queue") setView({ mode: "queue" }); return; }
    if (ev.key === "Escape") { if (state.sel.size) { state.sel.clear(); renderGrid(); } else if (state.view.mode !== "queue") setView({ mode: "queue" }); return; }
    if (ev.key === " " && items[state.focus]) { ev.preventDefault(); pick(state.focus, ev.shiftKey); return; }
    if (ev.key === "r") return;  // nothing to reject: an item to label has no proposal to be wrong
  }
  if (ev.key === "a") decideGrid("accept");
  else if (ev.key === "r") decideGrid("reject");
  else if (ev.key === "n" || ev.key === "s") moveGroup(1);
  else if (ev.key === "p") moveGroup(-1);
  else if (ev.key === " " && items[state.focus]) { ev.preventDefault(); toggle(items[state.focus].item); }
  else if (ev.key === "Enter" && items[state.focus]) openDetail(items[state.focus]);
  else if (ev.key === "ArrowRight") { state.focus = Math.min(state.focus + 1, items.length - 1); renderGrid(); }
  else if (ev.key === "ArrowLeft") { state.focus = Math.max(state.focus - 1, 0); renderGrid(); }
  else return;
});

$("queue").addEventListener("change", async () => { state.view = { mode: "queue" }; state.group = 0; state.sel.clear(); await loadLabels(); load(false); });
$("status").addEventListener("change", () => load(true));
$("min-score").addEventListener("change", () => load(true));
$("group").addEventListener("change", () => {
  state.group = state.pages.findIndex((pg) => pg.group === $("group").value); state.focus = 0; renderGrid();
});
$("help-button").addEventListener("click", () => { $("help").hidden = false; });
$("help").addEventListener("click", () => { $("help").hidden = true; });
$("select-all").addEventListener("click", () => { groupItems().forEach((it) => state.sel.add(it.item)); renderGrid(); });
$("more-like").addEventListener("click", moreLike);
$("back").addEventListener("click", () => setView({ mode: "queue" }));
loadLabels().then(() => load(false));
