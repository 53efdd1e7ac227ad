// Corral's portal: one page over Corral's own API (the ARM routes the SDKs use), authenticated by the
// session cookie. Libraries from npm (static/vendor): Pico CSS, xterm.js, Chart.js, js-yaml.

const API_VERSION = "2023-05-01";
const main = document.getElementById("main");
const nav = document.getElementById("nav");
let session = null; // {csrfToken, subscription, location}
let cleanups = []; // what the current page must stop (streams, sockets, timers, charts) when it is left

// ---------------------------------------------------------------------------------------------- helpers
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function badge(state, id) {
  return h("span", { class: `state state-${state || "Pending"}`, id }, state || "Pending");
}

function when(t) {
  return t ? new Date(t).toLocaleString() : "";
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, { body, params, raw } = {}) {
  const url = new URL(path, location.origin);
  if (!url.searchParams.has("api-version")) url.searchParams.set("api-version", API_VERSION);
  for (const [k, v] of Object.entries(params || {})) url.searchParams.set(k, v);
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && session && session.csrfToken) headers["X-CSRF-Token"] = session.csrfToken;
  const resp = await fetch(url, {
    method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (resp.status === 401 && !path.startsWith("/portal/login")) {
    session = null;
    showLogin("Your session has ended: log in again.");
    throw new ApiError(401, "AuthenticationFailed", "not logged in");
  }
  if (!resp.ok) {
    let code = "Error", message = `${resp.status} ${resp.statusText}`;
    try {
      const err = (await resp.json()).error;
      code = err.code || code;
      message = err.message || message;
    } catch (_) { /* not an ARM error body */ }
    throw new ApiError(resp.status, code, message);
  }
  if (raw) return resp;
  if (resp.status === 204) return null;
  return (resp.headers.get("content-type") || "").includes("json") ? resp.json() : resp.text();
}

const sub = () => session.subscription;
const provider = (rg) => `/subscriptions/${sub()}/resourceGroups/${encodeURIComponent(rg)}/providers/Microsoft.ContainerInstance`;
const groupPath = (rg, name) => `${provider(rg)}/containerGroups/${encodeURIComponent(name)}`;
const ngroupPath = (rg, name) => `${provider(rg)}/ngroups/${encodeURIComponent(name)}`;
const groupHref = (rg, name) => `#/rg/${encodeURIComponent(rg)}/g/${encodeURIComponent(name)}`;
const ngroupHref = (rg, name) => `#/rg/${encodeURIComponent(rg)}/ng/${encodeURIComponent(name)}`;
const rgOf = (id) => id.split("/")[4];

function onLeave(fn) {
  cleanups.push(fn);
}

function every(seconds, fn) {
  const timer = setInterval(fn, seconds * 1000);
  onLeave(() => clearInterval(timer));
}

// Server-sent events of state changes (docs/api.md "Events"), closed when the page is left.
function watch(path, handlers) {
  const es = new EventSource(`${path}?api-version=${API_VERSION}`, { withCredentials: true });
  for (const [kind, fn] of Object.entries(handlers)) {
    es.addEventListener(kind, (e) => fn(JSON.parse(e.data)));
  }
  onLeave(() => es.close());
  return es;
}

function eventItem(e) {
  const ev = e.event || e;
  return h("li", { class: ev.type === "Warning" ? "warning" : null },
    h("span", { class: "muted" }, when(ev.lastTimestamp || ev.firstTimestamp), " "),
    e.group ? h("strong", {}, `${e.group}: `) : "",
    e.container ? h("strong", {}, `${e.container}: `) : "", `${ev.name}: ${ev.message}`,
    ev.count > 1 ? h("span", { class: "muted" }, ` (x${ev.count})`) : "");
}

// A list of events, newest first, whatever order they arrive in: an event seen again with a higher count
// replaces its line; one seen again unchanged (a page's fetch and its event stream both show it) is skipped.
function eventList(ul) {
  const items = new Map();
  const insert = (li, t) => {
    li.dataset.t = t;
    ul.insertBefore(li, [...ul.children].find((x) => (x.dataset.t || "") < t) || null);
  };
  const add = (e) => {
    const ev = e.event || e;
    const key = [e.group || "", e.container || "", ev.name, ev.message, ev.firstTimestamp].join("|");
    const old = items.get(key);
    if (old && old.count >= (ev.count || 1)) return;
    if (old) old.li.remove();
    const li = eventItem(e);
    items.set(key, { li, count: ev.count || 1 });
    insert(li, ev.lastTimestamp || ev.firstTimestamp || "");
  };
  add.line = (li) => insert(li, new Date().toISOString()); // a line of the page's own (a state change seen now)
  return add;
}

// The events a group has now (its own and its containers'), oldest first: what a page shows on opening,
// since the event stream sends only what happens afterwards.
function groupEvents(g, withGroup) {
  const out = (g.properties.instanceView.events || []).map((event) => ({ event }));
  for (const c of [...(g.properties.initContainers || []), ...g.properties.containers]) {
    for (const event of (c.properties.instanceView || {}).events || []) out.push({ container: c.name, event });
  }
  if (withGroup) out.forEach((e) => { e.group = g.name; });
  return byTime(out);
}

function byTime(events) {
  const t = (e) => e.event.lastTimestamp || e.event.firstTimestamp || "";
  return events.sort((a, b) => (t(a) < t(b) ? -1 : t(a) > t(b) ? 1 : 0));
}

function errorBox(err) {
  return h("p", { class: "error", role: "alert" }, err.message || String(err));
}

function confirmDialog(question, action) {
  const dialog = h("dialog", { id: "confirm" },
    h("article", {},
      h("p", {}, question),
      h("footer", { class: "actions" },
        h("button", { class: "secondary", id: "confirm-no", onclick: () => dialog.close() }, "Cancel"),
        h("button", { id: "confirm-yes", onclick: async () => { dialog.close(); await action(); } }, "Yes"))));
  document.body.append(dialog);
  dialog.addEventListener("close", () => dialog.remove());
  dialog.showModal();
}

// ---------------------------------------------------------------------------------------------- login
function showLogin(message) {
  for (const c of cleanups.splice(0)) try { c(); } catch (_) { /* already gone */ }
  nav.hidden = true;
  const error = h("p", { class: "error", id: "login-error", role: "alert" }, message || "");
  const input = h("input", { type: "password", name: "token", id: "token", autocomplete: "off", required: true,
    placeholder: "installation token or JWT" });
  const form = h("form", { id: "login-form", onsubmit: async (e) => {
    e.preventDefault();
    error.textContent = "";
    try {
      const resp = await fetch("/portal/login", { method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token: input.value }) });
      if (!resp.ok) {
        let text = "The token was refused.";
        try { text = (await resp.json()).error.message; } catch (_) { /* keep the default */ }
        error.textContent = text;
        return;
      }
      input.value = "";
      await loadSession();
      if (location.hash.startsWith("#/login") || !location.hash) location.hash = "#/";
      render();
    } catch (err) {
      error.textContent = err.message;
    }
  } },
  h("label", {}, "Token", input),
  h("small", {}, "The installation token (\"token\" in the client config `corral up` wrote) or a JWT from ",
    "Corral's token endpoint. It is kept in a secure, httpOnly cookie until you log out."),
  h("button", { type: "submit", id: "login-submit" }, "Log in"), error);
  main.replaceChildren(h("article", { id: "login" }, h("h2", {}, "Log in to Corral"), form));
  input.focus();
}

async function loadSession() {
  const resp = await fetch("/portal/session", { credentials: "same-origin" });
  if (!resp.ok) {
    session = null;
    return false;
  }
  session = await resp.json();
  nav.hidden = false;
  return true;
}

document.getElementById("logout").addEventListener("click", async () => {
  await fetch("/portal/logout", { method: "POST", credentials: "same-origin" });
  session = null;
  location.hash = "#/";
  showLogin("You are logged out.");
});

// ---------------------------------------------------------------------------------------------- pages
async function overview() {
  const table = h("tbody", { id: "rg-rows" });
  const groupsBody = h("tbody", { id: "group-rows" });
  main.replaceChildren(h("h2", {}, "Resource groups"),
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Resource group"), h("th", {}, "Groups"),
      h("th", {}, "Running"), h("th", {}, "Other"), h("th", {}, "NGroups"))), table),
    h("h3", {}, "Container groups"),
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Resource group"),
      h("th", {}, "State"), h("th", {}, "Provisioning"), h("th", {}, "IP"))), groupsBody),
    h("p", { class: "muted" }, "Refreshed every few seconds; a resource group's page shows its events live."));
  async function refresh() {
    const [groups, ngroups] = await Promise.all([
      api("GET", `/subscriptions/${sub()}/providers/Microsoft.ContainerInstance/containerGroups`),
      api("GET", `/subscriptions/${sub()}/providers/Microsoft.ContainerInstance/ngroups`),
    ]).then((r) => r.map((x) => x.value));
    const byRg = new Map();
    const entry = (rg) => {
      if (!byRg.has(rg)) byRg.set(rg, { groups: [], ngroups: 0 });
      return byRg.get(rg);
    };
    for (const g of groups) entry(rgOf(g.id)).groups.push(g);
    for (const ng of ngroups) entry(rgOf(ng.id)).ngroups += 1;
    table.replaceChildren(...[...byRg.entries()].sort().map(([rg, { groups: gs, ngroups: n }]) => {
      const running = gs.filter((g) => g.properties.instanceView.state === "Running").length;
      return h("tr", { "data-rg": rg }, h("td", {}, h("a", { href: `#/rg/${encodeURIComponent(rg)}` }, rg)),
        h("td", {}, gs.length), h("td", {}, running), h("td", {}, gs.length - running), h("td", {}, n));
    }));
    if (!byRg.size) {
      table.replaceChildren(h("tr", {}, h("td", { colspan: 5 }, "No container groups yet: ",
        h("a", { href: "#/create" }, "create one"), ".")));
    }
    groupsBody.replaceChildren(...groups.map((g) => groupRow(rgOf(g.id), g, true)));
  }
  await refresh();
  every(5, () => refresh().catch(() => {}));
}

function groupRow(rg, g, withRg) {
  const p = g.properties;
  return h("tr", { "data-group": g.name },
    h("td", {}, h("a", { href: groupHref(rg, g.name) }, g.name)),
    withRg ? h("td", {}, rg) : null,
    h("td", {}, badge(p.instanceView.state)), h("td", {}, p.provisioningState),
    h("td", {}, p.ipAddress ? `${p.ipAddress.ip || ""} ${(p.ipAddress.ports || []).map((x) => x.port).join(",")}` : ""));
}

async function rgPage(rg) {
  const rows = h("tbody", { id: "group-rows" });
  const ngRows = h("tbody", { id: "ngroup-rows" });
  const ngSection = h("section", { id: "ngroups", hidden: true }, h("h4", {}, "NGroups"),
    h("table", {}, ngroupHead(false), ngRows));
  const events = h("ul", { class: "events", id: "events" });
  const addEvent = eventList(events);
  main.replaceChildren(h("hgroup", {}, h("h2", {}, rg), h("p", {}, "Resource group")),
    h("div", { class: "grid" },
      h("section", {}, h("h4", {}, "Container groups"),
        h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "State"),
          h("th", {}, "Provisioning"), h("th", {}, "IP"))), rows), ngSection),
      h("section", {}, h("h4", {}, "Live events"), events)));
  let pending = null;
  const known = new Map(); // group name -> "state provisioningState" as last listed: what is not news
  const summary = (state, prov) => `${state} (${prov})`;
  async function refresh(first) {
    const [groups, ngroups] = await Promise.all([api("GET", `${provider(rg)}/containerGroups`),
      api("GET", `${provider(rg)}/ngroups`)]).then((r) => r.map((x) => x.value));
    for (const g of groups) known.set(g.name, summary(g.properties.instanceView.state, g.properties.provisioningState));
    rows.replaceChildren(...groups.map((g) => groupRow(rg, g, false)));
    ngRows.replaceChildren(...ngroups.map((ng) => ngroupRow(ng, false)));
    ngSection.hidden = !ngroups.length;
    byTime(groups.flatMap((g) => groupEvents(g, true))).slice(first ? -50 : 0).forEach((e) => addEvent(e));
  }
  const soon = () => {
    clearTimeout(pending);
    pending = setTimeout(() => refresh().catch(() => {}), 200);
  };
  onLeave(() => clearTimeout(pending));
  await refresh(true);
  every(5, () => refresh().catch(() => {})); // NGroups have no event stream: their counts are polled
  const line = (m, text) => addEvent.line(h("li", {}, h("strong", {}, `${m.name}: `), text));
  watch(`${provider(rg)}/events`, {
    group: (m) => {
      const text = summary(m.state, m.provisioningState);
      if (known.get(m.name) !== text) line(m, text); // the stream's opening snapshot repeats the list
      known.set(m.name, text);
      soon();
    },
    deleted: (m) => { line(m, "deleted"); soon(); },
    event: (m) => addEvent({ ...m, group: m.name }),
  });
}

async function groupPage(rg, name) {
  let g;
  try {
    g = await api("GET", groupPath(rg, name));
  } catch (err) {
    main.replaceChildren(h("h2", {}, name), errorBox(err));
    return;
  }
  const p = g.properties;
  const names = p.containers.map((c) => c.name);
  const state = badge(p.instanceView.state, "group-state");
  const prov = h("span", { id: "group-provisioning", class: "muted" }, p.provisioningState);
  const containers = h("tbody", { id: "container-rows" });
  const events = h("ul", { class: "events", id: "events" });
  const addEvent = eventList(events);
  const message = h("p", { id: "group-message", role: "status" });
  const owner = (g.tags || {})["corral-ngroup"];

  function showContainers(group) {
    containers.replaceChildren(...group.properties.containers.map((c) => {
      const iv = c.properties.instanceView || {};
      const cur = iv.currentState || {};
      const req = c.properties.resources.requests;
      return h("tr", { "data-container": c.name }, h("td", {}, c.name), h("td", {}, c.properties.image),
        h("td", {}, badge(cur.state || "Waiting"), " ", h("span", { class: "muted" }, cur.detailStatus || "")),
        h("td", {}, iv.restartCount || 0), h("td", {}, req.cpu), h("td", {}, req.memoryInGB));
    }));
  }

  async function act(label, fn) {
    message.textContent = `${label}...`;
    try {
      await fn();
      message.textContent = `${label}: done.`;
    } catch (err) {
      message.textContent = `${label} failed: ${err.message}`;
    }
  }

  const actions = h("div", { class: "actions" },
    h("button", { class: "secondary", id: "restart", onclick: () => act("Restart", () => api("POST", `${groupPath(rg, name)}/restart`)) }, "Restart"),
    h("button", { class: "secondary", id: "stop", onclick: () => act("Stop", () => api("POST", `${groupPath(rg, name)}/stop`)) }, "Stop"),
    h("button", { class: "secondary", id: "start", onclick: () => act("Start", () => api("POST", `${groupPath(rg, name)}/start`)) }, "Start"),
    h("button", { class: "contrast", id: "delete", onclick: () => confirmDialog(`Delete the container group ${name}?`,
      () => act("Delete", async () => {
        await api("DELETE", groupPath(rg, name));
        location.hash = `#/rg/${encodeURIComponent(rg)}`;
      })) }, "Delete"));

  const logPane = h("pre", { class: "logs", id: "logs" });
  const logSelect = h("select", { id: "log-container", "aria-label": "container" }, names.map((n) => h("option", { value: n }, n)));
  const termBox = h("div", { class: "terminal-box", id: "terminal" });
  const termSelect = h("select", { id: "term-container", "aria-label": "container" }, names.map((n) => h("option", { value: n }, n)));
  const termCommand = h("input", { id: "term-command", value: "/bin/sh", "aria-label": "command" });
  const termStatus = h("small", { id: "term-status", class: "muted" }, "Not connected.");
  const cpuCanvas = h("canvas", { id: "cpu-chart" });
  const memCanvas = h("canvas", { id: "mem-chart" });

  main.replaceChildren(
    h("hgroup", {}, h("h2", {}, name, " ", state), h("p", {}, `Resource group `,
      h("a", { href: `#/rg/${encodeURIComponent(rg)}` }, rg), " · provisioning ", prov,
      owner ? [" · member of NGroup ", h("a", { href: ngroupHref(rgOf(owner), owner.split("/").pop()), id: "group-ngroup" },
        owner.split("/").pop())] : "",
      p.ipAddress ? ` · IP ${p.ipAddress.ip || "(pending)"} ports ${(p.ipAddress.ports || []).map((x) => x.publicPort ? `${x.publicPort}:${x.port}` : x.port).join(", ")}` : "")),
    actions, message,
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Container"), h("th", {}, "Image"), h("th", {}, "State"),
      h("th", {}, "Restarts"), h("th", {}, "CPU"), h("th", {}, "Memory GB"))), containers),
    h("div", { class: "grid" },
      h("section", {}, h("h4", {}, "CPU (millicores)"), h("div", { class: "chart-box" }, cpuCanvas)),
      h("section", {}, h("h4", {}, "Memory (MB)"), h("div", { class: "chart-box" }, memCanvas))),
    h("div", { class: "grid" },
      h("section", {}, h("h4", {}, "Logs ", logSelect), logPane),
      h("section", {}, h("h4", {}, "Events"), events)),
    h("section", {}, h("h4", {}, "Terminal"),
      h("div", { class: "grid" }, termSelect, termCommand,
        h("button", { id: "term-connect", onclick: () => connect() }, "Connect")),
      termBox, termStatus));
  showContainers(g);
  groupEvents(g).forEach((e) => addEvent(e));

  // Live state and events.
  // The stream sends only what happens after it opened: every re-read of the group feeds the events too,
  // so those that happened between the page's first read and the stream's opening show.
  const reread = () => api("GET", groupPath(rg, name)).then((x) => {
    showContainers(x);
    groupEvents(x).forEach((e) => addEvent(e));
  }).catch(() => {});
  watch(`${groupPath(rg, name)}/events`, {
    group: (m) => {
      state.className = `state state-${m.state}`;
      state.textContent = m.state;
      prov.textContent = m.provisioningState;
      reread();
    },
    container: reread,
    event: (m) => addEvent(m),
    deleted: () => {
      state.className = "state state-Deleting";
      state.textContent = "Deleted";
    },
  });

  // Live logs: the follow stream (docs/api.md "Log follow"), restarted when the container changes.
  let logAbort = null;
  async function follow() {
    if (logAbort) logAbort.abort();
    const abort = logAbort = new AbortController();
    logPane.textContent = "";
    while (!abort.signal.aborted) {
      try {
        const url = new URL(`${groupPath(rg, name)}/containers/${encodeURIComponent(logSelect.value)}/logs`, location.origin);
        url.searchParams.set("api-version", API_VERSION);
        url.searchParams.set("follow", "true");
        url.searchParams.set("tail", "500");
        const resp = await fetch(url, { credentials: "same-origin", signal: abort.signal });
        if (resp.ok && (resp.headers.get("content-type") || "").startsWith("text/plain")) {
          logPane.textContent = "";
          const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            const stick = logPane.scrollTop + logPane.clientHeight >= logPane.scrollHeight - 4;
            logPane.append(value);
            if (stick) logPane.scrollTop = logPane.scrollHeight;
          }
        } else if (resp.ok) {
          logPane.textContent = (await resp.json()).content || ""; // not running: what there is
        }
      } catch (err) {
        if (abort.signal.aborted) return;
      }
      await new Promise((r) => setTimeout(r, 2000)); // ended (stopped, restarted): follow again
    }
  }
  logSelect.addEventListener("change", follow);
  onLeave(() => logAbort && logAbort.abort());
  follow();

  // Exec terminal over the ACI exec websocket (password first, then raw input; docs/api.md).
  const term = new Terminal({ convertEol: false, cursorBlink: true, fontSize: 13, rows: 18 });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(termBox);
  fit.fit();
  let socket = null;
  onLeave(() => { if (socket) socket.close(); term.dispose(); });
  term.onData((d) => { if (socket && socket.readyState === WebSocket.OPEN) socket.send(d); });
  term.onResize(({ rows, cols }) => {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(`\x1b[8;${rows};${cols}t`);
  });
  async function connect() {
    if (socket) socket.close();
    term.reset();
    termStatus.textContent = "Connecting...";
    try {
      const answer = await api("POST", `${groupPath(rg, name)}/containers/${encodeURIComponent(termSelect.value)}/exec`,
        { body: { command: termCommand.value || "/bin/sh", terminalSize: { rows: term.rows, cols: term.cols } } });
      const ws = socket = new WebSocket(answer.webSocketUri);
      ws.onopen = () => {
        ws.send(answer.password);
        termStatus.textContent = `Connected to ${termSelect.value}.`;
        term.focus();
      };
      ws.onmessage = (e) => term.write(e.data);
      ws.onclose = (e) => {
        let how = "";
        try { how = ` (exit code ${JSON.parse(e.reason).exitCode})`; } catch (_) { how = e.reason ? ` (${e.reason})` : ""; }
        if (socket === ws) termStatus.textContent = `Session ended${how}.`;
      };
    } catch (err) {
      termStatus.textContent = `Could not connect: ${err.message}`;
    }
  }

  // CPU and memory charts from the Azure Monitor metrics API, per container, the last 30 minutes.
  metricCharts(cpuCanvas, memCanvas, groupPath(rg, name), "containerName eq '*'", name);
}

// CPU (millicores) and memory (MB) line charts of a resource's metrics (a group's, split by container; an
// NGroup's, split by member) over the last 30 minutes, refreshed every 10 s until the page is left.
function metricCharts(cpuCanvas, memCanvas, path, filter, whole) {
  const charts = [cpuCanvas, memCanvas].map((canvas) => new Chart(canvas, {
    type: "line",
    data: { labels: [], datasets: [] },
    options: { animation: false, maintainAspectRatio: false, spanGaps: true, plugins: { legend: { position: "bottom" } },
      scales: { y: { beginAtZero: true } } },
  }));
  onLeave(() => charts.forEach((c) => c.destroy()));
  const short = (v) => (v.length > 20 ? `${v.slice(0, 16)}…` : v);
  async function plot() {
    const body = await api("GET", `${path}/providers/Microsoft.Insights/metrics`, { params: {
      metricnames: "CpuUsage,MemoryUsage", timespan: "PT30M", interval: "PT1M", aggregation: "Average",
      $filter: filter } });
    body.value.forEach((metric, i) => {
      const chart = charts[i];
      const scale = metric.name.value === "MemoryUsage" ? 1 / (1024 * 1024) : 1;
      const series = metric.timeseries;
      chart.data.labels = (series[0] ? series[0].data : []).map((d) => new Date(d.timeStamp).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
      chart.data.datasets = series.map((ts) => ({
        label: ts.metadatavalues.length ? short(ts.metadatavalues.map((m) => m.value).join(" / ")) : whole,
        data: ts.data.map((d) => (d.average === undefined ? null : Math.round(d.average * scale * 10) / 10)),
        borderWidth: 2, pointRadius: 2,
      }));
      chart.update();
      const points = series.reduce((n, ts) => n + ts.data.filter((d) => d.average !== undefined).length, 0);
      chart.canvas.dataset.points = String(points);
    });
  }
  plot().catch(() => {});
  every(10, () => plot().catch(() => {}));
}

// ---------------------------------------------------------------------------------------------- NGroups
// An NGroup's members, rollout and history are what the orchestrator reports in properties.status.
function ngroupHead(withRg) {
  return h("thead", {}, h("tr", {}, h("th", {}, "NGroup"), withRg ? h("th", {}, "Resource group") : null,
    h("th", {}, "Phase"), h("th", {}, "Ready / desired"), h("th", {}, "Revision"), h("th", {}, "Rollout"),
    h("th", {}, "Provisioning")));
}

function readyOf(ng) {
  const p = ng.properties, st = p.status || {};
  const desired = st.observedGeneration ? st.desiredCount : p.elasticProfile.desiredCount;
  return `${st.readyCount || 0} / ${desired}`;
}

function ngroupRow(ng, withRg) {
  const p = ng.properties, st = p.status || {};
  const rg = rgOf(ng.id);
  return h("tr", { "data-ngroup": ng.name },
    h("td", {}, h("a", { href: ngroupHref(rg, ng.name) }, ng.name)), withRg ? h("td", {}, rg) : null,
    h("td", {}, badge(st.phase)), h("td", {}, readyOf(ng)), h("td", {}, st.currentRevision || (p.containerGroupProfiles[0] || {}).revision || ""),
    h("td", {}, st.rollout ? `${st.rollout.state} (${st.rollout.fromRevision || "-"} → ${st.rollout.toRevision})` : "-"),
    h("td", {}, p.provisioningState));
}

async function ngroupsPage() {
  const rows = h("tbody", { id: "ngroup-rows" });
  main.replaceChildren(h("h2", {}, "NGroups"), h("table", {}, ngroupHead(true), rows),
    h("p", { class: "muted" }, "Sets of container groups made from one profile, scaled and rolled by the orchestrator."));
  async function refresh() {
    const ngroups = (await api("GET", `/subscriptions/${sub()}/providers/Microsoft.ContainerInstance/ngroups`)).value;
    rows.replaceChildren(...ngroups.map((ng) => ngroupRow(ng, true)));
    if (!ngroups.length) rows.replaceChildren(h("tr", {}, h("td", { colspan: 7 }, "No NGroups yet (corral ngroup create, or the ngroups API).")));
  }
  await refresh();
  every(3, () => refresh().catch(() => {}));
}

async function ngroupPage(rg, name) {
  const path = ngroupPath(rg, name);
  let ng;
  try {
    ng = await api("GET", path);
  } catch (err) {
    main.replaceChildren(h("h2", {}, name), errorBox(err));
    return;
  }
  const phase = badge((ng.properties.status || {}).phase, "ngroup-phase");
  const prov = h("span", { id: "ngroup-provisioning", class: "muted" });
  const ready = h("strong", { id: "ng-ready" });
  const summary = h("p", { id: "ngroup-summary" });
  const members = h("tbody", { id: "member-rows" });
  const rollout = h("div", { id: "rollout" });
  const history = h("tbody", { id: "history-rows" });
  const events = h("ul", { class: "events", id: "events" });
  const addEvent = eventList(events);
  const message = h("p", { id: "ngroup-message", role: "status" });
  const desired = h("input", { id: "ng-desired", type: "number", min: "0", step: "1", "aria-label": "desired count",
    value: String(ng.properties.elasticProfile.desiredCount) });
  const cpuCanvas = h("canvas", { id: "cpu-chart" });
  const memCanvas = h("canvas", { id: "mem-chart" });

  async function act(label, fn) {
    message.textContent = `${label}...`;
    try {
      await fn();
      message.textContent = `${label}: accepted; the orchestrator carries it out.`;
      await refresh();
    } catch (err) {
      message.textContent = `${label} failed: ${err.message}`;
    }
  }
  // No scale verb in ACI: a scale is a change of elasticProfile.desiredCount (a PATCH, JSON merge patch).
  const scale = h("form", { id: "ng-scale-form", class: "scale", onsubmit: (e) => {
    e.preventDefault();
    const n = Number(desired.value);
    act(`Scale to ${n}`, () => api("PATCH", path, { body: { properties: { elasticProfile: { desiredCount: n } } } }));
  } }, h("label", {}, "Desired count", desired), h("button", { type: "submit", id: "ng-scale" }, "Scale"));
  const actions = h("div", { class: "actions" },
    h("button", { class: "secondary", id: "ng-restart", onclick: () => act("Restart", () => api("POST", `${path}/restart`)) }, "Restart"),
    h("button", { class: "secondary", id: "ng-stop", onclick: () => act("Stop", () => api("POST", `${path}/stop`)) }, "Stop"),
    h("button", { class: "secondary", id: "ng-start", onclick: () => act("Start", () => api("POST", `${path}/start`)) }, "Start"),
    h("button", { class: "contrast", id: "ng-delete", onclick: () => confirmDialog(`Delete the NGroup ${name} and its members?`,
      () => act("Delete", async () => {
        await api("DELETE", path);
        location.hash = `#/rg/${encodeURIComponent(rg)}`;
      })) }, "Delete"));

  main.replaceChildren(
    h("hgroup", {}, h("h2", {}, name, " ", phase), h("p", {}, "NGroup in resource group ",
      h("a", { href: `#/rg/${encodeURIComponent(rg)}` }, rg), " · provisioning ", prov, " · ready / desired ", ready)),
    summary, h("div", { class: "grid" }, scale, actions), message,
    h("h4", {}, "Members"),
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Member"), h("th", {}, "State"), h("th", {}, "Revision"),
      h("th", {}, "Ready"), h("th", {}, "In service"), h("th", {}, "IP"), h("th", {}, "Node"))), members),
    h("div", { class: "grid" },
      h("section", {}, h("h4", {}, "CPU (millicores) per member"), h("div", { class: "chart-box" }, cpuCanvas)),
      h("section", {}, h("h4", {}, "Memory (MB) per member"), h("div", { class: "chart-box" }, memCanvas))),
    h("div", { class: "grid" },
      h("section", {}, h("h4", {}, "Rollout"), rollout, h("h5", {}, "History"),
        h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Revision"), h("th", {}, "Result"), h("th", {}, "At"),
          h("th", {}, "Message"))), history)),
      h("section", {}, h("h4", {}, "Events"), events)));

  function show(x) {
    const p = x.properties, st = p.status || {};
    phase.className = `state state-${st.phase || "Pending"}`;
    phase.textContent = st.phase || "Pending";
    prov.textContent = p.provisioningState;
    ready.textContent = readyOf(x);
    const profile = p.containerGroupProfiles[0] || {};
    const rolling = (p.updateProfile || {}).rollingUpdateProfile || {};
    const a = p.elasticProfile.autoscale;
    summary.replaceChildren(`Profile ${profile.resource.id.split("/").pop()} revision ${profile.revision}`,
      st.currentRevision ? ` (members run ${st.currentRevision})` : "",
      ` · ${(p.updateProfile || {}).updateMode || "Manual"} updates`,
      (p.updateProfile || {}).updateMode === "Rolling" ? ` (batches of ${rolling.maxBatchPercent || 20} %)` : "",
      a ? ` · autoscale ${a.minCount}–${a.maxCount}${st.autoscale ? `, CPU ${st.autoscale.cpuUtilizationPercent ?? "-"} %` : ""}` : "");
    members.replaceChildren(...(st.members || []).map((m) => h("tr", { "data-member": m.name },
      h("td", {}, h("a", { href: groupHref(rg, m.name) }, m.name)), h("td", {}, badge(m.state)), h("td", {}, m.revision ?? ""),
      h("td", {}, m.ready ? "yes" : "no"), h("td", {}, m.inService ? "yes" : "no"), h("td", {}, m.ip || "-"), h("td", {}, m.node || "-"))));
    const ro = st.rollout;
    rollout.replaceChildren(ro
      ? h("p", { id: "rollout-state" }, badge(ro.state), ` revision ${ro.fromRevision || "-"} → ${ro.toRevision}`,
        ro.rollingBack ? " (rolling back)" : "", ` · batch ${ro.batch}`, ro.message ? h("br") : "",
        ro.message ? h("span", { class: "muted" }, ro.message) : "")
      : h("p", { id: "rollout-state", class: "muted" }, "No rollout yet."));
    history.replaceChildren(...[...(st.history || [])].reverse().map((e) => h("tr", {}, h("td", {}, e.revision),
      h("td", {}, badge(e.result)), h("td", {}, when(e.at)), h("td", {}, e.message || ""))));
    for (const e of st.events || []) addEvent({ event: e });
  }
  async function refresh() {
    show(await api("GET", path));
  }
  show(ng);
  every(2, () => refresh().catch(() => {}));
  metricCharts(cpuCanvas, memCanvas, path, "containerGroupName eq '*'", name);
}

async function createPage() {
  let yamlBody = null;
  const field = (label, input, help) => h("label", {}, label, input, help ? h("small", {}, help) : null);
  const inputs = {
    rg: h("input", { id: "f-rg", name: "rg", required: true, value: "default" }),
    name: h("input", { id: "f-name", name: "name", required: true, pattern: "[a-z0-9]([-a-z0-9]*[a-z0-9])?" }),
    image: h("input", { id: "f-image", name: "image", required: true, value: "corral/busybox:latest" }),
    command: h("textarea", { id: "f-command", name: "command", rows: 3, placeholder: "sh\n-c\nhttpd -f -p 80" }),
    cpu: h("input", { id: "f-cpu", name: "cpu", type: "number", step: "0.05", min: "0.05", value: "0.5" }),
    memory: h("input", { id: "f-memory", name: "memory", type: "number", step: "0.05", min: "0.05", value: "0.5" }),
    ports: h("input", { id: "f-ports", name: "ports", placeholder: "80 or 8080:80, comma-separated" }),
    ip: h("select", { id: "f-ip", name: "ip" }, h("option", { value: "" }, "No IP address"),
      h("option", { value: "Public" }, "Public"), h("option", { value: "Private" }, "Private")),
    env: h("textarea", { id: "f-env", name: "env", rows: 2, placeholder: "KEY=value, one a line" }),
    restart: h("select", { id: "f-restart", name: "restart" }, ["Always", "OnFailure", "Never"].map((r) => h("option", { value: r }, r))),
    yaml: h("input", { id: "f-yaml", type: "file", accept: ".yaml,.yml,application/yaml,text/yaml" }),
  };
  const preview = h("pre", { id: "yaml-preview", class: "muted", hidden: true });
  const error = h("p", { class: "error", id: "create-error", role: "alert" });
  inputs.yaml.addEventListener("change", async () => {
    error.textContent = "";
    yamlBody = null;
    preview.hidden = true;
    const file = inputs.yaml.files[0];
    if (!file) return;
    try {
      const doc = jsyaml.load(await file.text());
      if (!doc || typeof doc !== "object" || !doc.properties) throw new Error("it has no 'properties': not an ACI deployment file");
      yamlBody = Object.fromEntries(["location", "tags", "zones", "identity", "properties"].filter((k) => k in doc).map((k) => [k, doc[k]]));
      if (doc.name && !inputs.name.value) inputs.name.value = doc.name;
      preview.textContent = `From ${file.name}: ${yamlBody.properties.containers?.length || 0} container(s); the fields below other than resource group and name are ignored.`;
      preview.hidden = false;
    } catch (err) {
      error.textContent = `${file.name} is not a usable ACI YAML file: ${err.message}`;
    }
  });

  function fromFields() {
    const ports = inputs.ports.value.split(",").map((s) => s.trim()).filter(Boolean).map((part) => {
      const [a, b] = part.split(":");
      const port = { port: Number(b || a), protocol: "TCP" };
      if (b) port.publicPort = Number(a);
      if (!Number.isInteger(port.port)) throw new Error(`'${part}' is not PORT or PUBLIC:CONTAINER`);
      return port;
    });
    const env = inputs.env.value.split("\n").map((s) => s.trim()).filter(Boolean).map((line) => {
      const i = line.indexOf("=");
      if (i < 1) throw new Error(`'${line}' is not KEY=value`);
      return { name: line.slice(0, i), value: line.slice(i + 1) };
    });
    const command = inputs.command.value.split("\n").filter((s) => s.length);
    const container = { name: inputs.name.value, properties: {
      image: inputs.image.value,
      resources: { requests: { cpu: Number(inputs.cpu.value), memoryInGB: Number(inputs.memory.value) } },
    } };
    if (command.length) container.properties.command = command;
    if (env.length) container.properties.environmentVariables = env;
    if (ports.length) container.properties.ports = ports.map((x) => ({ port: x.port, protocol: x.protocol }));
    const props = { containers: [container], osType: "Linux", restartPolicy: inputs.restart.value };
    if (inputs.ip.value) props.ipAddress = { type: inputs.ip.value, ports };
    return { location: session.location, properties: props };
  }

  const form = h("form", { id: "create-form", onsubmit: async (e) => {
    e.preventDefault();
    error.textContent = "";
    const rg = inputs.rg.value.trim(), name = inputs.name.value.trim();
    try {
      const body = yamlBody || fromFields();
      const submit = document.getElementById("create-submit");
      submit.setAttribute("aria-busy", "true");
      await api("PUT", groupPath(rg, name), { body });
      location.hash = `#/rg/${encodeURIComponent(rg)}/g/${encodeURIComponent(name)}`;
    } catch (err) {
      error.textContent = err.message;
      document.getElementById("create-submit").removeAttribute("aria-busy");
    }
  } },
  h("div", { class: "grid" }, field("Resource group", inputs.rg), field("Name", inputs.name, "lowercase letters, digits and '-'")),
  field("Image", inputs.image),
  field("Command", inputs.command, "One argument a line (none: the image's entrypoint)."),
  h("div", { class: "grid" }, field("CPU cores", inputs.cpu), field("Memory (GB)", inputs.memory),
    field("Restart policy", inputs.restart)),
  h("div", { class: "grid" }, field("IP address", inputs.ip), field("Ports", inputs.ports)),
  field("Environment variables", inputs.env),
  field("Or an ACI YAML deployment file", inputs.yaml, "as for `az container create --file`"), preview,
  h("button", { type: "submit", id: "create-submit" }, "Create"), error);
  main.replaceChildren(h("h2", {}, "Create a container group"), form);
}

async function nodesPage() {
  const nodes = (await api("GET", "/portal/api/nodes")).value;
  const pct = (a, b) => (b ? Math.round((100 * a) / b) : 0);
  main.replaceChildren(h("h2", {}, "Nodes"),
    h("table", { id: "nodes" }, h("thead", {}, h("tr", {}, h("th", {}, "Node"), h("th", {}, "Ready"), h("th", {}, "CPU allocated"),
      h("th", {}, "Memory allocated"), h("th", {}, "Groups"), h("th", {}, "Zone"), h("th", {}, "Last heartbeat"))),
    h("tbody", {}, nodes.map((n) => h("tr", { "data-node": n.name },
      h("td", {}, n.name, h("br"), h("span", { class: "muted" }, n.address)),
      h("td", {}, badge(n.ready ? (n.unschedulable ? "Cordoned" : "Ready") : "NotReady")),
      h("td", {}, `${n.allocated.cpu} / ${n.cpu} cores`, h("progress", { value: pct(n.allocated.cpu, n.cpu), max: 100 })),
      h("td", {}, `${n.allocated.memoryGB} / ${n.memoryGB} GB`, h("progress", { value: pct(n.allocated.memoryGB, n.memoryGB), max: 100 })),
      h("td", {}, `${n.allocated.groups} / ${n.maxGroups}`), h("td", {}, n.zone || "-"), h("td", {}, when(n.lastHeartbeat)))))));
}

async function usagePage() {
  const usage = await api("GET", `/subscriptions/${sub()}/providers/Microsoft.ContainerInstance/usageRecords`);
  const cur = usage.currency;
  const rgs = Object.entries(usage.resourceGroups);
  const canvas = h("canvas", { id: "usage-chart" });
  main.replaceChildren(h("h2", {}, "Usage and cost"),
    h("p", { class: "muted" }, `Per-second metering of what each group requested, priced at ${usage.prices.cpuCoreSecond} ${cur} per core-second and ${usage.prices.memoryGBSecond} ${cur} per GB-second.`),
    h("div", { class: "chart-box" }, canvas),
    h("table", { id: "usage-rgs" }, h("thead", {}, h("tr", {}, h("th", {}, "Resource group"), h("th", {}, "Groups"),
      h("th", {}, "Core-seconds"), h("th", {}, "GB-seconds"), h("th", {}, `Cost (${cur})`))),
    h("tbody", {}, rgs.map(([rg, t]) => h("tr", { "data-rg": rg }, h("td", {}, rg), h("td", {}, t.groups), h("td", {}, t.coreSeconds),
      h("td", {}, t.gbSeconds), h("td", {}, t.cost.toFixed(6))))),
    h("tfoot", {}, h("tr", {}, h("th", {}, "Total"), h("th", {}, usage.total.groups), h("th", {}, usage.total.coreSeconds),
      h("th", {}, usage.total.gbSeconds), h("th", {}, usage.total.cost.toFixed(6))))),
    h("h3", {}, "Container groups"),
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Group"), h("th", {}, "Resource group"), h("th", {}, "Seconds"),
      h("th", {}, "Running"), h("th", {}, `Cost (${cur})`))),
    h("tbody", {}, usage.value.map((r) => h("tr", {}, h("td", {}, r.name, r.deleted ? h("span", { class: "muted" }, " (deleted)") : ""),
      h("td", {}, r.resourceGroup), h("td", {}, r.seconds), h("td", {}, r.running ? "yes" : "no"), h("td", {}, r.cost.toFixed(6)))))));
  const chart = new Chart(canvas, {
    type: "bar",
    data: { labels: rgs.map(([rg]) => rg), datasets: [{ label: `Cost (${cur})`, data: rgs.map(([, t]) => t.cost) }] },
    options: { animation: false, maintainAspectRatio: false,
      scales: { y: { beginAtZero: true, ticks: { callback: (v) => (v ? Number(v).toPrecision(2) : "0") } } } },
  });
  onLeave(() => chart.destroy());
}

// ---------------------------------------------------------------------------------------------- routing
const ROUTES = [
  [/^#?\/?$/, overview],
  [/^#\/rg\/([^/]+)$/, rgPage],
  [/^#\/rg\/([^/]+)\/g\/([^/]+)$/, groupPage],
  [/^#\/rg\/([^/]+)\/ng\/([^/]+)$/, ngroupPage],
  [/^#\/ngroups$/, ngroupsPage],
  [/^#\/create$/, createPage],
  [/^#\/nodes$/, nodesPage],
  [/^#\/usage$/, usagePage],
];

async function render() {
  for (const c of cleanups.splice(0)) try { c(); } catch (_) { /* already gone */ }
  if (!session && !(await loadSession())) {
    showLogin();
    return;
  }
  const hash = location.hash || "#/";
  for (const [pattern, page] of ROUTES) {
    const m = hash.match(pattern);
    if (m) {
      main.setAttribute("aria-busy", "true");
      try {
        await page(...m.slice(1).map(decodeURIComponent));
      } catch (err) {
        if (err.status !== 401) main.replaceChildren(errorBox(err));
      } finally {
        main.removeAttribute("aria-busy");
      }
      return;
    }
  }
  main.replaceChildren(h("h2", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Back to the resource groups")));
}

window.addEventListener("hashchange", render);
render();
