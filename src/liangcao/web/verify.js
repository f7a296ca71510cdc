// The consumer verify page: checks every event of an item's history in the browser (Web Crypto).
// For each event: the capture transaction is in the block (RFC 9162 Merkle path to the header's tx_root),
// its receipt is too (code 0, naming the event's hash id), the header hashes to the block hash, and that
// block hash is signed by peers whose certificates an organisation CA issued; with anchors= in the address
// (from the QR code on the pack) those CAs must be ones the consumer was told to trust.
"use strict";

const TEXT = {
  en: {
    title: "Product history", item: "Item", checking: "Checking the proofs…",
    verified: "Verified ✓ — every event is on the ledger as shown",
    notVerified: "Not verified ✗ — do not trust this history",
    noEvents: "No events are recorded for this item.",
    how: "Every event above was checked in this browser: its transaction sits in a block by a Merkle path, the block's header hashes to the block hash that organisations signed, and their certificates chain to the organisation CAs you trust. Nothing is taken on the server's word.",
    recordedBy: "recorded by", block: "block", attested: "attested by", finality: "final when attested by",
  },
  zh: {
    title: "产品溯源", item: "商品", checking: "正在验证证明…",
    verified: "已验证 ✓ — 每条记录都与账本一致",
    notVerified: "未通过验证 ✗ — 请勿相信此记录",
    noEvents: "此商品没有记录。",
    how: "以上每条记录都在本浏览器中验证：交易通过默克尔路径包含在区块中，区块头的哈希即各机构签名的区块哈希，签名证书由您信任的机构 CA 签发。无需相信服务器。",
    recordedBy: "记录方", block: "区块", attested: "背书机构", finality: "终局所需机构数",
  },
};
let lang = navigator.language && navigator.language.startsWith("zh") ? "zh" : "en";

const enc = new TextEncoder();
const hex = (b) => Array.from(new Uint8Array(b), (x) => x.toString(16).padStart(2, "0")).join("");
const unhex = (h) => new Uint8Array((h.match(/../g) || []).map((x) => parseInt(x, 16)));
const unb64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}
async function sha256(bytes) { return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)); }

// RFC 9162 section 2.1.3.2, step by step (the same algorithm liangcao.crypto.merkle follows).
async function verifyInclusion(leaf, index, size, path, root) {
  if (!(index >= 0 && index < size)) return false;
  let fn = index, sn = size - 1;
  let r = await sha256(concat(new Uint8Array([0]), leaf));
  for (const p of path) {
    if (sn === 0) return false;
    if ((fn & 1) || fn === sn) {
      r = await sha256(concat(new Uint8Array([1]), p, r));
      if (!(fn & 1)) { while (fn && !(fn & 1)) { fn >>= 1; sn >>= 1; } }
    } else {
      r = await sha256(concat(new Uint8Array([1]), r, p));
    }
    fn >>= 1; sn >>= 1;
  }
  return sn === 0 && equal(r, root);
}

// liangcao's canonical JSON for headers and attestations (ASCII strings and integers): sorted keys, compact.
function canonical(v) {
  if (Array.isArray(v)) return "[" + v.map(canonical).join(",") + "]";
  if (v !== null && typeof v === "object") {
    return "{" + Object.keys(v).sort().map((k) => JSON.stringify(k) + ":" + canonical(v[k])).join(",") + "}";
  }
  return JSON.stringify(v);
}

// Just enough DER to check an X.509 certificate's signature: Certificate ::= SEQUENCE { tbs, algorithm, signature }.
function der(buf, pos) {
  let len = buf[pos + 1], head = 2;
  if (len & 0x80) { const n = len & 0x7f; len = 0; for (let i = 0; i < n; i++) len = len * 256 + buf[pos + 2 + i]; head = 2 + n; }
  return { start: pos, content: pos + head, end: pos + head + len };
}
function certParts(bytes) {
  const outer = der(bytes, 0), tbs = der(bytes, outer.content), alg = der(bytes, tbs.end), sig = der(bytes, alg.end);
  const spki = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00]; // Ed25519 SubjectPublicKeyInfo
  let key = null;
  for (let i = tbs.content; i + 44 <= tbs.end && key === null; i++) {
    if (spki.every((b, j) => bytes[i + j] === b)) key = bytes.slice(i + 12, i + 44);
  }
  return { tbs: bytes.slice(tbs.start, tbs.end), signature: bytes.slice(sig.content + 1, sig.end), key };
}
async function edVerify(publicKey, signature, message) {
  const key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
  return crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
}

async function trustedCAs(orgs, anchors) {
  const out = [];
  for (const o of orgs) {
    const bytes = unb64(o.ca_cert);
    const fingerprint = hex(await sha256(bytes)); // computed here, never taken from the server
    if (anchors && !anchors.some((a) => fingerprint.startsWith(a))) continue;
    out.push({ org: o.org, name: o.name, key: certParts(bytes).key, fingerprint });
  }
  return out;
}

async function checkAttestation(att, blockHash, chainId, cas) {
  const body = { block_hash: att.block_hash, chain_id: att.chain_id, height: att.height, state_hash: att.state_hash };
  if (att.block_hash !== blockHash || att.chain_id !== chainId) return null;
  const cert = certParts(unb64(att.cert));
  const digest = await sha256(enc.encode(canonical(body)));
  if (!cert.key || !(await edVerify(cert.key, unb64(att.sig), concat(enc.encode("liangcao/attest/v1\n"), digest)))) return null;
  for (const ca of cas) {
    if (ca.key && (await edVerify(ca.key, cert.signature, cert.tbs))) return ca.org;
  }
  return null;
}

// Every check of one event; returns [problems, the event as the proven transaction holds it, attesting orgs].
async function checkEvent(ev, bundle, cas) {
  const problems = [];
  const p = ev.proof;
  if (!p) return [["no proof was given"], null, []];
  const header = p.tx.header;
  const blockHash = hex(await sha256(enc.encode(canonical(header))));
  if (blockHash !== p.tx.block_hash || canonical(p.receipt.header) !== canonical(header)) problems.push("the block header does not hash to the block hash");
  if (!(await verifyInclusion(enc.encode(p.tx.leaf), p.tx.index, header.tx_count, p.tx.path.map(unhex), unhex(header.tx_root)))) problems.push("the transaction is not in the block");
  if (p.receipt.index !== p.tx.index || !(await verifyInclusion(enc.encode(p.receipt.leaf), p.receipt.index, header.tx_count, p.receipt.path.map(unhex), unhex(header.receipt_root)))) problems.push("the receipt is not in the block");
  let event = null;
  try {
    const tx = JSON.parse(p.tx.leaf), receipt = JSON.parse(p.receipt.leaf);
    const k = (receipt.result || []).findIndex((r) => r.id === ev.id);
    if (tx.body.contract !== "trace" || tx.body.method !== "capture" || tx.body.chain_id !== bundle.chain_id) problems.push("the transaction is not a capture on this chain");
    if (receipt.code !== 0 || k < 0) problems.push("the receipt does not record this event as captured");
    else event = JSON.parse(tx.body.args.events[k]);
  } catch (e) {
    problems.push("the proof is malformed");
  }
  const orgs = new Set();
  for (const att of p.attestations || []) {
    const org = await checkAttestation(att, blockHash, bundle.chain_id, cas);
    if (org) orgs.add(org);
  }
  if (orgs.size === 0) problems.push("no trusted organisation attested the block");
  return [problems, event, [...orgs]];
}

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  Object.entries(attrs || {}).forEach(([k, v]) => e.setAttribute(k, v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function render(state) {
  const t = TEXT[lang];
  document.querySelectorAll("[data-i18n]").forEach((n) => { if (t[n.dataset.i18n] && n.id !== "result") n.textContent = t[n.dataset.i18n]; });
  document.getElementById("lang").textContent = lang === "en" ? "中文" : "English";
  const result = document.getElementById("result");
  result.dataset.state = state.verdict;
  result.textContent = state.verdict === "checking" ? t.checking : state.verdict === "verified" ? t.verified : t.notVerified;
  const reasons = document.getElementById("reasons");
  reasons.replaceChildren(...state.reasons.map((r) => el("li", {}, r)));
  const list = document.getElementById("events");
  list.replaceChildren(...state.events.map((e) => {
    const box = el("div", { class: "event" + (e.problems.length ? " bad" : ""), "data-event-id": e.id });
    const shown = e.event || {};
    box.append(el("div", {}, `${shown.eventTime || ""} · ${shown.type || e.type} · ${shown.bizStep || ""} ${shown.disposition ? "· " + shown.disposition : ""}`));
    box.append(el("div", { class: "meta" }, `${t.recordedBy} ${e.org} · ${t.block} ${e.height} · ${t.attested} ${e.orgs.join(", ") || "—"}`));
    box.append(el("div", { class: e.problems.length ? "fail" : "ok" }, e.problems.length ? e.problems.join("; ") : "✓"));
    return box;
  }));
  document.getElementById("finality").textContent = state.quorum ? `${t.finality} ${state.quorum}` : "";
}

async function main() {
  const params = new URLSearchParams(location.search);
  const id = params.get("id") || "";
  const anchors = params.get("anchors") ? params.get("anchors").split(",").filter(Boolean) : null;
  document.getElementById("item").textContent = id;
  const state = { verdict: "checking", reasons: [], events: [], quorum: 0 };
  document.getElementById("lang").onclick = () => { lang = lang === "en" ? "zh" : "en"; render(state); };
  render(state);
  try {
    const r = await fetch("/v1/trace/verify?id=" + encodeURIComponent(id));
    const bundle = await r.json();
    if (!r.ok) throw new Error(bundle.message || r.statusText);
    const cas = await trustedCAs(bundle.organisations, anchors);
    state.quorum = bundle.finality_quorum;
    for (const ev of bundle.events) {
      const [problems, event, orgs] = await checkEvent(ev, bundle, cas);
      state.events.push({ id: ev.id, type: ev.type, org: ev.org, height: ev.height, event, problems, orgs });
    }
    const bad = state.events.filter((e) => e.problems.length);
    if (!state.events.length) state.reasons.push(TEXT[lang].noEvents);
    bad.forEach((e) => state.reasons.push(`${e.id}: ${e.problems.join("; ")}`));
    state.verdict = state.events.length && !bad.length ? "verified" : "not-verified";
  } catch (e) {
    state.verdict = "not-verified";
    state.reasons.push(String(e.message || e));
  }
  render(state);
  document.body.dataset.done = "1";
}

main();
