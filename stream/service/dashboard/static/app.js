// vidcap's dashboard. Everything a stream says (captions come from a model) is untrusted:
// it reaches the page through textContent and attribute values only, never as HTML.
"use strict";

const SNAPSHOT_NAME = /^[A-Za-z0-9_-]{1,64}\/[0-9a-f]{1,32}\/[0-9]{1,12}$/;
const STREAM_ID = /^[A-Za-z0-9_-]{1,64}$/;
const MAX_ALERTS = 50;
const MAX_TIMELINE = 500;
const PAGE = 30;
const TOKEN_KEY = "vidcap-token";

const cards = new Map(); // stream id -> card state
const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function snapshotUrl(snapshot) {
  const name = snapshot && typeof snapshot.name === "string" ? snapshot.name : "";
  return SNAPSHOT_NAME.test(name) ? "/api/snapshots/" + name : null;
}

function clock(iso) {
  const at = Date.parse(iso);
  return Number.isNaN(at) ? "" : new Date(at).toLocaleTimeString([], { hour12: false });
}

function summaryOf(event) {
  if (event.status === "ok" && event.caption) {
    return event.caption.summary || event.caption.description || "";
  }
  const error = event.error || {};
  return "caption failed: " + (error.reason || "unknown") + (error.detail ? " (" + error.detail + ")" : "");
}

// ---- stream cards ----

function card(id) {
  let state = cards.get(id);
  if (state) return state;
  const node = $("card-template").content.firstElementChild.cloneNode(true);
  node.dataset.stream = id;
  const link = "#/stream/" + id;
  node.querySelector(".name").textContent = id;
  node.querySelector(".name").href = link;
  node.querySelector(".picture").href = link;
  node.querySelector(".pause").addEventListener("click", () => togglePause(id));
  node.querySelector(".remove").addEventListener("click", () => removeStream(id));
  state = { node, condition: "unknown", paused: false, seq: { caption: -1, condition: -1, pause: -1 }, logos: new Map() };
  cards.set(id, state);
  const grid = $("grid");
  const after = [...grid.children].find((other) => other.dataset.stream > id);
  grid.insertBefore(node, after || null);
  $("empty").hidden = true;
  $("stream-count").textContent = "(" + cards.size + ")";
  render(state);
  loadLatest(id);
  return state;
}

function shownState(state) {
  if (state.paused) return "paused";
  return state.condition === "recovered" ? "live" : state.condition;
}

function render(state) {
  const shown = shownState(state);
  const badge = state.node.querySelector(".state");
  badge.textContent = shown;
  badge.dataset.state = shown;
  state.node.dataset.state = shown;
  state.node.querySelector(".pause").textContent = state.paused ? "Resume" : "Pause";
  const logos = state.node.querySelector(".logos");
  logos.replaceChildren(...[...state.logos.entries()]
    .filter(([, alert]) => alert === "appeared")
    .map(([brand]) => el("li", "logo", brand)));
}

function showCaption(state, event, receivedAt) {
  state.node.querySelector(".summary").textContent = summaryOf(event);
  const frame = event.frame || {};
  state.node.querySelector(".when").textContent =
    "#" + event.seq + " · kf " + event.keyframe + " · " + clock(frame.captured_at);
  const captured = Date.parse(frame.captured_at) / 1000;
  state.node.querySelector(".latency").textContent =
    receivedAt && !Number.isNaN(captured) ? "latency " + (receivedAt - captured).toFixed(2) + " s" : "";
  showPicture(state.node.querySelector(".picture"), event);
}

function showPicture(holder, event) {
  const img = holder.querySelector("img");
  const placeholder = holder.querySelector(".placeholder");
  const url = snapshotUrl(event.snapshot);
  if (url) {
    img.src = url;
    img.hidden = false;
    placeholder.hidden = true;
    return;
  }
  img.hidden = true;
  img.removeAttribute("src");
  placeholder.hidden = false;
  placeholder.textContent = event.snapshot_error ? "no snapshot: " + event.snapshot_error : "no snapshot";
}

// One event into its card; older events than the card shows are ignored (history and the
// feed may bring the same ones, in either order).
function apply(stream, kind, event, receivedAt) {
  if (!STREAM_ID.test(stream) || typeof event.seq !== "number") return;
  const state = card(stream);
  if (kind === "caption" && event.seq > state.seq.caption) {
    state.seq.caption = event.seq;
    showCaption(state, event, receivedAt);
  } else if (kind === "status") {
    applyStatus(state, event);
  } else if (kind === "logo") {
    state.logos.set(String(event.brand), event.alert);
    addAlert(stream, event);
  }
  render(state);
  if (timeline.stream === stream) timeline.live(kind, event);
}

const CONDITIONS = new Set(["connecting", "live", "stalled", "reconnecting", "recovered", "ended", "failed", "stopped"]);

function applyStatus(state, event) {
  if (CONDITIONS.has(event.state) && event.seq > state.seq.condition) {
    state.seq.condition = event.seq;
    state.condition = event.state;
    state.node.querySelector(".condition").textContent = event.detail || "";
  } else if ((event.state === "paused" || event.state === "unpaused") && event.seq > state.seq.pause) {
    state.seq.pause = event.seq;
    state.paused = event.state === "paused";
  }
}

// A card made from a stream vidcap has not heard of since it started: its newest stored events.
async function loadLatest(id) {
  const page = await getJson("/api/streams/" + id + "/events?limit=20");
  for (const stored of (page && page.events) || []) apply(id, stored.event.type, stored.event, null);
}

// ---- logo alerts ----

function addAlert(stream, event) {
  const item = el("li", "alert alert-" + (event.alert === "appeared" ? "appeared" : "disappeared"));
  const first = (event.keyframes || [])[0] || {};
  const url = snapshotUrl(first.snapshot);
  if (url) {
    const img = el("img", "thumb");
    img.alt = "keyframe";
    img.src = url;
    item.append(img);
  }
  const text = el("div", "alert-text");
  text.append(el("strong", "", event.brand), el("span", "", " " + event.alert + " on "));
  const link = el("a", "", stream);
  link.href = "#/stream/" + stream;
  text.append(link, el("div", "muted", clock(first.captured_at) + (event.matched ? " · “" + event.matched + "”" : "")));
  item.append(text);
  const list = $("alerts");
  list.prepend(item);
  while (list.children.length > MAX_ALERTS) list.lastElementChild.remove();
  $("no-alerts").hidden = true;
}

// ---- a stream's page: its timeline, newest first, paged back through JetStream ----

const timeline = {
  stream: null,
  before: undefined,
  seen: new Set(),
  opened: 0, // a page answered after the timeline was opened again (filter, stream) is stale

  open(stream) {
    this.stream = stream;
    this.opened += 1;
    this.before = undefined;
    this.seen = new Set();
    $("timeline").replaceChildren();
    const head = $("stream-head");
    head.replaceChildren(el("h1", "", stream));
    const state = cards.get(stream);
    if (state) head.append(el("span", "state", shownState(state)));
    this.older();
  },

  kind() {
    return $("kind").value;
  },

  async older() {
    if (this.before === null) return;
    const opened = this.opened;
    const query = new URLSearchParams({ limit: String(PAGE) });
    if (this.kind()) query.set("kind", this.kind());
    if (this.before) query.set("before", String(this.before));
    const page = await getJson("/api/streams/" + this.stream + "/events?" + query);
    if (!page || opened !== this.opened) return;
    this.before = page.before;
    $("older").hidden = page.before === null;
    for (const stored of page.events.slice().reverse()) this.add(stored.event, false);
  },

  live(kind, event) {
    if (!this.kind() || this.kind() === kind) this.add(event, true);
  },

  add(event, newest) {
    if (this.seen.has(event.seq)) return;
    this.seen.add(event.seq);
    const list = $("timeline");
    const item = entry(event);
    if (newest) list.prepend(item);
    else list.append(item);
    while (list.children.length > MAX_TIMELINE) list.lastElementChild.remove();
  },
};

function entry(event) {
  const item = el("li", "entry entry-" + event.type);
  item.dataset.seq = event.seq;
  item.append(el("span", "seq", "#" + event.seq));
  if (event.type === "caption") {
    const picture = el("a", "picture");
    const img = el("img", "snapshot");
    img.alt = "keyframe " + event.keyframe;
    img.loading = "lazy";
    picture.append(img, el("span", "placeholder"));
    showPicture(picture, event);
    const body = el("div", "entry-body");
    body.append(el("p", "summary", summaryOf(event)));
    if (event.caption && event.caption.description) body.append(el("p", "muted", event.caption.description));
    const frame = event.frame || {};
    body.append(el("p", "meta", "keyframe " + event.keyframe + " · " + (event.selection || {}).reason + " · " + clock(frame.captured_at)));
    item.append(picture, body);
  } else if (event.type === "status") {
    item.append(el("span", "state", event.state), el("span", "detail", event.detail + " · " + clock(event.at)));
  } else {
    item.append(el("strong", "", event.brand), el("span", "detail", " " + event.alert));
  }
  return item;
}

// ---- the control API (token from the user, kept for this tab only) ----

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

async function control(method, path, body) {
  const headers = { Authorization: "Bearer " + token() };
  if (body) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const answer = await response.json().catch(() => ({}));
  notice(response.ok ? method + " " + path + ": done" : (answer.error || response.statusText), !response.ok);
  return response.ok ? answer : null;
}

function togglePause(id) {
  const state = cards.get(id);
  control("POST", "/api/streams/" + id + (state.paused ? "/resume" : "/pause"));
}

function removeStream(id) {
  if (window.confirm("Stop captioning " + id + "?")) control("DELETE", "/api/streams/" + id);
}

function notice(text, bad) {
  const node = $("notice");
  node.textContent = text;
  node.classList.toggle("bad", !!bad);
  node.hidden = false;
}

async function getJson(path) {
  try {
    const response = await fetch(path);
    return response.ok ? await response.json() : null;
  } catch {
    return null;
  }
}

// ---- wiring ----

function route() {
  const match = /^#\/stream\/([A-Za-z0-9_-]{1,64})$/.exec(location.hash);
  $("overview").hidden = !!match;
  $("stream-page").hidden = !match;
  if (match) timeline.open(match[1]);
  else timeline.stream = null;
}

const nodes = new Map();  // presence key -> the vidcap's entry (host, pid, owned streams)

function applyNode(key, node) {
  if (node === null) nodes.delete(key);
  else nodes.set(key, node);
  const list = $("nodes");
  list.replaceChildren();
  for (const [nodeKey, entry] of nodes) {
    const item = document.createElement("li");
    item.className = "node";
    item.dataset.key = nodeKey;
    const name = document.createElement("span");
    name.className = "node-name";
    name.textContent = `${entry.host} · pid ${entry.pid ?? "?"}`;
    const owned = document.createElement("span");
    owned.className = "node-streams";
    owned.textContent = entry.owned.length ? entry.owned.join(", ") : "no streams";
    item.append(name, owned);
    list.append(item);
  }
  $("node-count").textContent = nodes.size ? `(${nodes.size})` : "";
  $("no-nodes").hidden = nodes.size > 0;
}

async function search() {
  const params = new URLSearchParams({ limit: "20" });
  const text = $("search-q").value.trim();
  const stream = $("search-stream").value.trim();
  if (text) params.set("q", text);
  if (stream) params.set("stream", stream);
  const note = $("search-note");
  const list = $("search-results");
  list.replaceChildren();
  let response = null;
  let body = {};
  try {
    response = await fetch("/api/search?" + params);
    body = await response.json();
  } catch {
    body = {};
  }
  if (!response || !response.ok) {
    note.textContent = body.error || "search failed";
    note.hidden = false;
    return;
  }
  note.textContent = "No caption matches.";
  note.hidden = body.results.length > 0;
  for (const hit of body.results) list.append(searchHit(hit));
}

function searchHit(hit) {
  const item = document.createElement("li");
  item.className = "hit";
  const url = snapshotUrl(hit.snapshot);
  if (url) {
    const picture = document.createElement("img");
    picture.className = "snapshot";
    picture.alt = "keyframe";
    picture.loading = "lazy";
    picture.src = url;
    item.append(picture);
  }
  const text = document.createElement("div");
  const head = document.createElement("a");
  head.className = "hit-head";
  head.href = "#/stream/" + hit.stream;
  head.textContent = `${hit.stream} #${hit.seq} · ${clock(hit.time)}`;
  const summary = document.createElement("p");
  summary.className = "hit-summary";
  summary.textContent = hit.summary || hit.description || "";
  text.append(head, summary);
  item.append(text);
  return item;
}

function follow() {
  const feed = new EventSource("/api/feed");
  const shown = $("feed-state");
  feed.onopen = () => { shown.textContent = "live feed"; shown.dataset.state = "open"; };
  feed.onerror = () => { shown.textContent = "reconnecting…"; shown.dataset.state = "closed"; };
  feed.addEventListener("node", (message) => {
    const pushed = JSON.parse(message.data);
    applyNode(pushed.key, pushed.node);
  });
  for (const kind of ["caption", "status", "logo"]) {
    feed.addEventListener(kind, (message) => {
      const pushed = JSON.parse(message.data);
      apply(pushed.stream, pushed.kind, pushed.event, pushed.received_at);
    });
  }
}

async function loadStreams() {
  const listed = await getJson("/api/streams");
  for (const stream of (listed && listed.streams) || []) {
    const state = card(stream.id);
    if (state.condition === "unknown" || stream.state === "standby") {
      state.condition = stream.state;
      state.node.querySelector(".condition").textContent = stream.detail || "";
    }
    state.paused = !!stream.paused;
    render(state);
  }
}

function setUp() {
  const input = $("token");
  input.value = token();
  input.addEventListener("change", () => sessionStorage.setItem(TOKEN_KEY, input.value));
  $("token-form").addEventListener("submit", (e) => e.preventDefault());
  $("add-form").addEventListener("submit", (e) => {
    e.preventDefault();
    control("POST", "/api/streams", { id: $("add-id").value, url: $("add-url").value });
  });
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    search();
  });
  $("kind").addEventListener("change", () => timeline.open(timeline.stream));
  $("older").addEventListener("click", () => timeline.older());
  window.addEventListener("hashchange", route);
  follow();
  loadStreams();
  route();
}

document.addEventListener("DOMContentLoaded", setUp);
