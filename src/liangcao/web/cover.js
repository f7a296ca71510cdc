// A cover policy: its terms, the claim's rule and facts, the payout. Read from /v1/cover/policies/{id} with the
// viewer's bearer token (from ?token= once, then kept for this tab, as the explorer does).
"use strict";
const params = new URLSearchParams(location.search);
if (params.get("token")) {
  sessionStorage.setItem("liangcao.token", params.get("token"));
  params.delete("token");
  history.replaceState(null, "", location.pathname + (params.toString() ? "?" + params : "") + location.hash);
}
const token = () => sessionStorage.getItem("liangcao.token") || "";
const view = document.getElementById("view");
const yuan = (fen) => `${Math.trunc(fen / 100).toLocaleString("en")}.${String(fen % 100).padStart(2, "0")}`;
const when = (ms) => (ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) + "Z" : "");

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return node;
}

function table(rows) {
  return el("table", {}, ...rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))));
}

async function show(id) {
  view.replaceChildren(el("p", {}, "loading…"));
  const r = await fetch(`/v1/cover/policies/${encodeURIComponent(id)}`, { headers: { Authorization: "Bearer " + token() } });
  const body = await r.json();
  if (!r.ok) { view.replaceChildren(el("p", { class: "error" }, `${body.code} ${body.message}`)); return; }
  const p = body.policy, c = body.claim, pay = body.payout;
  const parts = [
    el("h1", {}, `Policy ${p.id.slice(0, 13)}…${p.id.slice(65)}`),
    el("h2", {}, "Terms"),
    table([["product", `${p.product} (${p.kind}) by ${p.insurer}`], ["order / SKU", `${p.order} / ${p.sku}`],
           ["price paid", yuan(p.price_paid)], ["premium", `${yuan(p.premium)}${body.premium.collected ? " (collected)" : ""}`],
           ["exposure reserved", yuan(p.exposure)], ["bought", when(p.bought_ms)], ["window ends", when(p.window_end_ms)],
           ["status", p.status]]),
  ];
  if (c) {
    parts.push(el("h2", {}, "Claim"), table([["status", c.status], ["amount", yuan(c.amount)], ["filed", `${when(c.filed_ms)} by ${c.by}`],
      ["rule", JSON.stringify(c.rule)], ["held", c.held || "no"]]));
    parts.push(el("h2", {}, "Facts"), el("ul", { id: "facts" }, ...body.facts.map((f) => el("li", { class: "fact" },
      f.fact === "price" ? `price ${yuan(f.price)} (${f.mark}) of ${f.sku} at ${when(f.at_ms)}, signed by ${f.platform} in tx ${f.tx.slice(0, 16)}…`
        : `${f.bizStep} event ${f.event.slice(14, 30)}… recorded by ${f.by} (${f.org}) at ${when(f.time_ms)}, tx ${f.tx.slice(0, 16)}…`))));
  }
  if (pay) {
    parts.push(el("h2", {}, "Payout"), table([["transfer", pay.transfer], ["amount", yuan(pay.amount)],
      ["paid", pay.paid ? `yes (tx ${pay.paid_tx.slice(0, 16)}…)` : "not yet"]]));
  }
  view.replaceChildren(...parts);
  document.body.dataset.ready = "1";
}

document.getElementById("search").onsubmit = (ev) => {
  ev.preventDefault();
  location.hash = "#/" + document.getElementById("q").value.trim();
};
window.onhashchange = () => show(location.hash.slice(2));
if (location.hash.length > 2) show(location.hash.slice(2)); else document.body.dataset.ready = "1";
