// The publisher console: APIs and their lifecycle, import, subscriptions, dead letters,
// live charts; and the start of the page (after every view is defined).
"use strict";

// --- the publisher console -------------------------------------------------------------------
const ACTIONS = [["publish", "Publish"], ["deprecate", "Deprecate"], ["retire", "Retire"], ["block", "Block"], ["unblock", "Unblock"]];

async function consoleView() {
  const shown = current();
  const [apis, subscriptions, deadLetters] = await Promise.all([
    call("GET", "/manage/apis"),
    call("GET", "/manage/subscriptions"),
    call("GET", "/manage/webhooks/deadletters"),
  ]);
  if (!shown()) return;
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
    h("tr", { "aria-label": `${d.api} ${d.version}${d.topic}` }, h("td", {}, `${d.api} ${d.version}${d.topic}`), h("td", {}, d.last_error || ""),
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
  if (!shown()) return;
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
