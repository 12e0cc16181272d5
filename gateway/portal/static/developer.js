// Developer views: the catalogue, an API's page, tokens, Try it, applications.
"use strict";

// --- the catalogue and an API's page -------------------------------------------------------
async function catalogueView() {
  const shown = current();
  const apis = await call("GET", "/apis");
  if (!shown()) return;
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
  const shown = current();
  const api = await call("GET", `/apis/${encodeURIComponent(name)}/${encodeURIComponent(version)}`);
  const developer = state.session && state.session.role === "developer";
  const apps = developer ? await call("GET", "/applications") : [];
  if (!shown()) return;
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

  const resume = { path: null, id: null }; // WebSocket: where Connect resumes

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
      // streambridge.v1 (CONTRACT §6): ids, signals, acks; Connect again resumes after
      // the last id seen on this URL, as EventSource does.
      if (resume.path !== path) Object.assign(resume, { path, id: null });
      if (resume.id) target.searchParams.set("last_event_id", resume.id);
      const socket = new WebSocket(target, "streambridge.v1");
      let ended = null;
      let refs = 0;
      socket.onopen = () => (status.textContent = "connected (WebSocket)");
      socket.onmessage = (event) => {
        if (socket.protocol !== "streambridge.v1") return add("", event.data); // plain frames
        const frame = JSON.parse(event.data);
        if (frame.id) {
          resume.id = frame.id;
          add(frame.id, JSON.stringify(frame.data));
        } else if (frame.event === "ack") {
          add("", "message " + frame.ref + " confirmed by the broker", "ack");
        } else if (frame.event === "nack" || frame.event === "error") {
          add("", (frame.ref ? "message " + frame.ref + ": " : "") + (frame.error || frame.detail), frame.event);
        } else {
          add("", frame.data === undefined ? "" : JSON.stringify(frame.data), frame.event);
          if (frame.event === "throttled" || frame.event === "revoked") ended = frame.event;
        }
      };
      socket.onclose = (event) => {
        if (ended) status.textContent = `closed (${ended})`;
        else status.textContent = `closed ${event.code} ${event.reason}`;
      };
      state.live = socket;
      if (send) send.onclick = () => {
        const text = message.querySelector("input").value;
        if (socket.protocol !== "streambridge.v1") return socket.send(text);
        let data = text;
        try { data = JSON.parse(text); } catch { /* not JSON: sent as a string */ }
        socket.send(JSON.stringify({ ref: String(++refs), data }));
      };
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
  const shown = current();
  const apps = await call("GET", "/applications");
  if (!shown()) return;
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
