// A user's in-app inbox kept live over the Tidings WebSocket stream.
// Notification text is only ever written with textContent: it comes from other people.
"use strict";

const PING_EVERY_MS = 30000;
const MAX_BACKOFF_MS = 30000;
const STOP_CODES = {
  4401: "The token was refused or has expired: renew it and connect again.",
  4404: "This user or app no longer exists.",
};

const $ = (id) => document.getElementById(id);
const state = {
  api: "", token: "",
  items: [],          // in-app notifications, newest first
  lastId: null,       // id of the last stream event seen: where a reconnect resumes
  queued: null,       // events that arrive while the list is being (re)loaded
  ws: null, retryTimer: null, retries: 0, stopped: false,
};

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function setCount(n) {
  $("count").textContent = String(n);
  $("bell").classList.toggle("unread", n > 0);
}

async function call(method, path, body) {
  const headers = { Authorization: "Bearer " + state.token };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(state.api + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 401) {
    stop(STOP_CODES[4401]);
    throw new Error(STOP_CODES[4401]);
  }
  if (!res.ok) throw new Error(`${method} ${path} answered ${res.status}`);
  return res.json();
}

function render() {
  const list = $("list");
  list.replaceChildren(...state.items.map((n) => {
    const li = document.createElement("li");
    li.dataset.id = n.id;
    li.className = n.read_at ? "read" : "unread";
    const title = document.createElement("strong");
    title.textContent = n.title || "(no title)";
    const body = document.createElement("p");
    body.textContent = n.body || "";
    const when = document.createElement("time");
    when.dateTime = n.created_at;
    when.textContent = new Date(n.created_at).toLocaleString();
    li.append(title, body, when);
    return li;
  }));
  $("read-all").disabled = !state.items.some((n) => !n.read_at);
}

// Loads the feed; stream events that arrive meanwhile are applied after it, so none is lost.
async function reload() {
  state.queued = [];
  try {
    const page = await call("GET", "/v1/users/me/notifications?channel=in_app");
    state.items = page.items;
    setCount(page.unread_count);
  } catch (err) {
    status(String(err.message || err), true);
  } finally {
    const queued = state.queued;
    state.queued = null;
    queued.forEach(apply);
    render();
  }
}

function markRead(match, readAt) {
  for (const n of state.items) if (!n.read_at && match(n)) n.read_at = readAt;
}

function apply(event) {
  const d = event.data;
  switch (event.type) {
    case "unread_count":
      setCount(d.count);
      return;
    case "notification.created":
      if (!state.items.some((n) => n.id === d.id)) state.items.unshift(d);
      break;
    case "notification.read":
      if (d.all) {
        markRead((n) => (!d.channel || n.channels.includes(d.channel))
          && (!d.until || Date.parse(n.created_at) <= Date.parse(d.until)), d.read_at);
      } else {
        markRead((n) => n.id === d.notification_id, d.read_at);
      }
      break;
    case "stream.reset":
      reload();
      return;
    default:
      return; // "pong", and event types this page does not know yet
  }
  render();
}

function streamUrl() {
  const url = new URL("/v1/users/me/stream", state.api);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("token", state.token);
  if (state.lastId !== null) url.searchParams.set("after", state.lastId);
  return url.href;
}

function connect() {
  const fresh = state.lastId === null;
  const ws = new WebSocket(streamUrl());
  state.ws = ws;
  let first = true;
  let pinger = null;
  ws.onmessage = (msg) => {
    const event = JSON.parse(msg.data);
    if (first) {
      first = false;
      state.retries = 0;
      status("Live.");
      // A fresh connection is subscribed once its first event arrives: load the feed now.
      if (fresh) reload();
    }
    if (event.id !== undefined) state.lastId = event.id;
    if (state.queued) state.queued.push(event);
    else apply(event);
  };
  ws.onopen = () => {
    pinger = setInterval(() => ws.send(JSON.stringify({ type: "ping" })), PING_EVERY_MS);
  };
  ws.onclose = (ev) => {
    clearInterval(pinger);
    if (state.ws !== ws || state.stopped) return;
    if (STOP_CODES[ev.code]) return stop(STOP_CODES[ev.code]);
    const delay = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** state.retries) * (0.5 + Math.random() / 2);
    state.retries += 1;
    status(`Connection lost; reconnecting in ${Math.round(delay / 1000)} s.`);
    state.retryTimer = setTimeout(connect, delay);
  };
}

function stop(reason) {
  state.stopped = true;
  clearTimeout(state.retryTimer);
  if (state.ws) state.ws.close();
  status(reason, true);
  $("connect").classList.remove("hidden");
}

function start(api, token) {
  clearTimeout(state.retryTimer);
  if (state.ws) state.ws.close();
  Object.assign(state, { api: api.replace(/\/+$/, ""), token, items: [], lastId: null,
    queued: null, ws: null, retryTimer: null, retries: 0, stopped: false });
  render();
  setCount(0);
  $("connect").classList.add("hidden");
  status("Connecting...");
  connect();
}

$("list").addEventListener("click", async (ev) => {
  const li = ev.target.closest("li");
  const item = li && state.items.find((n) => n.id === li.dataset.id);
  if (!item || item.read_at) return;
  try {
    const done = await call("POST", `/v1/users/me/notifications/${encodeURIComponent(item.id)}/read`);
    markRead((n) => n.id === done.id, done.read_at);
    render();
  } catch (err) {
    status(String(err.message || err), true);
  }
});

$("read-all").addEventListener("click", async () => {
  try {
    await call("POST", "/v1/users/me/notifications/read-all", { channel: "in_app" });
    markRead(() => true, new Date().toISOString());
    render();
  } catch (err) {
    status(String(err.message || err), true);
  }
});

$("connect").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const form = new FormData(ev.target);
  start(String(form.get("api")), String(form.get("token")));
});

const params = new URLSearchParams(location.search);
if (params.get("api")) $("connect").elements.api.value = params.get("api");
if (params.get("api") && params.get("token")) {
  history.replaceState(null, "", location.pathname); // keep the token out of the history
  start(params.get("api"), params.get("token"));
}
