// EmergentBridge web page: plain JS over the JSON API (/routes, /stats, /search, /items/...). No build step.
"use strict";

const $ = (sel) => document.querySelector(sel);
const form = $("#search-form"), statusLine = $("#status"), results = $("#results");
const fileInput = $("#file"), drop = $("#drop"), keyInput = $("#api-key");
const KEY_COOKIE = "ebridge_api_key";

function apiKey() {
  return keyInput.value || sessionStorage.getItem(KEY_COOKIE) || "";
}

function rememberKey() {
  const key = keyInput.value;
  sessionStorage.setItem(KEY_COOKIE, key);
  // <img> and <audio> cannot send headers: the server also reads the key from this cookie
  document.cookie = `${KEY_COOKIE}=${encodeURIComponent(key)}; path=/; SameSite=Strict`;
}

async function api(path, options = {}) {
  const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
  const key = apiKey();
  if (key) headers["X-API-Key"] = key;
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  let body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  if (!resp.ok) {
    const why = (body && body.error) || `${resp.status} ${resp.statusText}`;
    throw new Error(resp.status === 401 ? `${why} (type it in the API key box)` : why);
  }
  return body;
}

function say(text, isError = false) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", isError);
}

function selectedTargets() {
  return [...document.querySelectorAll("#targets input:checked")].map((c) => c.value);
}

function controls() {
  const k = parseInt($("#k").value, 10) || 10;
  // One ranked row per modality: each row comes from one route, so its scores are on one scale
  // (cosine or RRF); rows are never merged into one list.
  return { k, route: $("#route").value || "auto", target: selectedTargets(), group_by: "modality" };
}

const SCALES = {
  cosine: "cosine similarity (−1…1)",
  rrf: "rank fusion (RRF: a sum of 1/(k+rank) over the direct and proxy lists; ranks, not a similarity)",
};

// The header counts files (a long recording is one, however many moments it is cut into) and says
// the moments beside them.
function statsLine(s) {
  const counts = Object.entries(s.by_modality).map(([m, n]) => `${n} ${m}`).join(", ");
  const files = s.files ?? s.points;
  const moments = s.moments ? ` · ${s.moments} moments` : "";
  return `${files} ${files === 1 ? "file" : "files"} (${counts})${moments} · bridge ${s.bridge_version}`;
}

async function loadStats() {
  try {
    const s = await api("/stats");
    $("#stats").textContent = statsLine(s);
    showIndexing(s.indexing);
    const box = $("#targets");
    box.querySelectorAll("label").forEach((l) => l.remove());
    for (const m of Object.keys(s.by_modality)) {
      const chip = document.createElement("label");
      chip.className = "chip";
      chip.innerHTML = `<input type="checkbox" name="target" value="${m}" checked> ${m}`;
      box.appendChild(chip);
    }
    $("#k").max = s.limits.max_k;
  } catch (err) {
    $("#stats").textContent = "index: " + err.message;
  }
}

// The route menu: the server's own list (GET /routes), so the page offers what the server accepts.
async function loadRoutes() {
  try {
    const { routes } = await api("/routes");
    const menu = $("#route");
    menu.replaceChildren(...routes.map((r) => {
      const option = document.createElement("option");
      option.value = r.name;
      option.textContent = r.name;
      option.title = r.meaning;
      option.selected = r.name === "auto";
      return option;
    }));
  } catch (err) {
    say("routes: " + err.message, true);
  }
}

async function search(payload, what) {
  say(`searching ${what}…`);
  results.setAttribute("aria-busy", "true");
  try {
    const opts = { method: "POST" };
    if (payload instanceof FormData) {
      opts.body = payload;
    } else {
      opts.body = JSON.stringify(payload);
      opts.headers = { "Content-Type": "application/json" };
    }
    const out = await api("/search", opts);
    show(out, what);
  } catch (err) {
    say(err.message, true);
  } finally {
    results.removeAttribute("aria-busy");
  }
}

function showIndexing(ix) {
  const line = $("#indexing");
  if (!ix) { line.hidden = true; return; }
  line.hidden = false;
  let text = `watching ${ix.folder}: ${ix.state} · ${ix.queued} queued · ${ix.done} done · ${ix.errors} errors`;
  if (ix.last_error) text += ` · last error: ${ix.last_error.path ? ix.last_error.path + ": " : ""}${ix.last_error.reason}`;
  line.textContent = text;
  line.classList.toggle("error", ix.state === "failed");
  clearTimeout(showIndexing.timer);
  showIndexing.timer = setTimeout(refreshIndexing, ix.queued || ix.state !== "watching" ? 1000 : 5000);
}

async function refreshIndexing() {
  try {
    const s = await api("/stats");
    $("#stats").textContent = statsLine(s);
    showIndexing(s.indexing);
  } catch (err) { /* the next search says what is wrong */ }
}

function show(out, what) {
  results.replaceChildren();
  const groups = out.groups || { all: { route: "mixed", score_kind: null, hits: out.hits } };
  let total = 0;
  for (const [modality, g] of Object.entries(groups)) {
    const row = $("#row").content.firstElementChild.cloneNode(true);
    row.dataset.modality = modality;
    row.dataset.scoreKind = g.score_kind || "";
    row.setAttribute("aria-label", `${modality} results`);
    row.querySelector(".row-title").textContent = `${modality} · ${g.hits.length} ${g.hits.length === 1 ? "hit" : "hits"}`;
    row.querySelector(".row-scale").textContent =
      `route ${g.route} · scores: ${SCALES[g.score_kind] || "per hit"}`;
    const strip = row.querySelector(".strip");
    for (const [i, h] of g.hits.entries()) strip.appendChild(makeCard(h, i));
    results.appendChild(row);
    total += g.hits.length;
  }
  const q = out.query;
  const rows = Object.keys(groups).length;
  say(`${total} ${total === 1 ? "hit" : "hits"} for ${what} in ${rows} ${rows === 1 ? "row" : "rows"}, one per modality ` +
      `(${q.modality} query, ${out.took_ms.toFixed(1)} ms on the server)`);
}

function makeCard(h, i) {
  const card = $("#card").content.firstElementChild.cloneNode(true);
  card.dataset.modality = h.modality;
  card.dataset.id = h.id;
  card.setAttribute("aria-label", `hit ${i + 1}: ${h.modality} ${h.label || ""}`);
  card.querySelector(".modality").textContent = h.modality;
  card.querySelector(".score").textContent = `${h.score_kind} ${h.score.toFixed(3)}`;
  card.querySelector(".score").title = SCALES[h.score_kind] || "";
  card.querySelector(".route").textContent = h.route;
  card.querySelector(".label").textContent = h.label || "";
  card.querySelector(".path").textContent = h.path || "";
  if (h.start != null) {  // a moment of a long recording or video: say where
    const when = card.querySelector(".when");
    when.textContent = `@ ${clock(h.start)}–${clock(Math.ceil(h.end - 1e-6))}`;  // a moment under a second still spans one
    when.hidden = false;
    card.dataset.start = String(h.start);
  }
  fillMedia(card.querySelector(".media"), h);
  const more = card.querySelector(".more");
  more.setAttribute("aria-label", `More like this ${h.modality} ${h.label || ""} (${h.path || h.id})`);
  more.addEventListener("click", () => {
    search(Object.assign({ id: h.id }, controls()), `like ${h.path || h.id}`);
  });
  return card;
}

function clock(seconds) {
  const t = Math.floor(Math.max(0, seconds) + 1e-6);
  const h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), s = t % 60;
  const mm = String(m).padStart(2, "0"), ss = String(s).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

// A moment's player starts at its time: a media fragment (#t=start,end) where the browser honours
// it, and a seek once the metadata is in where it does not.
function momentPlayer(tag, h) {
  const player = document.createElement(tag);
  player.controls = true;
  player.preload = "metadata";
  player.src = `${h.media}#t=${h.start},${h.end}`;
  player.addEventListener("loadedmetadata", () => {
    if (Math.abs(player.currentTime - h.start) > 0.25) player.currentTime = h.start;
  }, { once: true });
  player.setAttribute("aria-label", `play ${h.path || tag} from ${clock(h.start)}`);
  return player;
}

function fillMedia(box, h) {
  if (h.start != null && (h.modality === "audio" || h.modality === "video")) {
    box.classList.add(h.modality);
    box.appendChild(momentPlayer(h.modality, h));
  } else if (h.preview) {
    const img = document.createElement("img");
    img.src = h.preview;
    img.alt = `${h.modality} ${h.label || ""}`.trim();
    box.appendChild(img);
  } else if (h.modality === "audio") {
    box.classList.add("audio");
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.preload = "none";
    audio.src = h.media;
    audio.setAttribute("aria-label", `play ${h.path || "audio"}`);
    box.appendChild(audio);
  } else if (h.modality === "text") {
    box.classList.add("text");
    const quote = document.createElement("blockquote");
    quote.textContent = "…";
    box.appendChild(quote);
    fetch(h.media, { headers: apiKey() ? { "X-API-Key": apiKey() } : {} })
      .then((r) => (r.ok ? r.text() : Promise.reject(new Error(r.statusText))))
      .then((t) => { quote.textContent = t.length > 240 ? t.slice(0, 240) + "…" : t; })
      .catch(() => { quote.textContent = "(text unavailable)"; });
  } else {
    const link = document.createElement("a");
    link.href = h.media;
    link.textContent = "open file";
    box.appendChild(link);
  }
}

function searchFile(file) {
  const c = controls();
  const data = new FormData();
  data.append("file", file, file.name);
  data.append("k", String(c.k));
  data.append("route", c.route);
  data.append("group_by", c.group_by);
  for (const t of c.target) data.append("target", t);
  $("#file-name").textContent = `query file: ${file.name}`;
  $("#q").value = "";
  search(data, file.name);
}

form.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("#q").value.trim();
  if (text) {
    $("#file-name").textContent = "";
    search(Object.assign({ text }, controls()), `“${text}”`);
  } else if (fileInput.files.length) {
    searchFile(fileInput.files[0]);
  } else {
    say("type some words or choose a file", true);
    $("#q").focus();
  }
});

fileInput.addEventListener("change", () => {
  if (fileInput.files.length) searchFile(fileInput.files[0]);
});

for (const ev of ["dragenter", "dragover"]) {
  drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
}
for (const ev of ["dragleave", "drop"]) {
  drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); });
}
drop.addEventListener("drop", (e) => {
  const f = e.dataTransfer && e.dataTransfer.files[0];
  if (f) searchFile(f);
});

keyInput.value = sessionStorage.getItem(KEY_COOKIE) || "";
keyInput.addEventListener("change", () => { rememberKey(); loadStats(); });
loadRoutes();
loadStats();
