// report.html of rmkit eval: figures from metrics.json, rows from scores.jsonl, texts from the data.
// Hand-written, no library: every text of the data goes in through textContent (never innerHTML).
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("rmkit-data").textContent);
  const parsed = performance.now();
  const M = D.metrics;
  const models = Object.keys(M.models || {});
  const page = document.getElementById("page");
  const PAGE_SIZES = [50, 200, 1000];

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k); // strings become text nodes
    return e;
  }
  const isNum = (v) => typeof v === "number" && isFinite(v);
  const fmt = (v) => (v === null || v === undefined ? "–" : Number.isInteger(v) ? String(v) : v.toFixed(3));
  const isCi = (v) => Array.isArray(v) && v.length === 2 && v.every(isNum);
  const fmtCi = (v) => `[${v[0].toFixed(3)}, ${v[1].toFixed(3)}]`;

  // ---- figures: every number and interval of metrics.json's results, as they are -------------------------
  function groups(node) {
    if (node && node.all && node.subsets) return [["all", node.all], ...Object.entries(node.subsets)];
    return Object.entries(node || {});
  }
  function figureKeys(rows) {
    const keys = [];
    for (const [, g] of rows)
      for (const [k, v] of Object.entries(g)) if ((isNum(v) || v === null || isCi(v)) && !keys.includes(k)) keys.push(k);
    return keys;
  }
  function figureTable(id, head, rows) {
    // rows: [[names..., path in metrics.json (a prefix, or a function of the figure's key), figures dict]]
    const keys = figureKeys(rows.map((r) => [null, r[r.length - 1]]));
    const table = el("table", { id });
    table.append(el("tr", {}, ...head.map((h) => el("th", { text: h })), ...keys.map((k) => el("th", { text: k }))));
    for (const r of rows) {
      const g = r[r.length - 1], path = r[r.length - 2];
      const tr = el("tr", {}, ...r.slice(0, -2).map((n) => el("td", { text: n })));
      for (const k of keys) {
        const v = g[k];
        const td = el("td", { class: "num" });
        if (k in g) td.dataset.key = JSON.stringify(typeof path === "function" ? path(k) : [...path, k]);
        td.textContent = isCi(v) ? fmtCi(v) : fmt(isNum(v) ? v : null);
        tr.append(td);
      }
      table.append(tr);
    }
    return el("div", { class: "wide" }, table);
  }
  const flat = (node) => Object.values(node || {}).some(isNum); // a cost model's figures: no subsets
  function resultRows(results) {
    const rows = [];
    for (const [model, byData] of Object.entries(results || {}))
      for (const [data, node] of Object.entries(byData))
        for (const [group, g] of flat(node) ? [["all", node]] : groups(node)) {
          const nested = node.all && node.subsets; // pairs, steps: "all" and "subsets"; ratings: attributes
          const path = flat(node) ? ["results", model, data] : ["results", model, data, ...(nested && group !== "all" ? ["subsets"] : []), group];
          rows.push([model, data, group, path, g]);
        }
    return rows;
  }

  // ---- bars with intervals ------------------------------------------------------------------------------
  const MAIN = ["accuracy", "score", "processbench_f1", "pearson", "step_accuracy"];
  function mainFigure(g) {
    return MAIN.find((k) => k in g) || Object.keys(g).find((k) => isNum(g[k]) && isCi(g[k + "_ci"]));
  }
  function bars(title, items) {
    // items: [name, value, ci|null]
    const W = 420, row = 20, left = 150, H = 24 + row * items.length;
    const vals = items.flatMap(([, v, ci]) => [v, ...(ci || [])]).filter(isNum);
    const lo = Math.min(0, ...vals), hi = Math.max(1, ...vals);
    const x = (v) => left + ((v - lo) / (hi - lo || 1)) * (W - left - 60);
    const NS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("width", W); svg.setAttribute("height", H);
    const add = (tag, attrs, text) => {
      const e = document.createElementNS(NS, tag);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
      if (text !== undefined) e.textContent = text;
      svg.append(e); return e;
    };
    items.forEach(([name, v, ci], i) => {
      const y = 8 + i * row;
      add("text", { x: left - 6, y: y + 12, "text-anchor": "end" }, name.length > 24 ? name.slice(0, 23) + "…" : name);
      if (!isNum(v)) return;
      add("rect", { x: x(Math.min(0, v)), y: y + 2, width: x(Math.max(0, v)) - x(Math.min(0, v)), height: row - 6, fill: "#8cb4e8" });
      if (ci) {
        add("line", { x1: x(ci[0]), x2: x(ci[1]), y1: y + row / 2 - 1, y2: y + row / 2 - 1, stroke: "#1b1f24" });
        for (const c of ci) add("line", { x1: x(c), x2: x(c), y1: y + 5, y2: y + row - 7, stroke: "#1b1f24" });
      }
      add("text", { x: W - 52, y: y + 12 }, v.toFixed(3));
    });
    const fig = el("div", { class: "fig" }, el("h3", { text: title }));
    fig.append(svg);
    return fig;
  }

  // ---- rows: one view per line of scores.jsonl ---------------------------------------------------------
  const K = D.lines.keys, IDX = Object.fromEntries(K.map((k, i) => [k, i]));
  const has = (k) => k in IDX;
  const suiteRows = has("scores") || K.some((k) => k.startsWith("scores_"));
  const shape = has("costs") && has("signs") ? "cost" : has("step_scores") ? "steps" : has("outputs") ? "rated" :
    suiteRows ? "suite" : "pairs";
  const key = (name, label) => (has(`${name}_${label}`) ? `${name}_${label}` : name);
  const costModels = Object.keys(M.cost_models || {}); // judged beside reward models on pairs
  const views = shape === "cost" ? costViews() : D.lines.rows.map((line, i) => {
    const get = (k) => (k in IDX ? line[IDX[k]] : undefined);
    const v = { i, line, get, data: get("data"), row: get("row"), subset: get("subset") ?? "" };
    Object.assign(v, { model: get("model") ?? null, margin: {}, ok: {}, len: null, ld: null });
    if (shape === "pairs") {
      for (const label of models) {
        const m = get(key("margin", label));
        v.margin[label] = isNum(m) ? m : null;
        v.ok[label] = isNum(m) ? m > 0 : null;
      }
      const c = get("chosen_length"), r = get("rejected_length");
      v.len = Math.max(c, r); v.ld = c - r;
      v.safer = {}; // per cost model and reward model: does the answer the reward model prefers cost less?
      for (const cm of costModels) {
        const cc = get(key("chosen_cost", cm)), cr = get(key("rejected_cost", cm));
        v.safer[cm] = Object.fromEntries(models.map((l) => [l, isNum(cc) && isNum(cr) && isNum(v.margin[l]) ?
          (v.margin[l] > 0 ? cc < cr : v.margin[l] < 0 ? cr < cc : false) : null]));
      }
    } else if (shape === "steps") {
      const label = v.model || models[0];
      v.ok[label] = get("predicted_error") === get("first_error");
      v.len = (get("step_scores") || []).length;
    }
    return v;
  });
  function costViews() {
    // a cost model's rows: one view a response (a pair gives two), right when its cost has its label's sign
    const out = [];
    D.lines.rows.forEach((line, n) => {
      const get = (k) => (k in IDX ? line[IDX[k]] : undefined);
      const signs = get("signs") || [], costs = get("costs");
      signs.forEach((sign, j) => {
        const cost = costs ? costs[j] : null, labelled = sign !== 0 && isNum(cost);
        out.push({ i: out.length, n, j, line, get, data: get("data"), row: get("row"), subset: get("data"), model: get("model"),
          sign, cost, wrong: labelled ? cost * sign : null, label: sign > 0 ? "safe" : sign < 0 ? "unsafe" : "unlabelled",
          ok: { [get("model")]: labelled ? cost * sign < 0 : null }, margin: {}, len: null, ld: null });
      });
    });
    return out;
  }
  const textOf = (v) => D.texts[`${v.data}#${v.row}`];
  let searchText = null;
  function haystack(v) {
    if (!searchText)
      searchText = views.map((w) => {
        const t = textOf(w);
        return t ? (t[0] + "\n" + t[1].join("\n")).toLowerCase() : "";
      });
    return searchText[v.i];
  }

  // the state of the table: filters, sort, page
  const S = { group: "", model: models[0] || "", verdict: "all", label: "", mmin: "", mmax: "", lmin: "", lmax: "", q: "" };
  Object.assign(S, { sort: shape === "pairs" || shape === "cost" ? "errors" : "input", size: 50, page: 0, only: null });
  // "flipped" rows compare the chosen model with the first one (the first with the second)
  function filtered() {
    const num = (s) => (s === "" ? null : Number(s));
    const [mmin, mmax, lmin, lmax] = [S.mmin, S.mmax, S.lmin, S.lmax].map(num);
    const q = S.q.trim().toLowerCase(), other = S.model === models[0] ? models[1] : models[0];
    let out = views.filter((v) => {
      if (S.only !== null) return v.i === S.only;
      if (S.group && `${v.data} / ${v.subset}` !== S.group) return false;
      if (v.model !== null && v.model !== S.model) return false;
      const ok = v.ok[S.model], m = shape === "cost" ? v.cost : v.margin[S.model];
      if (S.label && v.label !== S.label) return false;
      if (S.verdict === "costlier" && !(costModels.length && v.safer[costModels[0]][S.model] === false)) return false;
      if (S.verdict === "right" && ok !== true) return false;
      if (S.verdict === "wrong" && ok !== false) return false;
      if (S.verdict === "gained" && !(ok === true && v.ok[other] === false)) return false;
      if (S.verdict === "lost" && !(ok === false && v.ok[other] === true)) return false;
      if (mmin !== null && !(m >= mmin)) return false;
      if (mmax !== null && !(m <= mmax)) return false;
      if (lmin !== null && !(v.len >= lmin)) return false;
      if (lmax !== null && !(v.len <= lmax)) return false;
      return !q || haystack(v).includes(q);
    });
    const neg = (x) => (isNum(x) ? -x : null); // a row without the number goes last either way
    const by = (shape === "cost" ? { errors: (v) => neg(v.wrong), margin_desc: (v) => neg(v.cost), cost: (v) => v.cost } : {
      errors: (v) => v.margin[S.model], margin_desc: (v) => neg(v.margin[S.model]), ld: (v) => v.ld,
      ld_desc: (v) => neg(v.ld), abs_ld: (v) => neg(Math.abs(v.ld)),
    })[S.sort] || ((v) => v.i);
    const k = (v) => { const x = by(v); return isNum(x) ? x : Infinity; };
    return out.sort((a, b) => k(a) - k(b) || a.i - b.i);
  }

  function textBlock(label, text) {
    const long = text.length > 400 || text.split("\n").length > 8;
    if (!long) return el("div", { class: "texts" }, el("b", { text: label + ": " }), text);
    const summary = `${label}: ${text.slice(0, 120).replace(/\s+/g, " ")}… (${text.length} characters)`;
    return el("details", { class: "text" }, el("summary", { text: summary }), el("div", { class: "texts", text }));
  }
  function thumbs(images) {
    // [thumbnail index or null (over the page's budget), the image as the data named it]
    return el("div", { class: "thumbs" }, ...images.map(([k, ref]) => k === null || k === undefined
      ? el("span", { class: "thumb-missing", text: `[${ref}]` })
      : el("img", { class: "thumb", src: D.images[k], alt: ref, title: ref })));
  }
  function detail(v) {
    const t = textOf(v), cell = el("td", { class: "texts" });
    if (!t) { cell.textContent = D.note || "(no text)"; return cell; }
    if (t[2]) cell.append(thumbs(t[2]));
    cell.append(textBlock("prompt", t[0]));
    if (shape === "cost") {
      cell.append(textBlock(`response ${v.j + 1} (${v.label}, cost ${fmt(v.cost)})`, t[1][v.j] ?? ""));
    } else if (shape === "steps") {
      const s = v.get("step_scores") || [], lab = v.get("labels") || [];
      const verdict = (l) => (l === null || l === undefined ? "–" : l ? "right" : "wrong");
      t[1].forEach((step, j) => cell.append(textBlock(`step ${j + 1} (score ${fmt(s[j])}, label ${verdict(lab[j])})`, step)));
    } else {
      const names = shape === "pairs" ? ["chosen", "rejected"] : t[1].map((_, j) => `answer ${j + 1}`);
      t[1].forEach((a, j) => cell.append(textBlock(names[j] || `answer ${j + 1}`, a)));
    }
    return cell;
  }
  const COLS = {
    pairs: ["#", "data", "row", "subset", ...models.flatMap((m) => [`margin ${m}`, `right ${m}`])].concat(
      ["P(rejected better)", "length difference", "texts"]),
    steps: ["#", "data", "row", "subset", "model", "first error", "predicted error", "right", "texts"],
    rated: ["#", "data", "row", "model", "ratings", "outputs", "texts"],
    suite: ["#", "data", "row", "id", "subset", ...models.map((m) => `scores ${m}`), "texts"],
    cost: ["#", "data", "row", "response", ...(models.length > 1 ? ["model"] : []), "label", "cost", "right sign", "texts"],
  }[shape];
  if (shape === "pairs")
    COLS.splice(COLS.length - 1, 0, ...costModels.flatMap((c) => [`cost chosen ${c}`, `cost rejected ${c}`, `preferred safer ${c}`]));
  function tableRow(v) {
    const ok = v.ok[S.model];
    const tr = el("tr", { class: ok === true ? "right" : ok === false ? "wrong" : "", "data-i": v.i });
    const shownAs = (x) =>
      x === null || x === undefined ? "–" : typeof x === "number" ? fmt(x) : typeof x === "object" ? JSON.stringify(x) : String(x);
    const td = (x, cls) => el("td", cls ? { class: cls } : {}, shownAs(x));
    tr.append(td(v.i + 1, "num"), td(v.data), td(v.row, "num"));
    if (shape === "pairs") {
      tr.append(td(v.subset));
      for (const m of models) tr.append(td(v.margin[m], "num margin"), td(v.ok[m] === null ? "–" : v.ok[m] ? "yes" : "no", `ok ok-${v.ok[m]}`));
      const m = v.margin[S.model];
      tr.append(td(isNum(m) ? 1 / (1 + Math.exp(m)) : null, "num"), td(v.ld, "num"));
      for (const c of costModels) {
        const safer = v.safer[c][S.model];
        tr.append(td(v.get(key("chosen_cost", c)), "num"), td(v.get(key("rejected_cost", c)), "num"),
          td(safer === null ? "–" : safer ? "yes" : "no", `safer safer-${safer}`));
      }
    } else if (shape === "cost") {
      tr.append(td(v.j + 1, "num"), ...(models.length > 1 ? [td(v.model)] : []), td(v.label, `label-${v.label}`),
        td(v.cost, "num cost"), td(ok === null ? "–" : ok ? "yes" : "no", `ok ok-${ok}`));
    } else if (shape === "steps") {
      tr.append(td(v.subset), td(v.model || models[0]), td(v.get("first_error")), td(v.get("predicted_error")), td(ok ? "yes" : "no", `ok ok-${ok}`));
    } else if (shape === "rated") {
      tr.append(td(v.model), td(v.get("ratings")), td(v.get("outputs")));
    } else {
      tr.append(td(v.get("id")), td(v.subset));
      for (const m of models) tr.append(td(v.get(models.length === 1 ? "scores" : `scores_${m}`)));
    }
    tr.append(detail(v));
    if (shape === "cost") Object.assign(tr.dataset, { line: v.n, response: v.j });
    if (S.only === v.i) tr.classList.add("open");
    return tr;
  }
  const body = el("tbody"), info = el("span", { id: "rows-info" });
  function render() {
    const rows = filtered(), pages = Math.max(1, Math.ceil(rows.length / S.size));
    S.page = Math.min(S.page, pages - 1);
    const shown = rows.slice(S.page * S.size, (S.page + 1) * S.size);
    body.replaceChildren(...shown.map(tableRow));
    const first = S.page * S.size;
    info.textContent = `${rows.length} rows` + (rows.length ? `, showing ${first + 1}–${first + shown.length}` : "") +
      (S.only !== null ? " (one row picked from a plot)" : "");
  }
  function control(label, input, field, event) {
    input.id = "f-" + field;
    input.addEventListener(event || "change", () => {
      S[field] = field === "size" ? Number(input.value) : input.value;
      Object.assign(S, { page: 0, only: null });
      render();
    });
    return el("label", {}, label + " ", input);
  }
  function select(options, value) {
    const s = el("select");
    for (const [v, t] of options) s.append(el("option", { value: v, text: t }));
    s.value = value;
    return s;
  }
  const FOLDED = "Texts over 400 characters or 8 lines are folded behind their first words, never cut.";
  const ROWS_NOTE =
    "A row is right when the RM scores the chosen answer above the rejected one (a tie is wrong). " +
    "P(rejected better) is σ(−margin), the probability the RM's scores give the rejected answer under " +
    "Bradley-Terry: the confidence of an error. Length is the longer answer's, in characters. " +
    FOLDED + " The other model of \"right here, wrong for the other\" is the first " +
    "model (for the first, the second).";
  const SAFER_NOTE = " Preferred safer: the answer the reward model scores higher costs less (a tie in either is no).";
  const COST_NOTE = "A row is one response. Its cost has the right sign when it is below 0 for a safe response and " +
    "above 0 for an unsafe one (cost·sign < 0; a response labelled neither has no verdict). The most confidently " +
    "wrong come first: the largest cost·sign above 0, as metrics.json's most_wrong lists them. " + FOLDED;
  function rowsSection() {
    const groupsSeen = [...new Set(views.map((v) => `${v.data} / ${v.subset}`))];
    const verdicts = [["all", "all"], ["right", "right"], ["wrong", "wrong"]];
    if (shape === "pairs" && models.length > 1)
      verdicts.push(["gained", "right here, wrong for the other"], ["lost", "wrong here, right for the other"]);
    if (shape === "pairs" && costModels.length) verdicts.push(["costlier", `preferred answer costs more (${costModels[0]})`]);
    if (shape === "cost") verdicts.splice(1, 2, ["right", "right sign"], ["wrong", "wrong sign"]);
    const sorts = [
      ["errors", "most confident errors first"], ["margin_desc", "margin, largest first"],
      ["ld", "length difference, ascending"], ["ld_desc", "length difference, descending"],
      ["abs_ld", "largest length difference"], ["input", "input order"],
    ];
    const num = () => el("input", { type: "number", step: "any" });
    const pairs = shape === "pairs", steps = shape === "steps", cost = shape === "cost";
    const costSorts = [["errors", "most confidently wrong first"], ["margin_desc", "cost, highest first"],
      ["cost", "cost, lowest first"], ["input", "input order"]];
    const controls = el("div", { class: "controls" },
      control("data / subset", select([["", "all"], ...groupsSeen.map((g) => [g, g])], ""), "group"),
      models.length > 1 ? control("model", select(models.map((m) => [m, m]), S.model), "model") : null,
      // what a row of this kind has: a verdict (pairs, solutions), a margin (pairs), a length (steps: their number)
      cost ? control("label", select([["", "all"], ["safe", "safe"], ["unsafe", "unsafe"]], ""), "label") : null,
      pairs || steps || cost ? control("rows", select(verdicts, "all"), "verdict") : null,
      ...(pairs || cost ? [control(cost ? "cost ≥" : "margin ≥", num(), "mmin", "input"), control("≤", num(), "mmax", "input")] : []),
      ...(pairs || steps ? [control(pairs ? "length ≥" : "steps ≥", num(), "lmin", "input"), control("≤", num(), "lmax", "input")] : []),
      control("text", el("input", { type: "search" }), "q", "input"),
      control("sort", select(pairs ? sorts : cost ? costSorts : sorts.slice(-1), S.sort), "sort"),
      control("per page", select(PAGE_SIZES.map((n) => [n, n]), "50"), "size"));
    const pager = el("div", { class: "pager" },
      el("button", { id: "prev", text: "◀ previous", onclick: () => { S.page = Math.max(0, S.page - 1); render(); } }),
      el("button", { id: "next", text: "next ▶", onclick: () => { S.page += 1; render(); } }),
      el("button", { id: "all-rows", text: "clear the picked row", onclick: () => { S.only = null; render(); } }), info);
    const head = el("tr", {}, ...COLS.map((c) => el("th", { text: c })));
    return [el("h2", { text: "Rows" }),
      el("p", { class: "note", text: pairs ? ROWS_NOTE + (costModels.length ? SAFER_NOTE : "") : cost ? COST_NOTE : FOLDED }),
      controls, pager, el("table", { id: "rows" }, el("thead", {}, head), body)];
  }

  // ---- scatter plots on canvas: a click opens the nearest point's row -------------------------------------
  function scatter(title, xlabel, ylabel, pts) {
    // pts: [x, y, view index, colour]
    const W = 440, H = 300, P = 40;
    const fig = el("div", { class: "fig" }, el("h3", { text: title }));
    const c = el("canvas", { width: W, height: H, "data-points": pts.length });
    fig.append(c, el("div", { class: "note", text: `${xlabel} →, ${ylabel} ↑; ${pts.length} points (click one to open its row)` }));
    let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity]; // no spread: 10^5 points overflow it
    for (const [x, y] of pts) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
    const sx = (x) => P + ((x - x0) / (x1 - x0 || 1)) * (W - P - 10), sy = (y) => H - P - ((y - y0) / (y1 - y0 || 1)) * (H - P - 10);
    const g = c.getContext("2d");
    g.strokeStyle = "#57606a"; g.strokeRect(P, 10, W - P - 10, H - P - 10);
    g.fillStyle = "#1b1f24"; g.font = "11px sans-serif";
    if (pts.length) {
      g.fillText(fmt(x0), P, H - P + 14); g.fillText(fmt(x1), W - 50, H - P + 14);
      g.fillText(fmt(y1), 2, 18); g.fillText(fmt(y0), 2, H - P);
    }
    g.fillText(xlabel, W / 2 - 40, H - 8);
    if (y0 < 0 && y1 > 0) { g.setLineDash([4, 4]); g.beginPath(); g.moveTo(P, sy(0)); g.lineTo(W - 10, sy(0)); g.stroke(); g.setLineDash([]); }
    g.globalAlpha = pts.length > 2000 ? 0.35 : 0.75;
    const byColour = {}; // one path a colour: a fill style set per point costs more than the points
    for (const [x, y, , colour] of pts) (byColour[colour] ||= []).push(sx(x) - 2, sy(y) - 2);
    for (const [colour, xy] of Object.entries(byColour)) {
      g.fillStyle = colour; g.beginPath();
      for (let k = 0; k < xy.length; k += 2) g.rect(xy[k], xy[k + 1], 4, 4);
      g.fill();
    }
    c.addEventListener("click", (e) => {
      const r = c.getBoundingClientRect(), mx = e.clientX - r.left, my = e.clientY - r.top;
      let best = null, bd = 64;
      for (const p of pts) { const d = (sx(p[0]) - mx) ** 2 + (sy(p[1]) - my) ** 2; if (d < bd) { bd = d; best = p; } }
      if (best) openRow(best[2]);
    });
    return fig;
  }
  function openRow(i) {
    S.only = i; S.page = 0; render();
    const tr = body.querySelector("tr");
    if (tr) { tr.querySelectorAll("details").forEach((d) => (d.open = true)); tr.scrollIntoView({ block: "center" }); }
  }
  const GOOD = "#1a7f37", BAD = "#cf222e", GREY = "#8c959f";
  function plots() {
    // each model's figures in a column of their own, the same figure of every model on one line
    const columns = models.map((label) => modelPlots(label));
    const lines = Math.max(0, ...columns.map((c) => c.length));
    return Array.from({ length: lines }, (_, j) => columns.map((c) => c[j])).flat().filter(Boolean);
  }
  function modelPlots(label) {
    const out = [];
    const mine = views.filter((v) => v.model === null || v.model === label);
    if (shape === "pairs") {
      const c = key("chosen_score", label), r = key("rejected_score", label), pts = [];
      for (const v of mine) {
        if (isNum(v.get(c))) pts.push([v.get("chosen_length"), v.get(c), v.i, GOOD]);
        if (isNum(v.get(r))) pts.push([v.get("rejected_length"), v.get(r), v.i, BAD]);
      }
      out.push(scatter(`${label}: score against length (chosen green, rejected red)`, "length", "score", pts));
      out.push(scatter(`${label}: margin against length difference`, "chosen − rejected length", "margin",
        mine.filter((v) => isNum(v.margin[label])).map((v) => [v.ld, v.margin[label], v.i, v.ok[label] ? GOOD : BAD])));
    } else if (shape === "steps") {
      const pts = [];
      for (const v of mine) {
        const labels = v.get("labels") || [], jitter = (((v.i * 7919) % 100) / 100 - 0.5) * 0.6; // fixed per row
        (v.get("step_scores") || []).forEach((s, j) => {
          if (isNum(s)) pts.push([j + 1 + jitter, s, v.i, labels[j] === true ? GOOD : labels[j] === false ? BAD : GREY]);
        });
      }
      out.push(scatter(`${label}: step scores by position (right steps green, wrong red)`, "step", "step score", pts));
    } else if (shape === "cost") {
      for (const data of Object.keys((M.results || {})[label] || {})) {
        const pts = mine.filter((v) => v.data === data && isNum(v.cost) && v.sign !== 0)
          .map((v) => [v.cost, Math.sign(v.sign) + (((v.i * 7919) % 100) / 100 - 0.5) * 0.5, v.i, v.sign > 0 ? GOOD : BAD]);
        out.push(scatter(`${label} on ${data}: costs of safe (green, at 1) and unsafe (red, at −1) responses`, "cost", "label", pts));
      }
    } else if (shape === "rated") {
      const attrs = [...new Set(mine.flatMap((v) => Object.keys(v.get("ratings") || {})))];
      for (const a of attrs) {
        const pts = [];
        for (const v of mine) {
          const o = v.get("outputs") || {}, rated = (v.get("ratings") || {})[a];
          const predicted = a in o ? o[a] : o.score; // the attribute's own output, else the one score
          if (isNum(rated) && isNum(predicted)) pts.push([rated, predicted, v.i, "#0969da"]);
        }
        out.push(scatter(`${label}: predicted against rated, ${a}`, `rated ${a}`, "predicted", pts));
      }
    }
    return out;
  }

  // ---- the page -------------------------------------------------------------------------------------------
  function evaluated() {
    const table = el("table", { id: "model-list" }, el("tr", {}, el("th", { text: "model" }), el("th", { text: "checkpoint" })));
    for (const [m, p] of Object.entries(M.models || {})) table.append(el("tr", {}, el("td", { text: m }), el("td", { text: String(p) })));
    return [el("h2", { text: "What was evaluated" }), table];
  }
  function suiteSection() {
    const entries = Object.entries(M.suite.models);
    const inSuite = (m, g) => (k) => ["suite", "models", m, ...(k in g.leaderboard ? ["leaderboard"] : []), k];
    const leaderboard = entries.map(([m, g]) => [m, inSuite(m, g), { score: g.score, score_ci: g.score_ci, ...g.leaderboard }]);
    const part = (key) => entries.flatMap(([m, g]) =>
      Object.entries(g[key] || {}).map(([s, f]) => [m, s, ["suite", "models", m, key, s], f]));
    const figs = (key) => entries.filter(([, g]) => Object.keys(g[key] || {}).length)
      .map(([m, g]) => bars(`${m}: ${key}`, Object.entries(g[key]).map(([s, f]) => [s, f.score, f.score_ci])));
    const sections = part("sections");
    return [el("h2", { text: "Leaderboard" }), figureTable("leaderboard", ["model"], leaderboard),
      ...(sections.length ? [el("h2", { text: "Sections" }), el("div", { class: "figs" }, ...figs("sections")),
        figureTable("sections", ["model", "section"], sections)] : []),
      el("h2", { text: "Subsets" }), el("div", { class: "figs", id: "bars" }, ...figs("subsets")),
      figureTable("figures", ["model", "subset"], part("subsets"))];
  }
  function resultsSection() {
    const boot = M.bootstrap ? ` (${M.bootstrap.samples} resamples, seed ${M.bootstrap.seed})` : "";
    const figs = [];
    for (const [model, byData] of Object.entries(M.results || {}))
      for (const [data, node] of Object.entries(byData)) {
        if (flat(node)) { // every figure with an interval: a cost model's pair and sign accuracy
          const items = Object.keys(node).filter((k) => `${k}_ci` in node).map((k) => [k, node[k], node[`${k}_ci`]]);
          figs.push(bars(`${model} on ${data}`, items));
          continue;
        }
        const items = groups(node).map(([n, g]) => {
          const k = mainFigure(g);
          return [n, k ? g[k] : null, k ? g[k + "_ci"] || null : null, k];
        });
        figs.push(bars(`${model} on ${data}: ${items.find((x) => x[3])?.[3] || ""}`, items));
      }
    const meaning = M.meaning ? ` Costs: ${M.meaning.replace(/^costs: /, "")}.` : "";
    return [el("h2", { text: "Figures" }), figureTable("figures", ["model", "data", shape === "rated" ? "attribute" : "subset"], resultRows(M.results)),
      el("p", { class: "note", text: `Every number is metrics.json's. Intervals: 95% bootstrap${boot}.${meaning}` }),
      el("div", { class: "figs", id: "bars" }, ...figs)];
  }
  function safetySection() {
    // a cost model beside reward models: metrics.json's "safety", the preferred-also-safer share per reward model
    const rows = [];
    for (const [c, byData] of Object.entries(M.safety))
      for (const [data, m] of Object.entries(byData)) {
        const figures = { ...m }, named = {};
        for (const [r, x] of Object.entries(m.preferred_safer || {})) { figures[`${r} safer`] = x; named[`${r} safer`] = r; }
        const path = (k) => (k in named ? ["safety", c, data, "preferred_safer", named[k]] : ["safety", c, data, k]);
        rows.push([c, data, path, figures]);
      }
    return [el("h2", { text: "Cost models" }), figureTable("safety", ["cost model", "data"], rows),
      el("p", { class: "note", text: "chosen_safer: the share of pairs whose chosen answer costs less; <model> safer: " +
        "the share whose answer that reward model scores higher costs less (metrics.json's safety)." })];
  }
  function comparisonSection() {
    const rows = [];
    for (const [pair, byData] of Object.entries(M.comparisons))
      for (const [data, c] of Object.entries(byData)) rows.push([pair, data, ["comparisons", pair, data], c]);
    const a = models[0], flips = [];
    for (const b of models.slice(1)) {
      const gained = views.filter((v) => v.ok[b] === true && v.ok[a] === false).length;
      const lost = views.filter((v) => v.ok[b] === false && v.ok[a] === true).length;
      flips.push(`${b} gets ${gained} pairs right that ${a} gets wrong, and ${lost} wrong that ${a} gets right.`);
    }
    const how = ' To list them, pick a model and "right here, wrong for the other" in the rows below.';
    return [el("h2", { text: "Comparison" }), figureTable("comparison", ["models", "data"], rows),
      el("p", { id: "flips", text: flips.join(" ") + how })];
  }
  const PLOTS_TITLE = { pairs: "Length bias", steps: "Step scores against labels", rated: "Predicted against rated",
    cost: "Costs by safety label" };
  function build() {
    const parts = [...evaluated(), ...(M.suite ? suiteSection() : resultsSection())];
    if (M.safety && Object.keys(M.safety).length) parts.push(...safetySection());
    if (M.comparisons && Object.keys(M.comparisons).length) parts.push(...comparisonSection());
    const ps = plots();
    if (ps.length) parts.push(el("h2", { text: PLOTS_TITLE[shape] }), el("div", { class: "figs", id: "plots" }, ...ps));
    if (D.note) parts.push(el("p", { class: "note", text: D.note }));
    parts.push(...rowsSection());
    page.append(...parts);
    render();
    document.body.dataset.parseMs = parsed.toFixed(0); // since navigation began: the data read
    document.body.dataset.renderMs = performance.now().toFixed(0); // and the page drawn
    document.body.setAttribute("data-ready", "1");
  }
  build();
})();
