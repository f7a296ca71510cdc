"""The browser page the router serves at ``/authn/``: register a device, list and revoke devices, confirm a
payment, with ``navigator.credentials.create/get``. Plain HTML and JavaScript, no build step; it talks only to
the JSON endpoints next to it. The payment's terms are shown before the device is asked to sign them (the
challenge commits to them; the page cannot change them without the signature failing on the server)."""

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>liangcao: pay with your device</title>
<style>
 body { font: 15px/1.45 system-ui, sans-serif; max-width: 44rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
 fieldset { border: 1px solid #ccc; border-radius: 6px; margin: 1rem 0; }
 label { display: inline-block; min-width: 7rem; }
 input { margin: .2rem 0; }
 #result { white-space: pre-wrap; background: #f6f6f6; padding: .6rem; border-radius: 6px; min-height: 2rem; }
 .ok { border-left: 4px solid #2a7; } .refused { border-left: 4px solid #c33; }
 table { border-collapse: collapse; } td, th { padding: .2rem .5rem; border-bottom: 1px solid #eee; }
</style>
</head>
<body>
<h1>Pay with your fingerprint or face</h1>
<p>Your device keeps its key and checks it is you; this site only ever sees a signature over the payment.</p>
<fieldset>
 <legend>Shopper</legend>
 <label for="shopper">shopper</label> <input id="shopper" value="alice">
</fieldset>
<fieldset>
 <legend>Devices</legend>
 <label for="device">device name</label> <input id="device" value="my phone">
 <button id="register">Register this device</button>
 <table id="devices"><thead><tr><th>name</th><th>alg</th><th>counter</th><th>state</th><th></th></tr></thead>
 <tbody></tbody></table>
</fieldset>
<fieldset>
 <legend>Payment</legend>
 <label for="order">order id</label> <input id="order" value="order-1"><br>
 <label for="payee">payee</label> <input id="payee" value="merchant-1"><br>
 <label for="amount">amount (fen)</label> <input id="amount" value="1999" inputmode="numeric"><br>
 <label for="currency">currency</label> <input id="currency" value="CNY" size="3"><br>
 <button id="pay">Confirm payment</button>
 <p id="terms"></p>
</fieldset>
<div id="result" data-state="idle"></div>
<script>
"use strict";
const base = location.pathname.replace(/\/$/, "");
const b64u = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const unb64u = (s) => Uint8Array.from(atob(s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4)), (c) => c.charCodeAt(0));
const $ = (id) => document.getElementById(id);

function show(state, value) {
  const el = $("result");
  el.dataset.state = state;
  el.className = state === "ok" ? "ok" : state === "refused" ? "refused" : "";
  el.textContent = typeof value === "string" ? value : JSON.stringify(value, null, 1);
}

// A gateway that signs shoppers in (liangcao checkout) links here with #token=<session>: kept for this tab.
const session = (() => {
  const m = /(?:^#|&)token=([A-Za-z0-9._-]+)/.exec(location.hash);
  if (m) { sessionStorage.setItem("liangcao-session", m[1]); history.replaceState(null, "", location.pathname + location.search); }
  return sessionStorage.getItem("liangcao-session");
})();

async function call(path, body) {
  const headers = session ? {authorization: "Bearer " + session} : {};
  const res = await fetch(base + path, body === undefined ? {headers} : {
    method: "POST", headers: {...headers, "content-type": "application/json"}, body: JSON.stringify(body)});
  const data = await res.json();
  if (!res.ok) { const err = new Error(data.message); err.data = data; throw err; }
  return data;
}

function creationOptions(o) {
  return {...o, challenge: unb64u(o.challenge), user: {...o.user, id: unb64u(o.user.id)},
    excludeCredentials: (o.excludeCredentials || []).map((c) => ({...c, id: unb64u(c.id)}))};
}

function requestOptions(o) {
  return {...o, challenge: unb64u(o.challenge),
    allowCredentials: (o.allowCredentials || []).map((c) => ({...c, id: unb64u(c.id)}))};
}

function credentialJSON(cred) {
  const r = cred.response, out = {id: cred.id, rawId: b64u(cred.rawId), type: cred.type,
    authenticatorAttachment: cred.authenticatorAttachment, clientExtensionResults: cred.getClientExtensionResults(),
    response: {clientDataJSON: b64u(r.clientDataJSON)}};
  if (r.attestationObject) {
    out.response.attestationObject = b64u(r.attestationObject);
    out.response.transports = r.getTransports ? r.getTransports() : [];
  } else {
    out.response.authenticatorData = b64u(r.authenticatorData);
    out.response.signature = b64u(r.signature);
    if (r.userHandle) out.response.userHandle = b64u(r.userHandle);
  }
  return out;
}

async function refresh() {
  const shopper = $("shopper").value;
  let list = [];
  try { list = (await call("/v1/credentials?shopper=" + encodeURIComponent(shopper))).credentials; } catch (e) { return; }
  const body = document.createElement("tbody");  // filled aside, then swapped in whole
  for (const c of list) {
    const tr = body.insertRow();
    tr.dataset.id = c.id;
    for (const v of [c.name, c.alg, c.sign_count, c.active ? "active" : "revoked"]) tr.insertCell().textContent = v;
    const btn = document.createElement("button");
    btn.textContent = "revoke"; btn.className = "revoke"; btn.disabled = !c.active;
    btn.onclick = () => guard(async () => {
      const out = await call("/v1/credentials/revoke", {shopper, credential_id: c.id});
      show("ok", {revoked: out.name}); await refresh();
    });
    tr.insertCell().append(btn);
  }
  $("devices").tBodies[0].replaceWith(body);
  $("devices").dataset.shopper = shopper;
}

async function guard(fn) {
  show("busy", "…");
  try { await fn(); }
  catch (e) { show("refused", e.data ? {code: e.data.code, name: e.data.name, message: e.data.message} : {error: String(e)}); }
}

$("register").onclick = () => guard(async () => {
  const shopper = $("shopper").value, device_name = $("device").value;
  const opts = await call("/v1/registration/options", {shopper, device_name});
  const cred = await navigator.credentials.create({publicKey: creationOptions(opts.publicKey)});
  const out = await call("/v1/registration", {shopper, ceremony_id: opts.ceremony_id, credential: credentialJSON(cred)});
  show("ok", {registered: out.name, alg: out.alg, id: out.id});
  await refresh();
});

$("pay").onclick = () => guard(async () => {
  const amount = $("amount").value.trim();
  if (!/^[0-9]+$/.test(amount)) throw new Error("the amount is a whole number of fen");
  const terms = {shopper: $("shopper").value, order_id: $("order").value, payee: $("payee").value,
    amount_fen: Number(amount), currency: $("currency").value};
  const ch = await call("/v1/payment/challenge", terms);
  const p = ch.payment;
  const yuan = `${Math.floor(p.amount_fen / 100)}.${String(p.amount_fen % 100).padStart(2, "0")}`;  // integers only
  $("terms").textContent = `Pay ${yuan} ${p.currency} to ${p.payee} for ${p.order_id}`;
  const cred = await navigator.credentials.get({publicKey: requestOptions(ch.publicKey)});
  const out = await call("/v1/payment/verify", {...terms, challenge_id: ch.challenge_id, credential: credentialJSON(cred)});
  show("ok", {confirmed: out.order_id, amount_fen: out.amount_fen, device: out.device_name, sign_count: out.sign_count});
  await refresh();
});

const preset = new URLSearchParams(location.search).get("shopper");
if (preset) $("shopper").value = preset;
$("shopper").onchange = refresh;
refresh();
</script>
</body>
</html>
"""
