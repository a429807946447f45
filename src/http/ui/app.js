// infergate's page. It reads the server's JSON endpoints, as any client
// would, and draws what they say; it keeps no figures of its own.
//
// Every string that comes from the server (model names, failure reasons,
// paths) goes into the page as text (createTextNode, textContent,
// setAttribute), never as markup: there is no innerHTML in this file.
"use strict";

const REFRESH_MS = 5000;
const DRIFT_SHOWN = 16;

// What the person chose, kept across refreshes.
const view = {
  version: {},        // model -> version shown ("" = the primary)
  feature: {},        // model/tensor -> feature index shown ("" = whole tensor)
  allDrift: {},       // model -> show every feature's drift
  chosen: {},         // "promote"/"shadow" + model -> the version picked
  answer: null,       // {model, ok, text}: the last control call's answer
  tokenNeeded: false, // the server said 401
  pending: null,      // the control call to retry once a token is given
};
let token = null;     // the control token, kept in this page only
let refreshing = false;
let again = false;    // a refresh asked for while one was under way

// ---------- building the page (text only) ----------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "value") el.value = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function fmt(x, digits = 3) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  if (typeof x !== "number") return String(x);
  if (x !== 0 && (Math.abs(x) >= 1e5 || Math.abs(x) < 1e-3)) return x.toExponential(2);
  return Number(x.toFixed(digits)).toString();
}
const pct = (x) => (x === null || x === undefined ? "–" : (100 * x).toFixed(1) + " %");
const ms = (us) => (us === null || us === undefined ? "–" : fmt(us / 1000, 2) + " ms");

function ago(iso) {
  if (!iso) return "–";
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return String(iso);
  const sec = Math.max(0, (Date.now() - t) / 1000);
  if (sec < 90) return Math.round(sec) + " s ago";
  if (sec < 5400) return Math.round(sec / 60) + " min ago";
  if (sec < 172800) return Math.round(sec / 3600) + " h ago";
  return Math.round(sec / 86400) + " days ago";
}

const badge = (text, kind) => h("span", { class: "badge " + (kind || text) }, text);
const verdictBadge = (v) => badge(v || "unknown", v === "ok" || v === "pass" ? "ok" : v === "skip" ? "role" : v || "warn");
const short = (sha) => (sha ? sha.slice(0, 12) : "–");

// A failure reason: long ones (a TOML error with its excerpt) fold away
// behind their first line.
function reason(text) {
  if (!text) return "";
  const first = text.split("\n")[0];
  if (first.length === text.length && text.length <= 200) return text;
  return h("details", { class: "why" },
    h("summary", {}, first.length > 160 ? first.slice(0, 160) + "…" : first),
    h("div", { class: "full" }, text));
}

function kv(pairs) {
  return h("dl", { class: "kv" }, pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

// ---------- the server ----------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function call(method, path, body) {
  const headers = {};
  const init = { method, headers };
  if (body !== undefined) {
    headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (token) headers.authorization = "Bearer " + token;
  const r = await fetch(path, init);
  const text = await r.text();
  let data = text;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    // not JSON: keep the text
  }
  return { ok: r.ok, status: r.status, data };
}

async function get(path) {
  const r = await call("GET", path);
  if (!r.ok) {
    const message = r.data && r.data.error ? r.data.error : "HTTP " + r.status;
    throw new ApiError(r.status, message);
  }
  return r.data;
}

const modelPath = (m) => "/v2/models/" + encodeURIComponent(m);
const versionPath = (m, v) => modelPath(m) + "/versions/" + encodeURIComponent(v);

async function index() {
  const r = await call("POST", "/v2/repository/index", {});
  if (!r.ok) throw new ApiError(r.status, (r.data && r.data.error) || "HTTP " + r.status);
  return r.data;
}

function byModel(entries) {
  const models = new Map();
  for (const e of entries) {
    if (!models.has(e.name)) models.set(e.name, []);
    models.get(e.name).push(e);
  }
  for (const list of models.values()) list.sort((a, b) => Number(a.version) - Number(b.version));
  return models;
}

const ready = (versions) => versions.filter((e) => e.state === "READY");
const lastWindow = (dist) => (dist && dist.windows && dist.windows.length ? dist.windows[dist.windows.length - 1] : null);

// ---------- the model list ----------

async function listView() {
  const models = byModel(await index());
  const stats = new Map();
  const all = await get("/v2/models/stats");
  for (const m of all.model_stats || []) stats.set(m.name + "\u0000" + m.version, m);
  const rows = [];
  for (const [name, versions] of models) {
    let serving = null;
    const health = new Map();
    if (ready(versions).length) {
      serving = await get(modelPath(name) + "/health");
      for (const e of ready(versions)) {
        health.set(e.version, e.version === serving.version ? serving : await get(versionPath(name, e.version) + "/health"));
      }
    }
    for (const e of versions) {
      const hr = health.get(e.version);
      const st = stats.get(name + "\u0000" + e.version);
      const w = st ? lastWindow(st.distribution) : null;
      const roles = [];
      if (serving && serving.deployment.primary === e.version) roles.push(badge("primary", "role"));
      if (serving && serving.deployment.shadow === "version " + e.version) roles.push(badge("shadow", "role"));
      rows.push(
        h("tr", { "data-model": name, "data-version": e.version },
          h("td", {}, h("a", { href: "#/models/" + encodeURIComponent(name) }, name)),
          h("td", { class: "num" }, e.version),
          h("td", {}, badge(e.state)),
          h("td", {}, roles),
          h("td", {}, hr ? verdictBadge(hr.verdict) : "–"),
          h("td", { class: "mono", title: hr ? hr.deployment.sha256 : null }, hr ? short(hr.deployment.sha256) : "–"),
          h("td", { class: "num" }, hr && hr.staleness.age_days !== null ? fmt(hr.staleness.age_days, 1) + " d" : "–"),
          h("td", {}, hr ? ago(hr.deployment.loaded_at) : "–"),
          h("td", { class: "num" }, w ? fmt(w.qps, 1) : "–"),
          h("td", { class: "num" }, w && w.latency_us ? ms(w.latency_us.p99) : "–"),
          h("td", { class: "reason" }, reason(e.reason || (hr && hr.verdict !== "ok" ? worstReason(hr) : ""))),
        ),
      );
    }
  }
  return [
    h("h1", {}, "Models"),
    h("div", { class: "card scroll" },
      h("table", { id: "models" },
        h("thead", {}, h("tr", {},
          ["model", "version", "state", "role", "health", "sha256", "trained", "loaded", "QPS", "p99", "why"].map((t, i) =>
            h("th", { class: [1, 6, 8, 9].includes(i) ? "num" : null }, t)))),
        h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 11, class: "muted" }, "The repository holds no model.")))),
      h("p", { class: "legend" }, "QPS and p99: the version's last closed statistics window. Health: the four questions (open a model)."),
    ),
  ];
}

function worstReason(hr) {
  const parts = [hr.pipeline, hr.deployment, hr.input_data, hr.staleness];
  const worst = parts.filter((p) => p.verdict === hr.verdict)[0];
  return worst ? worst.reason : "";
}

// ---------- one model ----------

async function modelView(name) {
  const versions = byModel(await index()).get(name);
  if (!versions) {
    return [h("h1", {}, name), h("div", { class: "card" }, "No model of this name is in the repository.")];
  }
  const chips = h("div", { class: "chips", id: "versions" },
    versions.map((e) => h("span", { class: "chip", "data-version": e.version },
      "version ", e.version, " ", badge(e.state), e.reason ? [" ", h("span", { class: "muted" }, reason(e.reason))] : null)));
  const out = [h("h1", {}, name), chips];
  if (!ready(versions).length) {
    out.push(h("div", { class: "card" }, "No version of this model is ready: the reasons are above."));
    return out;
  }
  const serving = await get(modelPath(name) + "/health");
  const dep = serving.deployment;
  const choices = ready(versions).map((e) => e.version);
  let shown = view.version[name] || "";
  if (shown && !choices.includes(shown)) shown = "";
  const version = shown || serving.version;
  const health = version === serving.version ? serving : await get(versionPath(name, version) + "/health");
  const stats = (await get(versionPath(name, version) + "/stats")).model_stats[0];
  const shadow = dep.shadow ? await get(modelPath(name) + "/shadow") : null;
  const accuracy = dep.feedback ? await get(modelPath(name) + "/accuracy") : null;
  const checks = await get(modelPath(name) + "/checks");

  out.push(actions(name, versions, dep));
  out.push(h("div", { class: "section" },
    h("label", {}, "Figures of version ",
      h("select", {
        id: "version-shown",
        onchange: (ev) => { view.version[name] = ev.target.value === dep.primary ? "" : ev.target.value; refresh(); },
      }, choices.map((v) => h("option", { value: v, selected: v === version }, v + (v === dep.primary ? " (primary)" : "")))))));
  out.push(fourQuestions(health));
  out.push(driftCard(name, lastWindow(stats.distribution), health));
  out.push(distributions(name, stats.distribution));
  out.push(classesCard(lastWindow(stats.distribution)));
  if (shadow) out.push(shadowCard(shadow));
  if (accuracy) out.push(accuracyCard(accuracy));
  out.push(checksCard(checks));
  return out;
}

function fourQuestions(hr) {
  const p = hr.pipeline, d = hr.deployment, i = hr.input_data, st = hr.staleness;
  const la = st.live_accuracy;
  const card = (title, part, pairs) =>
    h("div", { class: "card", "data-question": title },
      h("h2", {}, title, " ", verdictBadge(part.verdict)),
      h("p", { class: "reason-text" }, part.reason),
      kv(pairs));
  return h("div", { class: "section", id: "health" },
    h("h2", {}, "Version ", hr.version, ": ", verdictBadge(hr.verdict),
      hr.window ? h("span", { class: "muted" }, " window ", hr.window.start, " – ", hr.window.end) : null),
    h("div", { class: "grid" },
      card("Is the pipeline erroring?", p, [
        ["requests", p.requests], ["failed", p.failed], ["error rate", pct(p.error_rate)],
        ["failures", Object.entries(p.failures).map(([k, v]) => k + ": " + v).join(", ") || "none"],
        ["schema refusals", Object.entries(p.validation_failures).map(([k, v]) => k + ": " + v).join(", ") || "none"],
      ]),
      card("Is the right model deployed?", d, [
        ["version", d.version], ["primary", d.primary || "–"], ["shadow", d.shadow || "none"],
        ["sha256", h("span", { class: "mono" }, d.sha256)], ["loaded", d.loaded_at + " (" + ago(d.loaded_at) + ")"],
        ["trained", d.trained_at || "unknown"],
        Object.keys(d.unavailable).length ? ["not loaded", h("ul", {}, Object.entries(d.unavailable).map(([v, why]) => h("li", {}, "version " + v + ": " + why)))] : null,
      ]),
      card("Is the input data off?", i, [
        ["NaN rate", pct(i.nan_rate)], ["Inf rate", pct(i.inf_rate)], ["missing inputs", pct(i.missing_rate)],
        ["schema refusals", pct(i.validation_failure_rate)],
        i.drift ? ["drift", (i.drift.drifted ? "drifted" : "no drift") + ": PSI max " + fmt(i.drift.psi_max) + " (≤ " + i.drift.psi_threshold + "), KS max " + fmt(i.drift.ks_max) + " (≤ " + i.drift.ks_threshold + ") over " + i.drift.rows + " rows"] : ["drift", "no baseline or no window yet"],
      ]),
      card("Is the model stale or wrong?", st, [
        ["age", st.age_days === null ? "unknown" : fmt(st.age_days, 1) + " days (max " + st.max_age_days + ")"],
        ["live accuracy", la.accuracy === null ? "–" : pct(la.accuracy) + " over " + la.labelled_rows + " labelled rows"],
        ["training accuracy", la.training_accuracy === null ? "unknown" : pct(la.training_accuracy)],
        ["ground truth", la.reason],
      ]),
    ));
}

// Bars drawn with boxes; `threshold` marks the limit past which a bar turns red.
// Widths are set through the style object: the page's CSP forbids style
// attributes in markup, not styles set from its own script.
function bars(rows, { max, threshold, format = fmt, id } = {}) {
  const top = Math.max(max || 0, threshold || 0, ...rows.map((r) => r.value || 0)) || 1;
  const share = (v) => (100 * Math.max(0, v || 0) / top).toFixed(2) + "%";
  const el = h("div", { class: "bars", id });
  for (const r of rows) {
    const fill = h("span", { class: "fill" + (threshold !== undefined && r.value > threshold ? " over" : "") });
    fill.style.width = share(r.value);
    const track = h("span", { class: "track" }, fill);
    if (threshold !== undefined) {
      const mark = h("span", { class: "threshold", title: "threshold " + threshold });
      mark.style.left = share(threshold);
      track.appendChild(mark);
    }
    append(el, [h("span", { class: "label", title: r.title || null }, r.label), track, h("span", { class: "value" }, format(r.value))]);
  }
  return el;
}

function driftCard(name, w, hr) {
  const card = h("div", { class: "card", id: "drift" }, h("h2", {}, "Drift from the training baseline"));
  const d = w && w.drift;
  if (!d) {
    card.appendChild(h("p", { class: "muted" }, w ? "This model has no training baseline (baseline.json), so no drift is computed." : "No statistics window has closed yet."));
    return card;
  }
  const features = d.features.slice().sort((a, b) => (b.psi || 0) - (a.psi || 0));
  const all = view.allDrift[name];
  const shown = all ? features : features.slice(0, DRIFT_SHOWN);
  card.appendChild(h("p", { class: "reason-text" },
    d.drifted ? badge("drifted", "fail") : badge("no drift", "ok"),
    " PSI max ", fmt(d.psi_max), " (threshold ", d.psi_threshold, "), KS max ", fmt(d.ks_max),
    " (threshold ", d.ks_threshold, ") over ", d.rows, " rows of the window ending ", w.end,
    "; worst features first."));
  const label = (f) => f.input + "[" + f.feature + "]";
  card.appendChild(h("div", { class: "grid" },
    h("div", {}, h("h3", {}, "PSI"),
      bars(shown.map((f) => ({ label: label(f), value: f.psi })), { threshold: d.psi_threshold, id: "drift-psi" })),
    h("div", {}, h("h3", {}, "KS"),
      bars(shown.map((f) => ({ label: label(f), value: f.ks })), { threshold: d.ks_threshold, max: 1, id: "drift-ks" }))));
  if (features.length > DRIFT_SHOWN) {
    card.appendChild(h("p", {}, h("button", {
      class: "secondary",
      onclick: () => { view.allDrift[name] = !all; refresh(); },
    }, all ? "Show the worst " + DRIFT_SHOWN : "Show all " + features.length + " features")));
  }
  return card;
}

// Mean with its p5–p95 band over the kept windows.
function bandChart(points) {
  const W = 600, H = 170, L = 48, R = 10, T = 10, B = 24;
  const ys = points.flatMap((p) => [p.p5, p.p95, p.mean]).filter((v) => v !== null && v !== undefined && Number.isFinite(v));
  if (!ys.length) return h("p", { class: "muted" }, "No values yet.");
  let lo = Math.min(...ys), hi = Math.max(...ys);
  if (lo === hi) { lo -= 1; hi += 1; }
  const x = (k) => L + (points.length === 1 ? (W - L - R) / 2 : (k * (W - L - R)) / (points.length - 1));
  const y = (v) => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
  const ok = (v) => v !== null && v !== undefined && Number.isFinite(v);
  const upper = points.map((p, k) => (ok(p.p95) ? x(k) + "," + y(p.p95) : null)).filter(Boolean);
  const lower = points.map((p, k) => (ok(p.p5) ? x(k) + "," + y(p.p5) : null)).filter(Boolean).reverse();
  const mean = points.map((p, k) => (ok(p.mean) ? x(k) + "," + y(p.mean) : null)).filter(Boolean);
  return s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img" },
    s("title", {}, "mean and p5–p95 over the kept windows"),
    s("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }),
    s("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }),
    s("text", { x: 2, y: T + 10 }, fmt(hi)),
    s("text", { x: 2, y: H - B }, fmt(lo)),
    s("text", { x: L, y: H - 6 }, points[0].label || ""),
    s("text", { x: W - R, y: H - 6, "text-anchor": "end" }, points[points.length - 1].label || ""),
    upper.length > 1 ? s("polygon", { class: "band", points: upper.concat(lower).join(" ") }) : null,
    mean.length > 1 ? s("polyline", { class: "line", points: mean.join(" ") }) : null,
    points.map((p, k) => (ok(p.mean) ? s("circle", { class: "dot", cx: x(k), cy: y(p.mean), r: 3 }, s("title", {}, (p.label || "") + ": mean " + fmt(p.mean) + ", p5 " + fmt(p.p5) + ", p95 " + fmt(p.p95))) : null)),
  );
}

// A line over windows, values in 0..1 (agreement, accuracy).
function rateChart(series, labels) {
  const W = 600, H = 150, L = 40, R = 10, T = 10, B = 22;
  const n = labels.length;
  if (!n) return h("p", { class: "muted" }, "No closed window yet.");
  const x = (k) => L + (n === 1 ? (W - L - R) / 2 : (k * (W - L - R)) / (n - 1));
  const y = (v) => T + (H - T - B) * (1 - v);
  return s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img" },
    s("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }),
    s("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }),
    s("text", { x: 2, y: T + 10 }, "100%"),
    s("text", { x: 2, y: H - B }, "0%"),
    s("text", { x: L, y: H - 5 }, labels[0]),
    s("text", { x: W - R, y: H - 5, "text-anchor": "end" }, labels[n - 1]),
    series.map((line, j) => {
      const pts = line.values.map((v, k) => (v === null || v === undefined ? null : [x(k), y(v), v, labels[k]])).filter(Boolean);
      return [
        pts.length > 1 ? s("polyline", { class: "line" + (j ? " second" : ""), points: pts.map((p) => p[0] + "," + p[1]).join(" ") }) : null,
        pts.map((p) => s("circle", { class: "dot", cx: p[0], cy: p[1], r: 3 }, s("title", {}, line.name + " " + p[3] + ": " + pct(p[2])))),
      ];
    }),
  );
}

function distributions(name, dist) {
  const card = h("div", { class: "card", id: "distributions" },
    h("h2", {}, "Inputs and outputs over the kept windows"),
    h("p", { class: "legend" }, "Line: mean; band: p5 to p95; one point per closed window of ",
      fmt(dist.window_seconds, 0), " s (", dist.windows.length, " of ", dist.windows_kept, " kept)."));
  if (!dist.windows.length) {
    card.appendChild(h("p", { class: "muted" }, dist.window_seconds ? "No statistics window has closed yet." : "Window statistics are off (--stats-window 0)."));
    return card;
  }
  const last = lastWindow(dist);
  const tensors = [...(last.inputs || []).map((t) => ["input", t.name]), ...(last.outputs || []).map((t) => ["output", t.name])];
  const grid = h("div", { class: "grid" });
  for (const [kind, tname] of tensors) {
    const key = name + "/" + kind + "/" + tname;
    const pick = (w) => (w[kind + "s"] || []).find((t) => t.name === tname);
    const nfeat = Math.max(0, ...dist.windows.map((w) => ((pick(w) || {}).features || []).length));
    const chosen = view.feature[key] || "";
    const series = dist.windows.map((w) => {
      const t = pick(w);
      const f = t && chosen !== "" ? (t.features || [])[Number(chosen)] : t;
      return { mean: f ? f.mean : null, p5: f ? f.p5 : null, p95: f ? f.p95 : null, label: (w.end || "").slice(11, 19) };
    });
    const rows = dist.windows.slice().reverse().map((w) => {
      const t = pick(w) || {};
      return h("tr", {},
        h("td", {}, (w.end || "").slice(11, 19)),
        h("td", { class: "num" }, t.rows ?? "–"),
        h("td", { class: "num" }, t.nan ?? "–"),
        h("td", { class: "num" }, t.inf ?? "–"),
        h("td", { class: "num" }, kind === "input" ? (t.missing ?? 0) : "–"));
    });
    grid.appendChild(h("div", { class: "card", "data-tensor": tname },
      h("h3", {}, kind, " ", h("span", { class: "mono" }, tname), " ",
        nfeat ? h("select", {
          onchange: (ev) => { view.feature[key] = ev.target.value; refresh(); },
        }, h("option", { value: "", selected: chosen === "" }, "whole tensor"),
        Array.from({ length: nfeat }, (_, k) => h("option", { value: String(k), selected: chosen === String(k) }, "feature " + k))) : null),
      bandChart(series),
      h("div", { class: "scroll" }, h("table", {},
        h("thead", {}, h("tr", {}, h("th", {}, "window end"), h("th", { class: "num" }, "rows"), h("th", { class: "num" }, "NaN"), h("th", { class: "num" }, "Inf"), h("th", { class: "num" }, "missing"))),
        h("tbody", {}, rows)))));
  }
  card.appendChild(grid);
  return card;
}

function classesCard(w) {
  const card = h("div", { class: "card", id: "classes" }, h("h2", {}, "Predicted classes (last window)"));
  const outs = w ? (w.outputs || []).filter((t) => t.predicted_class) : [];
  if (!outs.length) {
    card.appendChild(h("p", { class: "muted" }, w ? "No classifier output in this model." : "No statistics window has closed yet."));
    return card;
  }
  for (const t of outs) {
    const entries = Object.entries(t.predicted_class).sort((a, b) => Number(a[0]) - Number(b[0]));
    const total = entries.reduce((a, [, n]) => a + n, 0) || 1;
    card.appendChild(h("h3", { class: "mono" }, t.name));
    card.appendChild(bars(entries.map(([c, n]) => ({ label: "class " + c, value: n / total, title: n + " rows" })), { max: 1, format: pct }));
  }
  return card;
}

function shadowCard(r) {
  const card = h("div", { class: "card", id: "shadow" }, h("h2", {}, "Shadow"));
  const target = r.target.version !== undefined ? "version " + r.target.version : "model " + r.target.model;
  const c = r.cumulative;
  card.appendChild(kv([
    ["target", target], ["sample rate", fmt(r.sample_rate)], ["compared", c.compared], ["shadow errors", c.errors],
    ["dropped (max in flight)", r.dropped], ["since", c.since],
    r.promotion ? ["promotion", r.promotion.status || "waiting"] : null,
  ]));
  const outputs = Object.entries(c.outputs);
  if (outputs.length) {
    card.appendChild(h("h3", {}, "Agreement (all compared)"));
    card.appendChild(bars(outputs.map(([n, o]) => ({ label: n, value: o.agreement })), { max: 1, format: pct, id: "shadow-agreement" }));
  }
  const labels = r.windows.map((w) => (w.since || "").slice(11, 19));
  const names = [...new Set(r.windows.flatMap((w) => Object.keys(w.outputs)))];
  card.appendChild(h("h3", {}, "Agreement over time (closed windows of ", fmt(r.window_seconds, 0), " s)"));
  card.appendChild(rateChart(names.slice(0, 2).map((n) => ({ name: n, values: r.windows.map((w) => (w.outputs[n] ? w.outputs[n].agreement : null)) })), labels));
  if (names.length) card.appendChild(h("p", { class: "legend" }, names.slice(0, 2).join(" (blue), ") + (names.length > 1 ? " (amber)" : " (blue)")));
  const withConfusion = outputs.find(([, o]) => o.confusion);
  if (withConfusion) {
    card.appendChild(h("h3", {}, "Confusion: primary's class (rows) by shadow's (columns), ", h("span", { class: "mono" }, withConfusion[0])));
    card.appendChild(heatmap(withConfusion[1].confusion));
  }
  card.appendChild(h("h3", {}, "Latency of the compared requests"));
  const l = c.latency_us;
  card.appendChild(bars([
    { label: "primary p50", value: l.primary_p50 }, { label: "shadow p50", value: l.shadow_p50 },
    { label: "primary p99", value: l.primary_p99 }, { label: "shadow p99", value: l.shadow_p99 },
  ], { format: ms, id: "shadow-latency" }));
  if (r.live_accuracy) {
    const a = r.live_accuracy;
    card.appendChild(h("h3", {}, "Against ground truth (labelled mirrored requests)"));
    card.appendChild(kv([
      ["primary", pct(a.primary && a.primary.accuracy)], ["shadow", pct(a.shadow && a.shadow.accuracy)],
      ["gain", a.accuracy_gain === null || a.accuracy_gain === undefined ? "–" : fmt(100 * a.accuracy_gain, 2) + " points"],
    ]));
  }
  return card;
}

function heatmap(confusion) {
  const rows = Object.keys(confusion);
  const cols = [...new Set(rows.concat(...rows.map((r) => Object.keys(confusion[r]))))];
  const order = (a, b) => (Number.isFinite(+a) && Number.isFinite(+b) ? a - b : a.localeCompare(b));
  rows.sort(order);
  cols.sort(order);
  const max = Math.max(1, ...rows.flatMap((r) => Object.values(confusion[r])));
  return h("div", { class: "scroll" }, h("table", { class: "heat", id: "confusion" },
    h("thead", {}, h("tr", {}, h("th", {}, "primary \\ shadow"), cols.map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, h("th", {}, r), cols.map((c) => {
      const n = confusion[r][c] || 0;
      const cell = h("td", { title: "primary " + r + ", shadow " + c + ": " + n }, n || "");
      const a = n / max;
      cell.style.background = r === c ? `rgba(31,138,76,${(0.12 + 0.7 * a).toFixed(3)})` : n ? `rgba(197,48,48,${(0.15 + 0.7 * a).toFixed(3)})` : "";
      if (a > 0.6) cell.style.color = "#fff";
      return cell;
    }))))));
}

function accuracyCard(acc) {
  const card = h("div", { class: "card", id: "accuracy" }, h("h2", {}, "Live accuracy (ground truth)"));
  const versions = Object.entries(acc.versions || {});
  if (!versions.length) {
    card.appendChild(h("p", { class: "muted" }, "No labels have arrived yet (POST …/feedback). ", acc.indexed, " predictions kept for them."));
    return card;
  }
  card.appendChild(h("div", { class: "scroll" }, h("table", {},
    h("thead", {}, h("tr", {}, ["version", "accuracy", "labelled rows", "label delay p50", "p95"].map((t, i) => h("th", { class: i ? "num" : null }, t)))),
    h("tbody", {}, versions.map(([v, r]) => h("tr", { "data-version": v },
      h("td", {}, v),
      h("td", { class: "num" }, pct(r.cumulative.accuracy)),
      h("td", { class: "num" }, r.cumulative.labelled_rows),
      h("td", { class: "num" }, r.cumulative.label_delay_p50_s === null ? "–" : r.cumulative.label_delay_p50_s + " s"),
      h("td", { class: "num" }, r.cumulative.label_delay_p95_s === null ? "–" : r.cumulative.label_delay_p95_s + " s")))))));
  // Versions' windows lined up by when they ended.
  const ends = [...new Set(versions.flatMap(([, r]) => (r.windows || []).map((w) => w.end)))].sort();
  if (ends.length) {
    card.appendChild(h("h3", {}, "Per window"));
    card.appendChild(rateChart(versions.slice(0, 2).map(([v, r]) => ({
      name: "version " + v,
      values: ends.map((end) => { const w = (r.windows || []).find((x) => x.end === end); return w ? w.accuracy : null; }),
    })), ends.map((e) => e.slice(11, 19))));
    card.appendChild(h("p", { class: "legend" }, versions.slice(0, 2).map(([v], j) => "version " + v + (j ? " (amber)" : " (blue)")).join(", ")));
  }
  return card;
}

function checksCard(checks) {
  const card = h("div", { class: "card", id: "checks" }, h("h2", {}, "Checks"));
  const last = checks.last;
  if (!last) {
    card.appendChild(h("p", { class: "muted" }, checks.scheduled ? "Scheduled; none has run yet." : "None has run (POST …/checks runs one; [checks] in config.toml schedules them)."));
    return card;
  }
  card.appendChild(h("p", {}, "Period ", last.period_start, " – ", last.period_end, " (", last.trigger, ", ran ", ago(last.ran_at), "): ", verdictBadge(last.verdict)));
  for (const [v, r] of Object.entries(last.versions || {})) {
    card.appendChild(h("h3", {}, "Version ", v));
    card.appendChild(h("div", { class: "scroll" }, h("table", {}, h("tbody", {}, (r.items || []).map((it) =>
      h("tr", {}, h("td", {}, it.name), h("td", {}, verdictBadge(it.verdict)), h("td", { class: "reason" }, it.reason)))))));
  }
  return card;
}

// ---------- promote, roll back, shadow ----------

function actions(name, versions, dep) {
  const readyVersions = ready(versions).map((e) => e.version);
  const others = readyVersions.filter((v) => v !== dep.primary);
  const picker = (what) => h("select", {
    id: what + "-version",
    onchange: (ev) => { view.chosen[what + "\u0000" + name] = ev.target.value; },
  }, others.map((v) => h("option", { value: v, selected: view.chosen[what + "\u0000" + name] === v }, "version " + v)));
  const promoteTo = picker("promote");
  const shadowTo = picker("shadow");
  const rate = h("input", { id: "shadow-rate", class: "rate", type: "number", min: "0", max: "1", step: "0.05", value: "1" });
  const card = h("div", { class: "card", id: "actions" },
    h("h2", {}, "Rollout"),
    h("div", { class: "actions" },
      h("fieldset", {}, h("legend", {}, "primary: version " + (dep.primary || "–")),
        promoteTo,
        h("button", { id: "promote", disabled: !others.length, onclick: () => control(name, "POST", "/promote", { version: Number(promoteTo.value) }) }, "Promote"),
        h("button", { id: "rollback", class: "secondary", onclick: () => control(name, "POST", "/rollback", {}) }, "Roll back")),
      h("fieldset", {}, h("legend", {}, "shadow: " + (dep.shadow || "none")),
        dep.shadow
          ? h("button", { id: "shadow-stop", class: "secondary", onclick: () => control(name, "DELETE", "/shadow") }, "Stop shadow")
          : [shadowTo, h("label", {}, "rate ", rate),
            h("button", { id: "shadow-start", disabled: !others.length, onclick: () => control(name, "POST", "/shadow", { version: Number(shadowTo.value), sample_rate: Number(rate.value) }) }, "Start shadow")])));
  if (view.tokenNeeded) {
    const input = h("input", { id: "token", type: "password", autocomplete: "off", placeholder: "control token" });
    const send = () => {
      token = input.value;
      view.tokenNeeded = false;
      const p = view.pending;
      view.pending = null;
      if (p) control(...p);
    };
    card.appendChild(h("form", { class: "token", onsubmit: (ev) => { ev.preventDefault(); send(); } },
      h("span", {}, "This server needs its control token:"), input, h("button", { type: "submit" }, "Send")));
  }
  if (view.answer && view.answer.model === name) {
    card.appendChild(h("pre", { class: "answer" + (view.answer.ok ? "" : " error"), id: "answer" }, view.answer.text));
  }
  return card;
}

async function control(name, method, suffix, body) {
  let r;
  try {
    r = await call(method, modelPath(name) + suffix, body);
  } catch (e) {
    view.answer = { model: name, ok: false, text: "The server could not be reached: " + e.message };
    return refresh();
  }
  if (r.status === 401) {
    view.tokenNeeded = true;
    view.pending = [name, method, suffix, body];
  }
  const what = method + " " + modelPath(name) + suffix + (body && Object.keys(body).length ? " " + JSON.stringify(body) : "");
  view.answer = { model: name, ok: r.ok, text: what + "\n→ HTTP " + r.status + "\n" + (typeof r.data === "string" ? r.data : JSON.stringify(r.data, null, 2)) };
  return refresh();
}

// ---------- routing and refresh ----------

function route() {
  const m = location.hash.match(/^#\/models\/(.+)$/);
  return m ? { model: decodeURIComponent(m[1]) } : {};
}

// `timed`: a refresh of the timer's, skipped while the person is using a
// control of the page (an open list, a token being typed).
async function refresh(timed) {
  if (refreshing) {
    if (timed !== true) again = true;
    return;
  }
  const app = document.getElementById("app");
  const active = document.activeElement;
  if (timed === true && active && ["SELECT", "INPUT"].includes(active.tagName) && app.contains(active)) return;
  refreshing = true;
  const status = document.getElementById("status");
  try {
    const r = route();
    const content = r.model ? await modelView(r.model) : await listView();
    document.getElementById("crumbs").replaceChildren(...(r.model ? [h("a", { href: "#/" }, "models"), " / ", r.model] : []));
    app.replaceChildren(...content);
    status.textContent = "updated " + new Date().toLocaleTimeString();
    status.className = "status";
  } catch (e) {
    status.textContent = "cannot read the server: " + e.message;
    status.className = "status error";
  } finally {
    refreshing = false;
  }
  if (again) {
    again = false;
    refresh();
  }
}

window.addEventListener("hashchange", () => refresh());
document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
setInterval(() => { if (!document.hidden) refresh(true); }, REFRESH_MS);
refresh();
