// corsgate admin panel: draws the page the address names and asks the admin API for everything it
// shows. Nothing is judged here: validation, lints and explanations are the server's (the CORS
// core's), so the panel can never disagree with the gateway. User text only ever reaches the page
// as text nodes, never as HTML.
"use strict";

const METHODS = ["GET", "PUT", "POST", "DELETE", "HEAD"];
const FIELDS = ["ID", "AllowedOrigins", "AllowedMethods", "AllowedHeaders", "ExposeHeaders", "MaxAgeSeconds"];
const TOKEN_KEY = "corsgate-admin-token";
const main = document.getElementById("main");

// ---------- small helpers ----------

/** An element with properties (`class`, `on*` listeners, anything else as attribute) and children. */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "value") el.value = value;
    else if (key === "checked") el.checked = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  return fill(el, ...children);
}

/** Replaces `el`'s children: nested arrays flattened, nothing for null, false or undefined. */
function fill(el, ...children) {
  el.replaceChildren();
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

function debounce(fn, ms) {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** "3 min ago", with the exact time as a tooltip. */
function when(iso) {
  if (!iso) return h("span", { class: "muted" }, "never");
  const seconds = (Date.parse(iso) - Date.now()) / 1000;
  const units = [["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]];
  const [unit, size] = units.find(([, s]) => Math.abs(seconds) >= s) || units[3];
  const text = new Intl.RelativeTimeFormat("en", { numeric: "auto" }).format(Math.round(seconds / size), unit);
  return h("span", { title: iso }, text);
}

function lines(text) {
  return text.split("\n").map((line) => line.trim()).filter((line) => line !== "");
}

/** A rule with every field present, as the form and comparisons want it. */
function normalized(rule) {
  return {
    ID: rule.ID ?? "",
    AllowedOrigins: rule.AllowedOrigins ?? [],
    AllowedMethods: rule.AllowedMethods ?? [],
    AllowedHeaders: rule.AllowedHeaders ?? [],
    ExposeHeaders: rule.ExposeHeaders ?? [],
    MaxAgeSeconds: rule.MaxAgeSeconds === undefined || rule.MaxAgeSeconds === null ? "" : String(rule.MaxAgeSeconds),
  };
}

/** A rule as the API takes it (the AWS CLI's JSON form): empty fields left out. */
function outgoing(rule) {
  const out = { AllowedOrigins: rule.AllowedOrigins, AllowedMethods: rule.AllowedMethods };
  if (rule.ID !== "") out.ID = rule.ID;
  if (rule.AllowedHeaders.length) out.AllowedHeaders = rule.AllowedHeaders;
  if (rule.ExposeHeaders.length) out.ExposeHeaders = rule.ExposeHeaders;
  if (rule.MaxAgeSeconds !== "") out.MaxAgeSeconds = rule.MaxAgeSeconds;
  return out;
}

function sameRules(a, b) {
  return JSON.stringify(a.map(normalized)) === JSON.stringify(b.map(normalized));
}

// ---------- the admin API ----------

/** GET (no body) or POST (JSON body) to the admin API; asks for the token when the listener wants one. */
async function api(path, body) {
  const init = { headers: {} };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) init.headers.Authorization = "Bearer " + token;
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    return { status: 0, ok: false, data: { error: "The admin listener did not answer: " + error.message } };
  }
  if (response.status === 401) {
    await askForToken(Boolean(token));
    return api(path, body);
  }
  let data;
  try {
    data = await response.json();
  } catch {
    data = { error: `${response.status} ${response.statusText}` };
  }
  return { status: response.status, ok: response.ok, data };
}

/** Asks once for the token, however many calls were refused at the same time. */
let tokenAsked = null;
function askForToken(wasWrong) {
  if (tokenAsked) return tokenAsked;
  const dialog = document.getElementById("token-dialog");
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  input.placeholder = wasWrong ? "that token was refused; try again" : "";
  tokenAsked = new Promise((resolve) => {
    form.onsubmit = (event) => {
      event.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      dialog.close();
      tokenAsked = null;
      resolve();
    };
    input.value = "";
    dialog.showModal();
  });
  return tokenAsked;
}

function fatal(message) {
  fill(main, h("div", { class: "banner error", role: "alert" }, message));
}

// ---------- issues (problems and lints, from the server) ----------

function issueItem(issue, withPlace) {
  const isProblem = Boolean(issue.code);
  const place = [];
  if (withPlace && issue.line) place.push(`${issue.line}:${issue.col}`);
  if (withPlace && issue.rule) place.push(`rule #${issue.rule}`);
  return h("li", {
    class: "issue " + (isProblem ? "error" : "warning"),
    "data-code": issue.code,
    "data-kind": issue.kind,
    "data-field": issue.field,
  },
  h("span", { class: "code" }, isProblem ? issue.code : "warning"),
  place.length ? h("span", { class: "where" }, place.join(" · ")) : null,
  h("span", {}, issue.message));
}

function issuesOf(judged) {
  return judged ? [...judged.problems, ...judged.lints] : [];
}

// ---------- page: routes ----------

function stateBadge(state) {
  const badges = {
    enabled: ["ok", "enabled"],
    "not-configured": ["off", "CORS off"],
    "no-such-bucket": ["warn", "no such bucket"],
    "not-loaded": ["error", "not loaded"],
  };
  const [kind, text] = badges[state] || ["off", state || "—"];
  return h("span", { class: "badge " + kind }, text);
}

function healthCell(rules) {
  const out = [];
  if (rules.last_error) {
    out.push(h("div", { class: "issue error" }, h("span", { class: "code" }, "error"), h("span", {}, rules.last_error.message.split("\n")[0])));
  }
  for (const lint of rules.lints || []) out.push(h("div", { class: "issue warning" }, h("span", { class: "code" }, "warning"), h("span", {}, lint.message)));
  return out.length ? out : h("span", { class: "muted" }, "none");
}

function sourceText(route) {
  const source = route.source;
  switch (route.kind) {
    case "file": return ["File ", h("code", {}, source.file)];
    case "bucket": return ["Bucket ", h("code", {}, source.bucket), h("span", { class: "muted" }, ` · polled every ${source.poll}`)];
    case "s3": {
      const s3 = source.s3;
      return ["S3 endpoint ", h("span", { class: "muted" }, `· ${s3.addressing}-style · ${s3.region} · ${s3.signed ? "signed" : "unsigned"} · buckets polled every ${s3.poll}`)];
    }
    default: return [h("span", { class: "muted" }, "none (CORS off)")];
  }
}

async function routesPage() {
  document.title = "Routes · corsgate admin";
  const { ok, data } = await api("/-/api/routes");
  if (!ok) return fatal(data.error);
  const rows = [];
  for (const route of data.routes) {
    const rules = route.rules || {};
    const edit = `/ui/routes/${route.route}`;
    rows.push(h("tr", { "data-route": route.route },
      h("td", { class: "num" }, route.route),
      h("td", {}, h("div", { class: "values" }, route.hosts.map((host) => h("span", { class: "chip" }, host)))),
      h("td", {}, h("code", {}, route.origin)),
      h("td", {}, sourceText(route)),
      h("td", {}, route.kind === "s3" ? h("span", { class: "muted" }, "per bucket") : stateBadge(rules.state)),
      h("td", {}, route.kind === "s3" ? "" : rules.generation ?? "—"),
      h("td", { class: "when" }, route.kind === "s3" ? "" : when(rules.changed_at)),
      h("td", {}, route.kind === "s3" ? "" : healthCell(rules)),
      h("td", { class: "actions" }, route.kind === "s3" ? null : h("a", { class: "button", href: edit }, route.editable ? "Edit rules" : "View"))));
    if (route.kind === "s3") {
      for (const bucket of route.buckets) {
        const b = bucket.rules;
        rows.push(h("tr", { class: "sub" },
          h("td", {}, ""),
          h("td", { colspan: 3 }, "Bucket ", h("code", {}, bucket.bucket)),
          h("td", {}, stateBadge(b.state)),
          h("td", {}, b.generation ?? "—"),
          h("td", { class: "when" }, when(b.changed_at)),
          h("td", {}, healthCell(b)),
          h("td", { class: "actions" }, h("a", { class: "button", href: `${edit}?bucket=${encodeURIComponent(bucket.bucket)}` }, "Edit rules"))));
      }
      const name = h("input", { type: "text", placeholder: "bucket name", "aria-label": "Bucket name" });
      const open = (event) => {
        event.preventDefault();
        if (name.value.trim()) location.href = `${edit}?bucket=${encodeURIComponent(name.value.trim())}`;
      };
      rows.push(h("tr", { class: "sub" }, h("td", {}, ""), h("td", { colspan: 8 },
        h("form", { class: "inline-open", onsubmit: open }, h("span", { class: "muted" }, "Edit a bucket's rules:"), name, h("button", { type: "submit" }, "Open")))));
    }
  }
  fill(main, 
    h("div", { class: "page-head" },
      h("h1", {}, "Routes"),
      h("p", { class: "muted" }, "Each route's hosts, origin and the CORS rules it answers with. Open a route to edit its rules, try requests against them and apply them.")),
    h("div", { class: "card" }, h("table", { id: "routes" },
      h("thead", {}, h("tr", {}, ["#", "Hosts", "Origin", "Rules source", "State", "Generation", "Last change", "Errors and warnings", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows))));
}

// ---------- page: a route's rules ----------

/** Everything the editor knows. */
const editor = {
  route: 0,
  bucket: null,
  info: null, // the rules in force, as GET .../rules answered
  draft: [], // the rules being edited, in S3 order, normalized
  selected: -1,
  fromXml: false, // the XML text, not the form, is the draft's last word
  xmlText: "",
  judged: null, // the server's verdict on the draft
  seq: 0,
  tab: "rules",
  stale: null, // { edited, current } when an apply found newer rules in force
  staleInfo: null, // those newer rules
  applied: null, // what the last apply did
  applyError: null,
  tryRequest: { method: "OPTIONS", path: "/object", origin: "", acrm: "GET", acrh: "", extra: "" },
  explained: null,
};

function draftBody() {
  return editor.fromXml ? { xml: editor.xmlText } : { rules: editor.draft.map(outgoing) };
}

function rulesPath(suffix) {
  const query = editor.bucket ? `?bucket=${encodeURIComponent(editor.bucket)}` : "";
  return `/-/api/routes/${editor.route}/${suffix}${query}`;
}

async function editorPage(route, bucket) {
  editor.route = route;
  editor.bucket = bucket;
  const { ok, data } = await api(rulesPath("rules"));
  if (!ok) return fatal(data.error);
  loadInfo(data);
  editor.tab = ["rules", "try", "apply"].includes(location.hash.slice(1)) ? location.hash.slice(1) : "rules";
  window.addEventListener("hashchange", () => {
    editor.tab = location.hash.slice(1) || "rules";
    drawEditor();
  });
  drawEditor();
  validate();
}

function loadInfo(info) {
  editor.info = info;
  editor.draft = info.rules.map(normalized);
  editor.selected = editor.draft.length ? 0 : -1;
  editor.fromXml = false;
  editor.stale = null;
  editor.staleInfo = null;
  document.title = `${editor.bucket ? "Bucket " + editor.bucket : "Route " + info.route} · corsgate admin`;
}

function drawEditor() {
  const info = editor.info;
  const title = editor.bucket ? `Rules of bucket ${editor.bucket}` : `Rules of route ${info.route}`;
  const tab = (id, text) => h("a", { href: "#" + id, class: editor.tab === id ? "active" : null, id: "tab-" + id }, text);
  const panels = { rules: rulesTab, try: tryTab, apply: applyTab };
  fill(main, 
    h("div", { class: "crumbs" }, h("a", { href: "/" }, "Routes"), ` › Route ${info.route}`, editor.bucket ? ` › ${editor.bucket}` : ""),
    h("div", { class: "page-head" },
      h("h1", {}, title),
      h("div", { class: "meta" },
        h("span", {}, "Hosts ", info.hosts.map((host) => h("span", { class: "chip" }, host))),
        h("span", {}, "Origin ", h("b", {}, info.origin)),
        h("span", {}, "Source ", h("b", {}, info.writes_to || "none")),
        h("span", {}, "Generation ", h("b", { id: "generation" }, info.generation)),
        h("span", {}, "Changed ", when(info.changed_at)),
        stateBadge(info.state))),
    info.last_error ? h("div", { class: "banner error" }, "The last load failed: ", info.last_error.message) : null,
    info.editable ? null : h("div", { class: "banner info" }, "This route has no rules file or bucket: the rules can be tried here but not applied."),
    h("nav", { class: "tabs" }, tab("rules", "Rules"), tab("try", "Try a request"), tab("apply", "Apply"), h("span", { class: "status", id: "draft-status" })),
    h("div", { id: "panel" }, panels[editor.tab]()));
  drawStatus();
  if (editor.tab === "try") explain();
}

function drawStatus() {
  const el = document.getElementById("draft-status");
  if (!el) return;
  const judged = editor.judged;
  const changed = !sameRules(editor.draft, editor.info.rules) || editor.fromXml;
  const parts = [];
  if (!judged) parts.push(h("span", { class: "badge off" }, "checking…"));
  else if (judged.valid) parts.push(h("span", { class: "badge ok" }, "valid"));
  else parts.push(h("span", { class: "badge error" }, `${judged.problems.length} problem${judged.problems.length === 1 ? "" : "s"}`));
  if (judged && judged.lints.length) parts.push(" ", h("span", { class: "badge warn" }, `${judged.lints.length} warning${judged.lints.length === 1 ? "" : "s"}`));
  parts.push(" ", h("span", { class: "muted" }, changed ? `draft differs from generation ${editor.info.generation}` : "no changes"));
  fill(el, parts);
}

// ----- the Rules tab -----

function rulesTab() {
  return h("div", { class: "columns" },
    h("div", {},
      h("section", { class: "card" },
        h("header", {}, h("h2", {}, "Rules, in the order S3 evaluates them"), h("span", { class: "spacer" }),
          h("button", { class: "primary", id: "add-rule", onclick: addRule }, "Add rule")),
        h("div", { id: "rules-table" }, rulesTable())),
      h("section", { class: "card", id: "rule-form" }, ruleForm())),
    h("section", { class: "card" },
      h("header", {}, h("h2", {}, "XML"), h("span", { class: "spacer" }), h("span", { class: "muted" }, "edit either side: they stay in sync")),
      h("div", { class: "body" },
        h("textarea", { id: "xml", class: "code xml", spellcheck: "false", "aria-label": "The rules as S3 XML", oninput: onXmlInput }, editor.fromXml ? editor.xmlText : editor.judged?.xml ?? editor.info.xml ?? ""),
        h("ul", { class: "issues", id: "all-issues" }, issuesOf(editor.judged).map((issue) => issueItem(issue, true))))));
}

function rulesTable() {
  if (!editor.draft.length) return h("div", { class: "empty" }, "No rules: every preflight is refused. Add one.");
  const countFor = (index) => {
    const own = issuesOf(editor.judged).filter((issue) => issue.rule === index + 1);
    const errors = own.filter((issue) => issue.code).length;
    const warnings = own.length - errors;
    return [errors ? h("span", { class: "badge error" }, errors) : null, " ", warnings ? h("span", { class: "badge warn" }, warnings) : null];
  };
  const chips = (values, cls) => h("div", { class: "values" }, values.map((v) => h("span", { class: "chip " + (cls || "") }, v)));
  const last = editor.draft.length - 1;
  return h("table", { id: "rules" },
    h("thead", {}, h("tr", {}, ["#", "ID", "Allowed origins", "Methods", "Allowed headers", "Expose", "Max age", "", ""].map((t) => h("th", {}, t)))),
    h("tbody", {}, editor.draft.map((rule, i) => h("tr", {
      class: "clickable" + (i === editor.selected ? " selected" : ""),
      "data-rule": i + 1,
      onclick: () => select(i),
    },
    h("td", { class: "num" }, i + 1),
    h("td", {}, rule.ID || h("span", { class: "muted" }, "—")),
    h("td", {}, chips(rule.AllowedOrigins)),
    h("td", {}, chips(rule.AllowedMethods, "method")),
    h("td", {}, chips(rule.AllowedHeaders)),
    h("td", {}, chips(rule.ExposeHeaders)),
    h("td", {}, rule.MaxAgeSeconds === "" ? h("span", { class: "muted" }, "—") : rule.MaxAgeSeconds),
    h("td", {}, countFor(i)),
    h("td", { class: "actions" },
      h("button", { class: "icon", title: "Move up", "aria-label": "Move up", disabled: i === 0, onclick: (e) => { e.stopPropagation(); move(i, -1); } }, "↑"), " ",
      h("button", { class: "icon", title: "Move down", "aria-label": "Move down", disabled: i === last, onclick: (e) => { e.stopPropagation(); move(i, 1); } }, "↓"), " ",
      h("button", { class: "icon danger", title: "Delete", "aria-label": "Delete", onclick: (e) => { e.stopPropagation(); remove(i); } }, "✕"))))));
}

function ruleForm() {
  const i = editor.selected;
  if (i < 0) return h("div", { class: "empty" }, "Select a rule to edit it, or add one.");
  const rule = editor.draft[i];
  const field = (name, label, input, hint) => h("div", { class: "field", "data-field": name },
    h("label", { for: "f-" + name }, label), input, hint ? h("div", { class: "hint" }, hint) : null, h("ul", { class: "issues" }));
  const text = (name, value, placeholder) => h("input", { type: "text", id: "f-" + name, value, placeholder, oninput: onFormInput });
  const list = (name, values, placeholder) => h("textarea", { id: "f-" + name, rows: Math.max(2, values.length + 1), placeholder, oninput: onFormInput }, values.join("\n"));
  return [
    h("header", {}, h("h2", {}, `Rule #${i + 1}`), h("span", { class: "spacer" }), h("span", { class: "muted" }, "changes go to the draft as you type")),
    h("div", { class: "body" },
      h("ul", { class: "issues", id: "rule-issues" }),
      h("div", { class: "field-row" },
        field("ID", "ID", text("ID", rule.ID, "optional, e.g. uploads"), "At most 255 characters."),
        field("MaxAgeSeconds", "Access-Control-Max-Age", text("MaxAgeSeconds", rule.MaxAgeSeconds, "seconds, e.g. 3000"), "How long browsers may cache the preflight.")),
      field("AllowedOrigins", "Allowed origins", list("AllowedOrigins", rule.AllowedOrigins, "https://app.example.com"), "One per line; at most one * each, e.g. https://*.example.com."),
      h("div", { class: "field", "data-field": "AllowedMethods" },
        h("span", { class: "label" }, "Allowed methods"),
        h("div", { class: "checks", id: "f-AllowedMethods" }, METHODS.map((m) => h("label", {},
          h("input", { type: "checkbox", value: m, checked: rule.AllowedMethods.includes(m), onchange: onFormInput }), m))),
        h("ul", { class: "issues" })),
      h("div", { class: "field-row" },
        field("AllowedHeaders", "Allowed headers", list("AllowedHeaders", rule.AllowedHeaders, "content-type\nx-amz-*"), "Request headers a preflight may name; one per line."),
        field("ExposeHeaders", "Expose headers", list("ExposeHeaders", rule.ExposeHeaders, "ETag"), "Response headers scripts may read; one per line."))),
  ];
}

/** The selected rule, as the form now says. */
function readForm() {
  const value = (name) => document.getElementById("f-" + name).value;
  const methods = [...document.querySelectorAll("#f-AllowedMethods input:checked")].map((box) => box.value);
  return {
    ID: value("ID").trim(),
    AllowedOrigins: lines(value("AllowedOrigins")),
    AllowedMethods: methods,
    AllowedHeaders: lines(value("AllowedHeaders")),
    ExposeHeaders: lines(value("ExposeHeaders")),
    MaxAgeSeconds: value("MaxAgeSeconds").trim(),
  };
}

function onFormInput() {
  editor.draft[editor.selected] = readForm();
  editor.fromXml = false;
  editor.applied = null;
  redrawTable();
  validateSoon();
}

function onXmlInput(event) {
  editor.fromXml = true;
  editor.applied = null;
  editor.xmlText = event.target.value;
  validateSoon();
}

function redrawTable() {
  const el = document.getElementById("rules-table");
  if (el) fill(el, rulesTable());
}

function redrawForm() {
  const el = document.getElementById("rule-form");
  if (el) fill(el, ruleForm());
  drawIssues();
}

function select(i) {
  editor.selected = i;
  redrawTable();
  redrawForm();
}

function addRule() {
  editor.draft.push(normalized({ AllowedOrigins: [], AllowedMethods: ["GET"] }));
  editor.fromXml = false;
  select(editor.draft.length - 1);
  document.getElementById("f-AllowedOrigins").focus();
  validateSoon();
}

function move(i, by) {
  const [rule] = editor.draft.splice(i, 1);
  editor.draft.splice(i + by, 0, rule);
  editor.fromXml = false;
  select(i + by);
  validateSoon();
}

function remove(i) {
  editor.draft.splice(i, 1);
  editor.fromXml = false;
  select(Math.min(i, editor.draft.length - 1));
  validateSoon();
}

/** Each issue next to what it is about: the selected rule's beside its fields, all of them under the XML. */
function drawIssues() {
  const issues = issuesOf(editor.judged);
  const all = document.getElementById("all-issues");
  if (all) all.replaceChildren(...issues.map((issue) => issueItem(issue, true)));
  const ruleIssues = document.getElementById("rule-issues");
  if (!ruleIssues) return;
  const own = issues.filter((issue) => issue.rule === editor.selected + 1);
  ruleIssues.replaceChildren(...own.filter((issue) => !FIELDS.includes(issue.field)).map((issue) => issueItem(issue, false)));
  for (const field of document.querySelectorAll("#rule-form .field")) {
    const mine = own.filter((issue) => issue.field === field.dataset.field);
    field.querySelector("ul.issues").replaceChildren(...mine.map((issue) => issueItem(issue, false)));
    field.classList.toggle("has-error", mine.some((issue) => issue.code));
  }
}

const validateSoon = debounce(validate, 200);

/** Asks the server to judge the draft; the answer updates the other side of the editor. */
async function validate() {
  const seq = ++editor.seq;
  const fromXml = editor.fromXml;
  const { ok, data } = await api("/-/api/validate", { draft: draftBody(), route: editor.route, bucket: editor.bucket });
  if (seq !== editor.seq) return; // a newer edit is being judged
  if (!ok) {
    editor.judged = { valid: false, problems: [{ code: "Error", message: data.error }], lints: [] };
  } else {
    editor.judged = data;
    if (fromXml && data.rules) {
      // The XML was readable: the form shows what it says.
      editor.draft = data.rules.map(normalized);
      editor.selected = Math.min(Math.max(editor.selected, 0), editor.draft.length - 1);
      redrawTable();
      redrawForm();
    } else if (!fromXml) {
      const xml = document.getElementById("xml");
      if (xml && data.xml !== null) xml.value = data.xml;
    }
  }
  redrawTable();
  drawIssues();
  drawStatus();
  if (editor.tab === "apply") fill(document.getElementById("panel"), applyTab());
}

// ----- the Try tab -----

function tryTab() {
  const req = editor.tryRequest;
  const update = (key) => (event) => {
    req[key] = event.target.value;
    explainSoon();
  };
  const field = (label, input) => h("div", { class: "field" }, h("label", {}, label, input));
  const choice = (key, options) => h("select", { id: "try-" + key, onchange: update(key) }, options.map((o) => h("option", { value: o, selected: req[key] === o }, o || "(none)")));
  return h("div", { class: "columns try" },
    h("section", { class: "card" },
      h("header", {}, h("h2", {}, "Request")),
      h("form", { class: "body", onsubmit: (e) => { e.preventDefault(); explain(); } },
        field("Method", choice("method", ["OPTIONS", "GET", "HEAD", "PUT", "POST", "DELETE"])),
        field("Path", h("input", { type: "text", id: "try-path", value: req.path, oninput: update("path") })),
        field("Origin", h("input", { type: "text", id: "try-origin", value: req.origin, placeholder: "https://app.example.com", oninput: update("origin") })),
        field("Access-Control-Request-Method", choice("acrm", ["", ...METHODS])),
        field("Access-Control-Request-Headers", h("input", { type: "text", id: "try-acrh", value: req.acrh, placeholder: "content-type, x-amz-meta-owner", oninput: update("acrh") })),
        field("Other headers", h("textarea", { id: "try-extra", rows: 2, placeholder: "Name: value", oninput: update("extra") }, req.extra)),
        h("button", { class: "primary", type: "submit", id: "explain" }, "Explain"))),
    h("div", { id: "explained" }, explainedView()));
}

const explainSoon = debounce(explain, 250);

async function explain() {
  const req = editor.tryRequest;
  const headers = [];
  if (req.origin.trim()) headers.push(["Origin", req.origin.trim()]);
  if (req.acrm) headers.push(["Access-Control-Request-Method", req.acrm]);
  if (req.acrh.trim()) headers.push(["Access-Control-Request-Headers", req.acrh.trim()]);
  for (const line of lines(req.extra)) {
    const colon = line.indexOf(":");
    headers.push(colon < 0 ? [line, ""] : [line.slice(0, colon), line.slice(colon + 1)]);
  }
  const { ok, data } = await api("/-/api/explain", {
    draft: draftBody(),
    route: editor.route,
    bucket: editor.bucket,
    request: { method: req.method, path: req.path, headers },
  });
  editor.explained = ok ? data : { error: data.error };
  const el = document.getElementById("explained");
  if (el) fill(el, explainedView());
}

function explainedView() {
  const result = editor.explained;
  if (!result) return h("div", { class: "card" }, h("div", { class: "empty" }, "Fill in a request and press Explain."));
  if (result.error) return h("div", { class: "banner error" }, result.error);
  const change = result.change;
  const tone = { "newly-denied": "warn", "newly-allowed": "info", "different-headers": "info", same: "ok" };
  return [
    change ? h("div", { class: "banner " + (tone[change.kind] || "info"), id: "change", "data-kind": change.kind }, change.summary) : null,
    h("div", { class: "columns even" },
      reportCard("Draft", "draft-report", result.draft.report, result.draft.valid ? null : "The draft is not valid: fix its problems on the Rules tab."),
      reportCard(`In force · generation ${result.live.generation ?? "—"}`, "live-report", result.live.report, result.live.report ? null : "No rules are loaded.")),
  ];
}

function reportCard(title, id, report, missing) {
  const body = [];
  if (!report) body.push(h("div", { class: "empty" }, missing));
  else {
    const status = report.status === null ? "forwarded to the origin" : report.status === 200 ? "200 OK" : `${report.status} ${report.error?.code ?? ""}`;
    const matched = report.matched_rule ? ` · rule #${report.matched_rule} matched` : "";
    body.push(h("div", { class: "answer-line " + (report.allowed ? "allowed" : "denied") }, (report.allowed ? "Allowed · " : "Denied · ") + status + matched));
    if (report.precondition) body.push(h("p", { class: "muted" }, "No rule considered: " + report.precondition));
    body.push(h("ol", { class: "verdicts" }, report.verdicts.map((v) => h("li", {},
      h("span", { class: "rule" }, `Rule #${v.rule}${v.id ? " " + v.id : ""}`),
      h("span", { class: v.verdict === "matched" ? "matched" : "missed" }, v.message)))));
    body.push(h("pre", { class: "report" }, report.text));
  }
  return h("section", { class: "card", id }, h("header", {}, h("h2", {}, title)), h("div", { class: "body" }, body));
}

// ----- the Apply tab -----

function applyTab() {
  const info = editor.info;
  const judged = editor.judged;
  const changed = !sameRules(editor.draft, info.rules) || editor.fromXml;
  // Over a stale generation an apply is refused: the editor first chooses which rules to keep.
  const canApply = info.editable && judged && judged.valid && changed && !editor.stale;
  const impact = judged?.impact || [];
  const live = editor.stale ? editor.staleInfo : info;
  return h("div", {},
    editor.stale ? staleBanner() : null,
    editor.applied ? h("div", { class: "banner ok", id: "applied" }, editor.applied) : null,
    editor.applyError ? h("div", { class: "banner error", id: "apply-error", role: "alert" }, editor.applyError) : null,
    h("section", { class: "card" },
      h("header", {}, h("h2", {}, info.editable ? `Apply to ${info.writes_to}` : "Nothing to apply to")),
      h("div", { class: "body" },
        h("dl", { class: "summary" },
          h("dt", {}, "Edited from"), h("dd", {}, `generation ${info.generation}`),
          h("dt", {}, "Draft"), h("dd", {}, !judged ? "checking…" : judged.valid
            ? h("span", { class: "badge ok" }, "valid")
            : h("span", { class: "badge error" }, `${judged.problems.length} problem(s): fix them on the Rules tab`)),
          h("dt", {}, "Warnings"), h("dd", {}, judged && judged.lints.length
            ? h("ul", { class: "issues" }, judged.lints.map((lint) => issueItem(lint, true)))
            : h("span", { class: "muted" }, "none")),
          h("dt", {}, "For the origins the rules name"), h("dd", { id: "impact" }, impact.length
            ? h("ul", { class: "plain" }, impact.map((c) => h("li", {}, c.change === "newly-denied" ? "newly denies " : "newly allows ", h("code", {}, c.origin), " ", h("b", {}, c.method))))
            : h("span", { class: "muted" }, changed ? "no preflight answer changes" : "no changes"))),
        h("button", { class: "primary", id: "apply", disabled: !canApply, onclick: apply }, "Apply"),
        " ",
        h("span", { class: "muted" }, info.source.kind === "file"
          ? "The file is replaced atomically and reloaded."
          : "The rules are stored with PUT ?cors, then read back."))),
    h("div", { class: "columns even" },
      h("section", { class: "card" }, h("header", {}, h("h2", {}, `In force · generation ${live.generation}`)), h("div", { class: "body" }, h("pre", { class: "xml", id: "live-xml" }, live.xml ?? "(no CORS configuration)"))),
      h("section", { class: "card" }, h("header", {}, h("h2", {}, "Draft")), h("div", { class: "body" }, h("pre", { class: "xml", id: "draft-xml" }, editor.fromXml ? editor.xmlText : judged?.xml ?? "")))));
}

function staleBanner() {
  const { edited, current } = editor.stale;
  return h("div", { class: "banner warn", id: "stale" },
    `The rules changed since you loaded them: generation ${current} is in force, your draft was edited from generation ${edited}. The rules in force are shown below; nothing was applied.`,
    h("div", { class: "actions" },
      h("button", { onclick: () => { loadInfo(editor.staleInfo); drawEditor(); validate(); } }, "Discard my draft, edit the newer rules"),
      h("button", { onclick: () => { editor.info = editor.staleInfo; editor.stale = null; drawEditor(); validate(); } }, `Keep my draft, apply it over generation ${current}`)));
}

async function apply() {
  const button = document.getElementById("apply");
  button.disabled = true;
  const edited = editor.info.generation;
  const { status, ok, data } = await api(rulesPath("apply"), { draft: draftBody(), generation: edited });
  editor.applied = null;
  editor.applyError = null;
  if (ok) {
    loadInfo(data.rules);
    editor.applied = data.in_force
      ? `Applied to ${data.target}: generation ${data.previous_generation} → ${data.generation}. Preflights follow the new rules now.`
      : `Stored in ${data.target}; corsgate has not read the new rules back yet, they take over at the next poll.`;
  } else if (status === 409 && data.rules) {
    editor.stale = { edited, current: data.rules.generation };
    editor.staleInfo = data.rules;
  } else {
    editor.applyError = data.error;
  }
  drawEditor();
  validate();
}

// ---------- start ----------

document.getElementById("listener").textContent = location.host;
const routeMatch = location.pathname.match(/^\/ui\/routes\/(\d+)$/);
if (routeMatch) editorPage(Number(routeMatch[1]), new URLSearchParams(location.search).get("bucket"));
else routesPage();
