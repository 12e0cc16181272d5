// Shared by the test pages: the page's parameters, its status line, its list of events,
// and a token fetched cross-origin from the gateway (a preflighted POST: it sends
// Authorization).
"use strict";
const params = new URLSearchParams(location.search);
const gateway = params.get("gateway");
window.received = [];
window.opens = 0;

function status(text) {
  document.getElementById("status").textContent = text;
}

function show(id, data) {
  window.received.push({ id, data });
  const item = document.createElement("li");
  item.textContent = (id ? id + " " : "") + data;
  document.getElementById("events").append(item);
}

async function accessToken() {
  if (params.get("token")) return params.get("token");
  const answer = await fetch(gateway + "/oauth2/token", {
    method: "POST",
    headers: {
      Authorization: "Basic " + btoa(params.get("client") + ":" + params.get("secret")),
      "Content-Type": "application/x-www-form-urlencoded",
    },
    body: "grant_type=client_credentials",
  });
  if (!answer.ok) throw new Error("token endpoint answered " + answer.status);
  return (await answer.json()).access_token;
}

function topicUrl(base, token) {
  return base + params.get("path") + "?access_token=" + encodeURIComponent(token);
}
