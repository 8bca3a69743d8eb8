// kb's page: ask the server's JSON API and show hits as cards; a citation opens the lines
// around the passage (GET /source). Plain DOM, no framework, no build step. Text from the
// index is only ever set with textContent, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const form = $("ask"), question = $("q"), status = $("status"), results = $("results");
const dialog = $("source-view");
const TOKEN_KEY = "kb-token";

// A token in the URL's fragment (never sent to the server or its logs) is kept for the
// tab's lifetime and removed from the address bar.
if (location.hash.startsWith("#token=")) {
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(location.hash.slice(7)));
  history.replaceState(history.state, "", location.pathname + location.search);
}

class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

async function api(path, params) {
  const url = params ? `${path}?${params}` : path;
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(url, { headers });
  let body = null;
  try { body = await response.json(); } catch { /* not JSON: handled below */ }
  if (response.status === 401) $("token-form").hidden = false;
  if (!response.ok) throw new ApiError(body && body.error ? body.error : `HTTP ${response.status}`, response.status);
  return body;
}

function citation(hit) {
  const lines = hit.line_start === hit.line_end ? `${hit.line_start}` : `${hit.line_start}-${hit.line_end}`;
  let where = `${hit.source}:${lines}`;
  if (hit.record !== null) where += ` #${hit.record}`;
  const places = [];
  if (hit.page !== null) places.push(`page ${hit.page}`);
  if (hit.location) places.push(hit.location);
  if (places.length) where += ` (${places.join(", ")})`;
  return where;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// The text between [from, to) of a passage-relative string, with the best sentence marked.
function markedText(parent, text, offset, hit) {
  const a = hit.sentence_start, b = hit.sentence_end;
  if (a === null || b === null) { parent.append(text); return; }
  const start = Math.max(a - offset, 0), end = Math.min(b - offset, text.length);
  if (start >= end) { parent.append(text); return; }
  parent.append(text.slice(0, start), el("mark", "sentence", text.slice(start, end)), text.slice(end));
}

function card(hit) {
  const item = el("li", "hit");
  const head = el("div", "hit-head");
  head.append(el("span", "rank", `${hit.rank}.`), el("span", "score", hit.score.toFixed(3)));
  const cite = el("button", "citation", citation(hit));
  cite.type = "button";
  cite.title = "Show this passage in its document";
  cite.addEventListener("click", () => showSource(hit, cite));
  head.append(cite);
  if (hit.stale) head.append(el("span", "stale", "file changed since indexing"));
  item.append(head);
  if (hit.context) item.append(el("p", "context", hit.context));
  const passage = el("p", "passage");
  markedText(passage, hit.text, hit.char_start, hit);
  item.append(passage);
  return item;
}

function formParams() {
  const params = new URLSearchParams({ q: question.value.trim(), k: $("k").value, mode: $("mode").value });
  for (const glob of $("path").value.split(",").map((g) => g.trim()).filter(Boolean)) params.append("path", glob);
  return params;
}

async function ask(params) {
  results.replaceChildren();
  status.className = "";
  status.textContent = "Searching…";
  const started = performance.now();
  try {
    const answer = await api("/ask", params);
    const ms = Math.round(performance.now() - started);
    const n = answer.results.length;
    status.textContent = n ? `${n} result${n === 1 ? "" : "s"} in ${ms} ms` : "No passage matched.";
    results.replaceChildren(...answer.results.map(card));
  } catch (error) {
    status.className = "error";
    status.textContent = error.message;
  }
}

function fillForm(params) {
  question.value = params.get("q") || "";
  if (params.get("k")) $("k").value = params.get("k");
  if (params.get("mode")) $("mode").value = params.get("mode");
  $("path").value = params.getAll("path").join(", ");
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!question.value.trim()) return;
  const params = formParams();
  history.pushState(null, "", `?${params}`);  // a search is a link, and Back works
  ask(params);
});

window.addEventListener("popstate", () => {
  const params = new URLSearchParams(location.search);
  fillForm(params);
  if (params.get("q")) ask(params); else { results.replaceChildren(); status.textContent = ""; }
});

// "/" jumps to the question box from anywhere but a text field.
document.addEventListener("keydown", (event) => {
  const typing = /^(INPUT|SELECT|TEXTAREA)$/.test(document.activeElement.tagName);
  if (event.key === "/" && !typing && !dialog.open) {
    event.preventDefault();
    question.focus();
    question.select();
  }
});

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value);
  $("token-form").hidden = true;
  start();
});

// -- the citation view ---------------------------------------------------------------------
async function showSource(hit, opener) {
  const params = new URLSearchParams({ source: hit.source, line_start: hit.line_start, line_end: hit.line_end, context: 12 });
  if (hit.page !== null) params.set("page", hit.page);
  if (hit.record !== null) params.set("record", hit.record);
  $("source-title").textContent = citation(hit);
  const note = $("source-note"), lines = $("source-lines");
  note.hidden = true;
  lines.replaceChildren();
  dialog.showModal();
  // Focus goes back to the citation, unless the reader has already moved it (pressed "/"
  // as the dialog closed): the close event comes after the dialog is hidden. Registered
  // before the fetch, so a dialog closed while loading still hands focus back.
  dialog.addEventListener("close", () => {
    const now = document.activeElement;
    if (!now || now === document.body || dialog.contains(now)) opener.focus();
  }, { once: true });
  try {
    const view = await api("/source", params);
    if (view.stale) { note.textContent = "This file changed since it was indexed: the lines may have moved."; note.hidden = false; }
    let first = null;
    for (const line of view.lines) {
      const row = el("div", "line");
      const text = el("span", "text");
      const end = line.start + line.text.length;
      const inside = line.start < hit.char_end && end >= hit.char_start;
      if (inside) {
        row.classList.add("in-passage");
        first = first || row;
        markedText(text, line.text, line.start, hit);
      } else {
        text.textContent = line.text;
      }
      row.append(el("span", "no", String(line.number)), text);
      lines.append(row);
    }
    const target = lines.querySelector("mark") || first;  // the best sentence, else the passage
    if (target) target.scrollIntoView({ block: "center" });
  } catch (error) {
    note.textContent = error.message;
    note.hidden = false;
  }
}

$("close-source").addEventListener("click", () => dialog.close());
dialog.addEventListener("click", (event) => { if (event.target === dialog) dialog.close(); });

// -- start -----------------------------------------------------------------------------------
async function start() {
  // The form comes from the link before anything is awaited: the question box has focus
  // from the start, and what someone types while /info loads must not be overwritten.
  const params = new URLSearchParams(location.search);
  if (location.search) fillForm(params);
  if (params.get("q")) ask(params);
  try {
    const info = await api("/info");
    $("index-info").textContent = `${info.documents} documents, ${info.passages} passages`;
  } catch (error) {
    $("index-info").textContent = error.message;
  }
}

start();
