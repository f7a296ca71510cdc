// The checkout page (liangcao.checkout.page): the order, the methods offered, pay, and a passkey step-up when
// the gateway asks for one. Values are shown with textContent only; handlers are attached here.
"use strict";
const $ = (id) => document.getElementById(id);
const b64u = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const unb64u = (s) => Uint8Array.from(atob(s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4)), (c) => c.charCodeAt(0));
const orderId = decodeURIComponent(location.pathname.replace(/\/$/, "").split("/").pop());
const api = "/v1/orders/" + encodeURIComponent(orderId);

// The shopper's session: the platform's sign-in sends the shopper here as /checkout/<order>#token=<session>.
// A fragment never reaches a server or its logs; it is kept for this tab only and taken off the address bar.
const session = (() => {
  const m = /(?:^#|&)token=([A-Za-z0-9._-]+)/.exec(location.hash);
  if (m) { sessionStorage.setItem("liangcao-session", m[1]); history.replaceState(null, "", location.pathname); }
  return sessionStorage.getItem("liangcao-session");
})();

// Money is an integer number of fen: formatted with integer arithmetic only.
function yuan(fen) { return `${Math.floor(fen / 100)}.${String(fen % 100).padStart(2, "0")}`; }
function day(d) { return new Date(d * 86400000).toISOString().slice(0, 10); }

function show(state, value) {
  const el = $("result");
  el.dataset.state = state;
  el.className = state === "ok" ? "ok" : state === "refused" ? "refused" : "";
  el.textContent = typeof value === "string" ? value : JSON.stringify(value, null, 1);
}

function el(tag, text, attrs) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

function requestOptions(o) {
  return {...o, challenge: unb64u(o.challenge),
    allowCredentials: (o.allowCredentials || []).map((c) => ({...c, id: unb64u(c.id)}))};
}

function assertionJSON(cred) {
  const r = cred.response, out = {id: cred.id, rawId: b64u(cred.rawId), type: cred.type,
    authenticatorAttachment: cred.authenticatorAttachment, clientExtensionResults: cred.getClientExtensionResults(),
    response: {clientDataJSON: b64u(r.clientDataJSON), authenticatorData: b64u(r.authenticatorData),
      signature: b64u(r.signature)}};
  if (r.userHandle) out.response.userHandle = b64u(r.userHandle);
  return out;
}

function newKey() {
  if (crypto.randomUUID) return "page-" + crypto.randomUUID();
  return "page-" + Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

function renderOption(o, currency) {
  const box = el("div", undefined, {class: "method", id: "offer-" + o.method, "data-method": o.method,
    "data-available": o.available === false ? "false" : "true"});
  const radio = el("input", undefined, {type: "radio", name: "method", value: o.method, id: "pick-" + o.method});
  if (o.available === false) radio.disabled = true;
  const label = el("label", undefined, {for: "pick-" + o.method});
  if (o.kind === "installments") {
    label.textContent = `${o.periods} monthly installments`;
    box.append(radio, " ", label);
    if (o.available === false) { box.append(el("p", `not available: ${o.reason}`, {class: "reason"})); return box; }
    const who = o.fee_payer === "merchant" ? "paid by the merchant" : "paid by you";
    box.append(el("p", `fee ${yuan(o.fee)} ${currency} (${who}); you pay ${yuan(o.shopper_total)} ${currency} in all`,
      {class: "fee", "data-fee": o.fee, "data-fee-payer": o.fee_payer, "data-total": o.shopper_total}));
    const table = el("table", undefined, {class: "schedule"});
    const head = table.createTHead().insertRow();
    for (const h of ["#", "due", "principal", "fee", "to pay"]) head.append(el("th", h));
    const body = table.createTBody();
    for (const p of o.schedule) {
      const tr = body.insertRow();
      tr.dataset.principal = p.principal; tr.dataset.fee = p.fee; tr.dataset.due = p.due;
      for (const v of [p.n, day(p.due_day), yuan(p.principal), yuan(p.fee), yuan(p.due)]) tr.append(el("td", v));
    }
    box.append(table);
  } else {
    label.textContent = o.kind === "wallet" ? "Wallet balance" : o.method;
    box.append(radio, " ", label);
  }
  return box;
}

async function call(method, path, body, key) {
  const init = {method, headers: {}};
  if (body !== undefined) { init.headers["content-type"] = "application/json"; init.body = JSON.stringify(body); }
  if (key) init.headers["idempotency-key"] = key;
  if (session) init.headers["authorization"] = "Bearer " + session;
  const res = await fetch(path, init);
  const data = await res.json();
  if (!res.ok) { const err = new Error(data.message); err.data = data; throw err; }
  return data;
}

async function load() {
  let offers;
  try { offers = await call("GET", api + "/offers"); }
  catch (e) { $("summary").dataset.state = "missing"; $("summary").textContent = e.message; return; }
  const o = offers.order;
  const s = $("summary");
  s.textContent = `Order ${o.id} from ${o.merchant}: ${yuan(o.amount)} ${o.currency}`;
  s.dataset.state = o.state; s.dataset.amount = o.amount;
  const form = document.createElement("form");
  form.id = "methods";
  for (const m of offers.methods) form.append(renderOption(m, o.currency));
  $("methods").replaceWith(form);
  const first = form.querySelector("input[name=method]:not(:disabled)");
  if (first) first.checked = true;
  $("pay").disabled = o.state !== "created";
  if (o.state !== "created") show("ok", {order: o.id, order_state: o.state, method: o.method});
}

async function pay() {
  const picked = document.querySelector("input[name=method]:checked");
  if (!picked) { show("refused", "choose how to pay"); return; }
  const key = newKey();  // one key for the attempt: the step-up retry is the same request
  $("pay").disabled = true;
  show("busy", "…");
  try {
    let out;
    try {
      out = await call("POST", api + "/pay", {method: picked.value}, key);
    } catch (e) {
      if (!e.data || e.data.name !== "STEP_UP_REQUIRED") throw e;
      const ch = e.data.detail.challenge;
      const cred = await navigator.credentials.get({publicKey: requestOptions(ch.publicKey)});
      out = await call("POST", api + "/pay", {method: picked.value,
        step_up: {challenge_id: ch.challenge_id, credential: assertionJSON(cred)}}, key);
    }
    show("ok", {order: out.id, order_state: out.state, method: out.method, held: out.held});
    $("summary").dataset.state = out.state;
  } catch (e) {
    $("pay").disabled = false;
    show("refused", e.data ? {code: e.data.code, name: e.data.name, message: e.data.message} : {error: String(e)});
  }
}

$("pay").addEventListener("click", pay);
load();
