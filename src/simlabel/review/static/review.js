// simlabel's review page: grids of items that share one proposal, a detail view, the keyboard.
// Every text goes in through textContent; the server only ever sees catalog ids and item keys.
"use strict";

const TOKEN = document.querySelector('meta[name="review-token"]').content;
const $ = (id) => document.getElementById(id);
// a grid is one page of one proposal: "accept the grid" only ever decides what the reviewer can see
const PAGE = 24;
const state = { items: [], groups: [], pages: [], group: 0, focus: 0, out: new Set(), detail: null, alternatives: [] };

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
  const q = p.queues.find((x) => x.queue === $("queue").value) || { decided: 0, total: 0 };
  $("progress").textContent = `${q.decided} / ${q.total} decided in this queue · ${p.decided} / ${p.total} in all`;
}

async function load(keepGroup) {
  const params = new URLSearchParams({ queue: $("queue").value, status: $("status").value });
  if ($("min-score").value !== "") params.set("min_score", $("min-score").value);
  const data = await api("/api/items?" + params.toString());
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
  return `${it.id}: ${from}${it.proposed || "to label"}${score}`;
}

function renderGrid() {
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
    if (state.out.has(it.item)) card.classList.add("out");
    if (n === state.focus) card.classList.add("focus");
    if (it.decision) card.classList.add(it.decision.action);
    const img = document.createElement("img");
    img.src = imageUrl(it.id, "thumb"); img.alt = it.id; img.loading = "lazy";
    const cap = document.createElement("div");
    cap.textContent = caption(it);
    const why = document.createElement("div");
    why.className = "why";
    why.textContent = it.title + (it.decision ? ` · ${it.decision.action}${it.decision.new ? ": " + it.decision.new : ""}` : "");
    card.append(img, cap, why);
    card.addEventListener("click", () => { state.focus = n; toggle(it.item); });
    card.addEventListener("dblclick", () => { state.focus = n; openDetail(it); });
    return card;
  }));
}

function toggle(key) {
  if (state.out.has(key)) state.out.delete(key); else state.out.add(key);
  renderGrid();
}

async function decide(items, action, label) {
  if (!items.length) return;
  const data = await api("/api/decide", { queue: $("queue").value, items: items, action: action, label: label });
  toast(`${data.written} ${action}${label ? " → " + label : ""}`);
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
  state.focus = 0; state.out.clear();
  renderGrid();
}

async function undo() {
  const data = await api("/api/undo", { queue: $("queue").value });
  toast(data.undone ? `undone: ${data.undone.action} of ${data.undone.id}` : "nothing to undo");
  await load(true);
  if (state.detail) await openDetail(state.detail);
}

async function openDetail(it) {
  const params = new URLSearchParams({ queue: it.queue, item: it.item });
  const d = await api("/api/item?" + params.toString());
  state.detail = it;
  state.alternatives = d.alternatives;
  $("grid-view").hidden = true;
  $("detail-view").hidden = false;
  $("detail-image").src = imageUrl(d.id, "full");
  $("detail-image").alt = d.id;
  $("detail-title").textContent = d.title || d.id;
  $("detail-labels").textContent = `${d.id} · queue ${d.queue} (${d.kind}) · given: ${d.old || "none"} · proposed: ${d.proposed || "none"}`
    + (d.score === null ? "" : ` · score ${d.score.toFixed(3)}`);
  $("alternatives").replaceChildren(...d.alternatives.slice(0, 9).map((a) => {
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
    if (ev.target.id === "basis-labels" && ev.key === "Enter" && ev.target.value.trim()) {
      detailDecide("relabel", ev.target.value.trim());
    } else if (ev.key === "Escape") { ev.target.blur(); }
    return;
  }
  const help = $("help");
  if (ev.key === "?") { help.hidden = !help.hidden; return; }
  if (ev.key === "Escape") { if (!help.hidden) help.hidden = true; else if (state.detail) closeDetail(); return; }
  if (ev.key === "u") { undo(); return; }
  if (state.detail) {
    if (ev.key === "a") detailDecide("accept");
    else if (ev.key === "r") detailDecide("reject");
    else if (ev.key === "s" || ev.key === "n" || ev.key === "ArrowRight") moveDetail(1);
    else if (ev.key === "p" || ev.key === "ArrowLeft") moveDetail(-1);
    else if (/^[1-9]$/.test(ev.key) && state.alternatives[+ev.key - 1] !== undefined) detailDecide("relabel", state.alternatives[+ev.key - 1]);
    return;
  }
  const items = groupItems();
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

$("queue").addEventListener("change", () => { state.group = 0; load(false); });
$("status").addEventListener("change", () => load(true));
$("min-score").addEventListener("change", () => load(true));
$("group").addEventListener("change", () => {
  state.group = state.pages.findIndex((pg) => pg.group === $("group").value); state.focus = 0; renderGrid();
});
$("help-button").addEventListener("click", () => { $("help").hidden = false; });
$("help").addEventListener("click", () => { $("help").hidden = true; });
load(false);
