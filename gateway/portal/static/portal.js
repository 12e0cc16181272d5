// Streambridge developer portal and publisher console (CONTRACT §12).
// Plain DOM, no framework and no build step; text goes in through textContent only.
"use strict";

const state = { session: null, token: "", live: null, timer: null, chart: {} };

// --- DOM helpers ---------------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

let fieldCount = 0;
function field(label, attrs) {
  const id = "f" + ++fieldCount;
  return h("p", { class: "field" }, h("label", { for: id }, label), h("input", { id, ...attrs }));
}

function select(label, options, attrs) {
  const id = "f" + ++fieldCount;
  return h(
    "p",
    { class: "field" },
    h("label", { for: id }, label),
    h("select", { id, ...attrs }, options.map(([value, text]) => h("option", { value }, text)))
  );
}

function show(...nodes) {
  const view = document.getElementById("view");
  view.replaceChildren(...nodes.flat(Infinity).filter((n) => n !== null && n !== undefined && n !== false));
  const heading = view.querySelector("h1");
  if (heading) document.title = heading.textContent + " · Streambridge";
}

function notice(text) {
  const node = document.getElementById("notice");
  node.textContent = text;
  node.hidden = !text;
}

function problem(text, reasons) {
  const node = document.getElementById("problem");
  node.replaceChildren(text || "");
  if (reasons && reasons.length) node.append(h("ul", {}, reasons.map((r) => h("li", {}, r))));
  node.hidden = !text;
}

// --- the server ----------------------------------------------------------------------------
class Problem extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.error_description)) || "HTTP " + status);
    this.status = status;
    this.reasons = ((body && body.errors) || []).map((e) => e.field + ": " + e.message);
  }
}

async function call(method, path, body, contentType) {
  const headers = {};
  if (state.session && state.session.csrf) headers["X-CSRF-Token"] = state.session.csrf;
  let payload = body;
  if (body !== undefined && contentType === undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  } else if (contentType) {
    headers["Content-Type"] = contentType;
  }
  const answer = await fetch("/portal/api" + path, {
    method,
    headers,
    body: payload,
    credentials: "same-origin",
  });
  const text = await answer.text();
  const parsed = text ? JSON.parse(text) : null;
  if (!answer.ok) throw new Problem(answer.status, parsed);
  return parsed;
}

async function failed(error) {
  problem(error.message, error.reasons);
  // A session that ended (signed out elsewhere, developer deleted): show the signed-out nav.
  if (error.status === 401 && state.session && state.session.role) await refreshSession();
}

function guard(action) {
  return async (event) => {
    if (event) event.preventDefault();
    problem("");
    try {
      await action(event);
    } catch (error) {
      await failed(error);
    }
  };
}

async function refreshSession() {
  state.session = await call("GET", "/session");
  renderNav();
}

// --- navigation ----------------------------------------------------------------------------
function renderNav() {
  const s = state.session || {};
  const links = [["#/", "Catalogue"]];
  if (s.role === "developer") links.push(["#/applications", "Applications"]);
  if (s.role === "publisher") links.push(["#/console", "Console"]);
  if (!s.role) {
    links.push(["#/signin", "Sign in"]);
    if (s.self_signup) links.push(["#/signup", "Sign up"]);
    links.push(["#/publisher", "Publisher sign-in"]);
  }
  const items = links.map(([href, text]) => h("li", {}, h("a", { href }, text)));
  if (s.role) items.push(h("li", {}, h("button", { type: "button", onclick: signOut }, "Sign out")));
  document.getElementById("nav").replaceChildren(...items);
  document.getElementById("who").textContent =
    s.role === "developer" ? "Signed in as " + s.username : s.role === "publisher" ? "Publisher" : "";
}

const signOut = guard(async () => {
  await call("POST", "/signout", {});
  state.token = "";
  await refreshSession();
  location.hash = "#/";
});

async function route() {
  stopLive();
  clearInterval(state.timer);
  notice("");
  problem("");
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  try {
    if (parts[0] === "signin") return signInView();
    if (parts[0] === "signup") return signUpView();
    if (parts[0] === "publisher") return publisherSignInView();
    if (parts[0] === "api") return await apiView(parts[1], parts[2]);
    if (parts[0] === "applications") return await applicationsView();
    if (parts[0] === "console") return await consoleView();
    return await catalogueView();
  } catch (error) {
    await failed(error);
  }
}

// --- accounts ------------------------------------------------------------------------------
function credentialsForm(title, button, path) {
  const form = h(
    "form",
    { "aria-label": title },
    field("Username", { name: "username", autocomplete: "username", required: true }),
    field("Password", {
      name: "password",
      type: "password",
      autocomplete: path === "/signup" ? "new-password" : "current-password",
      required: true,
    }),
    h("button", { type: "submit" }, button)
  );
  form.addEventListener(
    "submit",
    guard(async () => {
      const data = new FormData(form);
      state.session = await call("POST", path, {
        username: data.get("username"),
        password: data.get("password"),
      });
      await refreshSession();
      location.hash = "#/";
    })
  );
  return form;
}

function signInView() {
  show(h("h1", {}, "Sign in"), credentialsForm("Sign in", "Sign in", "/signin"));
}

function signUpView() {
  show(
    h("h1", {}, "Sign up"),
    h("p", {}, "A developer account: passwords of 8 characters or more."),
    credentialsForm("Sign up", "Sign up", "/signup")
  );
}

function publisherSignInView() {
  const form = h(
    "form",
    { "aria-label": "Publisher sign-in" },
    field("Admin token", { name: "admin_token", type: "password", required: true }),
    h("button", { type: "submit" }, "Sign in")
  );
  form.addEventListener(
    "submit",
    guard(async () => {
      await call("POST", "/signin/publisher", { admin_token: new FormData(form).get("admin_token") });
      await refreshSession();
      location.hash = "#/console";
    })
  );
  show(h("h1", {}, "Publisher sign-in"), form);
}

// --- the catalogue and an API's page -------------------------------------------------------
async function catalogueView() {
  const apis = await call("GET", "/apis");
  show(
    h("h1", {}, "APIs"),
    h(
      "ul",
      { class: "cards", "aria-label": "APIs" },
      apis.map((api) =>
        h(
          "li",
          {},
          h("a", { href: `#/api/${encodeURIComponent(api.name)}/${encodeURIComponent(api.version)}` },
            `${api.name} ${api.version}`),
          h("span", { class: "tag" }, api.protocol),
          api.state === "DEPRECATED" ? h("span", { class: "tag warn" }, "deprecated") : null,
          api.description ? h("p", {}, api.description) : null
        )
      )
    )
  );
}

function asyncApiSummary(doc) {
  const channels = Object.entries(doc.channels || {});
  const operations = Object.entries(doc.operations || {});
  return h(
    "section",
    { "aria-label": "AsyncAPI document" },
    h("h2", {}, "AsyncAPI document"),
    h("p", {}, `AsyncAPI ${doc.asyncapi} · ${doc.info ? doc.info.title + " " + doc.info.version : ""}`),
    h(
      "dl",
      {},
      channels.map(([name, channel]) => [
        h("dt", {}, channel.address || name),
        h(
          "dd",
          {},
          operations
            .filter(([, op]) => op.channel && op.channel.$ref === "#/channels/" + name)
            .map(([opName, op]) => `${op.action} (${opName})`)
            .join(", ") || "—"
        ),
      ])
    ),
    h("details", {}, h("summary", {}, "Full document"), h("pre", {}, JSON.stringify(doc, null, 2)))
  );
}

async function apiView(name, version) {
  const api = await call("GET", `/apis/${encodeURIComponent(name)}/${encodeURIComponent(version)}`);
  const developer = state.session && state.session.role === "developer";
  const apps = developer ? await call("GET", "/applications") : [];
  const rows = api.topics.map((topic) =>
    h(
      "tr",
      {},
      h("td", {}, topic.name),
      h("td", {}, topic.mode),
      h("td", {}, topic.scopes.join(" ") || "—"),
      h(
        "td",
        {},
        developer
          ? h("button", { type: "button", "aria-label": "Try it " + topic.name,
              onclick: guard(() => tryIt(api, topic)) }, "Try it")
          : null
      )
    )
  );
  const parts = [
    h("h1", {}, `${api.name} ${api.version}`),
    h("p", {}, h("span", { class: "tag" }, api.protocol), " ", h("span", { class: "tag" }, api.state),
      " ", h("code", {}, api.base_path)),
    api.description ? h("p", {}, api.description) : null,
    h("p", {}, h("a", {
      href: `/portal/api/apis/${encodeURIComponent(api.name)}/${encodeURIComponent(api.version)}/asyncapi.json`,
      download: `${api.name}-${api.version}-asyncapi.json`,
    }, "Download AsyncAPI")),
    h("h2", {}, "Topics"),
    h("table", { "aria-label": "Topics" },
      h("thead", {}, h("tr", {}, h("th", {}, "Topic"), h("th", {}, "Mode"), h("th", {}, "Scopes"), h("th", {}, ""))),
      h("tbody", {}, rows)),
    h("h2", {}, "Tiers"),
    h("ul", { "aria-label": "Tiers" }, api.tiers.map((tier) =>
      h("li", {}, h("strong", {}, tier.name), " ",
        tier.events_per_minute ? `${tier.events_per_minute} events/min` : "unlimited events",
        tier.max_connections ? `, ${tier.max_connections} connections` : ""))),
  ];
  if (developer) parts.push(accessForms(api, apps));
  else parts.push(h("p", {}, h("a", { href: "#/signin" }, "Sign in"), " to subscribe and try it."));
  parts.push(h("section", { id: "live", "aria-label": "Try it" }));
  parts.push(asyncApiSummary(api.asyncapi));
  show(...parts);
}

function accessForms(api, apps) {
  const section = h("section", { "aria-label": "Access" }, h("h2", {}, "Subscribe and get a token"));
  if (!apps.length) {
    section.append(h("p", {}, "First ", h("a", { href: "#/applications" }, "create an application"), "."));
    return section;
  }
  const appChoice = select("Application", apps.map((a) => [a.client_id, a.name]), { name: "application" });
  const tierChoice = select("Tier", api.tiers.map((t) => [t.name, t.name]), { name: "tier" });
  const subscribe = h("form", { "aria-label": "Subscribe" }, appChoice, tierChoice,
    h("button", { type: "submit" }, "Subscribe"));
  subscribe.addEventListener("submit", guard(async () => {
    const data = new FormData(subscribe);
    await call("POST", "/subscriptions", {
      application: appChoice.querySelector("select").value,
      api: api.name, version: api.version, tier: data.get("tier"),
    });
    notice(`Subscribed to ${api.name} ${api.version} with the ${data.get("tier")} tier.`);
  }));
  section.append(subscribe, tokenForm(() => appChoice.querySelector("select").value, api));
  return section;
}

function tokenForm(application, api) {
  const scopes = [...new Set((api ? api.topics : []).flatMap((t) => t.scopes))].sort();
  const output = field("Access token", { readonly: true, name: "access_token", value: state.token });
  const form = h("form", { "aria-label": "Token" },
    scopes.length ? h("fieldset", {}, h("legend", {}, "Scopes"),
      scopes.map((scope) => h("label", { class: "check" },
        h("input", { type: "checkbox", name: "scope", value: scope, checked: true }), scope))) : null,
    h("button", { type: "submit" }, "Generate token"), output);
  form.addEventListener("submit", guard(async () => {
    const chosen = new FormData(form).getAll("scope");
    const answer = await call("POST", "/tokens", { application: application(), scopes: chosen });
    state.token = answer.access_token;
    output.querySelector("input").value = state.token;
    notice(`Token with scope "${answer.scope}", valid ${answer.expires_in} s.`);
  }));
  return form;
}

// --- Try it: a live view of a topic ----------------------------------------------------------
function stopLive() {
  if (state.live) state.live.close();
  state.live = null;
}

function tryIt(api, topic) {
  stopLive();
  const panel = document.getElementById("live");
  const events = h("ol", { "aria-label": "Events", class: "events" });
  const url = field("Topic URL", { name: "url", value: topic.path });
  const status = h("p", { class: "live-status" }, "not connected");
  const publishes = api.protocol === "websocket" && topic.mode !== "subscribe";
  const message = publishes ? field("Message", { name: "message", value: '{"text": "hello"}' }) : null;
  const send = publishes ? h("button", { type: "button" }, "Send") : null;
  const connect = h("button", { type: "button" }, "Connect");
  const stop = h("button", { type: "button", onclick: () => { stopLive(); status.textContent = "stopped"; } }, "Stop");
  panel.replaceChildren(h("h2", {}, "Try it: " + topic.name), url, h("p", {}, connect, " ", stop),
    status, h("div", { class: "publish", hidden: !publishes }, message, send), events);

  function add(id, data, kind) {
    const item = h("li", { class: kind || "" }, kind ? h("strong", {}, kind + " ") : null,
      id ? h("code", { class: "event-id" }, id) : null, id ? " " : null, data);
    events.prepend(item);
    while (events.children.length > 200) events.lastChild.remove();
  }

  function open() {
    stopLive();
    if (!state.token) {
      status.textContent = "generate a token first";
      return;
    }
    const path = url.querySelector("input").value;
    if (path.includes("{")) {
      status.textContent = "fill in the path parameters of the Topic URL, then Connect";
      return;
    }
    const target = new URL(path, location.origin);
    target.searchParams.set("access_token", state.token);
    if (api.protocol === "websocket") {
      target.protocol = location.protocol === "https:" ? "wss:" : "ws:";
      const socket = new WebSocket(target);
      socket.onopen = () => (status.textContent = "connected (WebSocket)");
      socket.onmessage = (event) => add("", event.data);
      socket.onclose = (event) => {
        status.textContent = `closed ${event.code} ${event.reason}`;
        if (event.reason === "throttled") add("", `{"code": ${event.code}}`, "throttled");
        else if (event.code === 1008) add("", event.reason || "policy", "revoked");
      };
      state.live = socket;
      if (send) send.onclick = () => socket.send(message.querySelector("input").value);
    } else {
      const source = new EventSource(target);
      source.onopen = () => (status.textContent = "connected (Server-Sent Events)");
      source.onmessage = (event) => add(event.lastEventId, event.data);
      for (const signal of ["throttled", "revoked", "gap", "lag"]) {
        source.addEventListener(signal, (event) => {
          add(event.lastEventId, event.data, signal);
          if (signal === "throttled" || signal === "revoked") {
            source.close(); // the gateway ended the stream; reconnecting would be refused
            status.textContent = `closed (${signal})`;
          }
        });
      }
      source.onerror = () => (status.textContent =
        source.readyState === EventSource.CLOSED ? "closed" : "reconnecting…");
      state.live = source;
    }
  }
  connect.onclick = open;
  open();
}

// --- a developer's applications ----------------------------------------------------------------
async function applicationsView() {
  const apps = await call("GET", "/applications");
  const create = h("form", { "aria-label": "Create application" },
    field("Application name", { name: "name", required: true }),
    h("button", { type: "submit" }, "Create application"));
  const secret = h("div", { "aria-live": "polite" });
  create.addEventListener("submit", guard(async () => {
    const made = await call("POST", "/applications", { name: new FormData(create).get("name") });
    await applicationsView();
    document.getElementById("secret").replaceChildren(
      h("div", { class: "secret", role: "group", "aria-label": "New application credentials" },
        h("p", {}, "Copy the secret now: it is shown only once."),
        field("Client ID", { readonly: true, value: made.client_id }),
        field("Client secret", { readonly: true, value: made.client_secret })));
  }));
  secret.id = "secret";
  show(
    h("h1", {}, "Applications"),
    create,
    secret,
    h("ul", { class: "cards", "aria-label": "Your applications" }, apps.map((app) =>
      h("li", {}, h("strong", {}, app.name), " ", h("code", {}, app.client_id),
        h("ul", {}, app.subscriptions.map((s) =>
          h("li", {}, `${s.api} ${s.version} · ${s.tier} · ${s.state}`))),
        app.subscriptions.length ? null : h("p", {}, "No subscriptions yet: open an API and Subscribe.")))),
  );
}

// --- the publisher console -------------------------------------------------------------------
const ACTIONS = [["publish", "Publish"], ["deprecate", "Deprecate"], ["retire", "Retire"], ["block", "Block"], ["unblock", "Unblock"]];

async function consoleView() {
  const [apis, subscriptions, deadLetters] = await Promise.all([
    call("GET", "/manage/apis"),
    call("GET", "/manage/subscriptions"),
    call("GET", "/manage/webhooks/deadletters"),
  ]);
  const apiRows = apis.map((api) => {
    const path = `/manage/apis/${encodeURIComponent(api.name)}/${encodeURIComponent(api.version)}/lifecycle`;
    return h("tr", { "aria-label": `${api.name} ${api.version}` },
      h("th", { scope: "row" }, `${api.name} ${api.version}`),
      h("td", {}, api.protocol || "sse"),
      h("td", {}, api.state || "PUBLISHED"),
      h("td", {}, ACTIONS.map(([action, text]) => h("button", { type: "button", "data-action": action,
        onclick: guard(async () => { await call("POST", path, { action }); await consoleView();
          notice(`${api.name} ${api.version}: ${action} done.`); }) }, text))),
      h("td", {}, h("canvas", { width: 240, height: 48, "data-api": `${api.name} ${api.version}`,
        role: "img", "aria-label": `Live chart of ${api.name} ${api.version}` }),
        h("span", { class: "figures", "data-figures": `${api.name} ${api.version}` }, "…")));
  });
  const subscriptionRows = subscriptions.map((s) =>
    h("tr", { "aria-label": `${s.application} ${s.api} ${s.version}` },
      h("td", {}, s.application), h("td", {}, `${s.api} ${s.version}`), h("td", {}, s.tier), h("td", {}, s.state),
      h("td", {}, h("button", { type: "button", onclick: guard(async () => {
        await call("POST", `/manage/subscriptions/${s.id}/${s.state === "BLOCKED" ? "unblock" : "block"}`, {});
        await consoleView(); }) }, s.state === "BLOCKED" ? "Unblock" : "Block"))));
  const letterRows = deadLetters.map((d) =>
    h("tr", {}, h("td", {}, `${d.api} ${d.version}${d.topic}`), h("td", {}, d.last_error || ""),
      h("td", {}, String(d.attempts)), h("td", {}, h("button", { type: "button", onclick: guard(async () => {
        await call("POST", `/manage/webhooks/deadletters/${encodeURIComponent(d.id)}/replay`, {});
        await consoleView(); notice("Replayed."); }) }, "Replay"))));
  show(
    h("h1", {}, "Publisher console"),
    h("h2", {}, "APIs"),
    h("table", { "aria-label": "APIs" }, h("thead", {}, h("tr", {}, ["API", "Protocol", "State", "Lifecycle", "Live"].map((t) => h("th", {}, t)))),
      h("tbody", {}, apiRows)),
    h("p", { class: "legend" }, "Charts, last minute: ", h("span", { class: "in" }, "events/s read"), " · ",
      h("span", { class: "out" }, "events/s delivered"), " · ", h("span", { class: "conn" }, "open connections")),
    importForm(),
    h("h2", {}, "Subscriptions"),
    h("table", { "aria-label": "Subscriptions" }, h("thead", {}, h("tr", {}, ["Application", "API", "Tier", "State", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, subscriptionRows)),
    h("h2", {}, "Dead letters"),
    deadLetters.length
      ? h("table", { "aria-label": "Dead letters" }, h("thead", {}, h("tr", {}, ["Topic", "Last error", "Attempts", ""].map((t) => h("th", {}, t)))),
          h("tbody", {}, letterRows))
      : h("p", {}, "No dead letters."),
  );
  await poll();
  state.timer = setInterval(poll, 1000);
}

function importForm() {
  const brokers = (state.session && state.session.brokers) || [];
  const form = h("form", { "aria-label": "Import AsyncAPI" }, h("h2", {}, "Import AsyncAPI"),
    select("Broker", brokers.map((b) => [b, b]), { name: "broker" }),
    h("p", { class: "field" }, h("label", { for: "asyncapi-file" }, "AsyncAPI file"),
      h("input", { id: "asyncapi-file", type: "file", name: "file", accept: ".yaml,.yml,.json" })),
    h("p", { class: "field" }, h("label", { for: "asyncapi-text" }, "AsyncAPI document"),
      h("textarea", { id: "asyncapi-text", name: "document", rows: 8 })),
    h("button", { type: "submit" }, "Import AsyncAPI"));
  form.addEventListener("submit", guard(async () => {
    const data = new FormData(form);
    const file = data.get("file");
    const text = file && file.size ? await file.text() : data.get("document");
    const made = await call("POST", `/manage/apis/import?broker=${encodeURIComponent(data.get("broker"))}`,
      text, "application/yaml");
    await consoleView();
    notice(`Imported ${made.name} ${made.version} (state ${made.state || "CREATED"}).`);
  }));
  return form;
}

async function poll() {
  let stats;
  try {
    stats = await call("GET", "/stats");
  } catch (error) {
    clearInterval(state.timer);
    return;
  }
  for (const [key, figures] of Object.entries(stats.apis)) {
    const history = (state.chart[key] = state.chart[key] || []);
    const last = history[history.length - 1];
    const span = last ? Math.max(0.001, stats.at - last.at) : 1;
    const perSecond = (now, before) => (last ? Math.max(0, (now - before) / span) : 0);
    history.push({
      at: stats.at,
      in: figures.events_in,
      out: figures.events_out,
      inRate: perSecond(figures.events_in, last ? last.in : 0),
      outRate: perSecond(figures.events_out, last ? last.out : 0),
      connections: figures.connections,
    });
    while (history.length > 60) history.shift();
    const now = history[history.length - 1];
    const label = document.querySelector(`[data-figures="${CSS.escape(key)}"]`);
    if (label) {
      label.textContent = `${now.inRate.toFixed(1)} events/s in · ${now.outRate.toFixed(1)} out · ` +
        `${figures.connections} connections`;
    }
    const canvas = document.querySelector(`canvas[data-api="${CSS.escape(key)}"]`);
    if (canvas) draw(canvas, history);
    // Only the lifecycle actions that lead somewhere from the API's state are enabled.
    const row = canvas && canvas.closest("tr");
    for (const button of row ? row.querySelectorAll("button[data-action]") : []) {
      button.disabled = !figures.actions.includes(button.dataset.action);
    }
  }
}

function draw(canvas, history) {
  const g = canvas.getContext("2d");
  const { width, height } = canvas;
  g.clearRect(0, 0, width, height);
  const top = Math.max(1, ...history.map((p) => Math.max(p.inRate, p.outRate, p.connections)));
  const line = (value, colour) => {
    g.strokeStyle = colour;
    g.beginPath();
    history.forEach((p, i) => {
      const x = (i / 59) * (width - 2) + 1;
      const y = height - 1 - (value(p) / top) * (height - 4);
      if (i === 0) g.moveTo(x, y);
      else g.lineTo(x, y);
    });
    g.stroke();
  };
  line((p) => p.inRate, "#8250df");
  line((p) => p.outRate, "#1f6feb");
  line((p) => p.connections, "#d97706");
}

// --- start ---------------------------------------------------------------------------------------
window.addEventListener("hashchange", route);
refreshSession().then(route, (error) => problem(error.message));
