// Streambridge developer portal and publisher console (CONTRACT §12).
// Plain DOM, no framework and no build step; text goes in through textContent only.
// The shared part: DOM helpers, calls to the server, navigation and accounts.
// developer.js and console.js add the views; the last of them starts the page.
"use strict";

const state = { session: null, token: "", live: null, timer: null, chart: {}, view: 0 };

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

// A view that waits for the server shows itself only if no navigation came meanwhile: the
// catalogue the page starts with, answered late, must not replace the sign-up form.
function current() {
  const view = state.view;
  return () => view === state.view;
}

async function route() {
  state.view++;
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
