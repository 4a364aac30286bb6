// The API reference, rendered from /openapi.json in the browser. No
// dependencies, no inline script (works under the pages' strict CSP), and
// every text from the document goes in through textContent.
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return node;
}

function refName(ref) { return ref.split("/").pop(); }

function typeOf(schema) {
  if (!schema) return "any";
  if (schema.$ref) {
    const name = refName(schema.$ref);
    return el("a", { href: "#schema-" + name }, name);
  }
  for (const key of ["oneOf", "anyOf", "allOf"]) {
    if (schema[key]) {
      const span = el("span");
      schema[key].forEach((s, i) => { if (i) span.append(key === "allOf" ? " & " : " | "); span.append(typeOf(s)); });
      return span;
    }
  }
  let t = Array.isArray(schema.type) ? schema.type.join(" | ") : (schema.type || "any");
  if (t.startsWith("array") && schema.items) {
    const span = el("span", {}, "array of ");
    span.append(typeOf(schema.items));
    return span;
  }
  if (schema.format) t += " (" + schema.format + ")";
  if (schema.enum) t += ": " + schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  return t;
}

function propertiesTable(schema) {
  const props = schema.properties || {};
  const required = new Set(schema.required || []);
  const rows = Object.entries(props).map(([name, p]) =>
    el("tr", {}, el("td", {}, el("code", {}, name)), el("td", {}, typeOf(p)),
      el("td", {}, required.has(name) ? "yes" : ""), el("td", {}, p.description || "")));
  if (!rows.length) return el("p", {}, typeOf(schema));
  return el("table", {}, el("tr", {}, el("th", {}, "field"), el("th", {}, "type"), el("th", {}, "required"), el("th", {}, "meaning")), ...rows);
}

function content(body) {
  if (!body || !body.content) return null;
  const out = el("div");
  for (const [type, media] of Object.entries(body.content)) {
    const line = el("p", {}, el("code", {}, type), " ");
    if (media.schema) line.append(typeOf(media.schema));
    out.append(line);
  }
  return out;
}

function operation(path, method, op) {
  const summary = el("summary", {},
    el("span", { class: "method " + method }, method), " ",
    el("span", { class: "path" }, path),
    el("span", { class: "summary" }, op.summary || ""));
  const body = el("div");
  if (op.description && op.description !== op.summary) body.append(el("p", {}, op.description));
  const secured = !(op.security && op.security.length === 1 && Object.keys(op.security[0]).length === 0);
  body.append(el("p", {}, secured ? "Needs Authorization: Bearer <token>." : "No token needed."));
  if (op.parameters && op.parameters.length) {
    body.append(el("h4", {}, "Parameters"), el("table", {},
      el("tr", {}, el("th", {}, "name"), el("th", {}, "in"), el("th", {}, "type"), el("th", {}, "required"), el("th", {}, "meaning")),
      ...op.parameters.map((p) => el("tr", {}, el("td", {}, el("code", {}, p.name)), el("td", {}, p.in),
        el("td", {}, typeOf(p.schema)), el("td", {}, p.required ? "yes" : ""), el("td", {}, p.description || "")))));
  }
  if (op.requestBody) body.append(el("h4", {}, "Request body"), content(op.requestBody));
  if (op.responses) {
    body.append(el("h4", {}, "Responses"), el("table", {},
      el("tr", {}, el("th", {}, "status"), el("th", {}, "meaning"), el("th", {}, "body")),
      ...Object.entries(op.responses).map(([status, r]) =>
        el("tr", {}, el("td", {}, status), el("td", {}, r.description || ""), el("td", {}, content(r))))));
  }
  const id = (method + "-" + path).replace(/[^a-zA-Z0-9]+/g, "-");
  return el("details", { class: "op", id }, summary, body);
}

function render(doc) {
  document.getElementById("title").textContent = (doc.info && doc.info.title) || "API reference";
  document.title = document.getElementById("title").textContent;
  const desc = document.getElementById("description");
  if (doc.info && doc.info.description) desc.append(el("p", {}, doc.info.description));
  const ops = document.getElementById("operations");
  ops.replaceChildren();
  const toc = el("ul");
  const byTag = new Map();
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const [method, op] of Object.entries(item)) {
      if (!["get", "post", "put", "patch", "delete"].includes(method)) continue;
      const tag = (op.tags && op.tags[0]) || "other";
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push([path, method, op]);
    }
  }
  for (const [tag, list] of byTag) {
    ops.append(el("h2", { id: "tag-" + tag }, tag));
    for (const [path, method, op] of list) {
      const node = operation(path, method, op);
      ops.append(node);
      toc.append(el("li", {}, el("a", { href: "#" + node.id }, method.toUpperCase() + " " + path)));
    }
  }
  document.getElementById("toc").append(toc);
  const components = document.getElementById("components");
  const schemas = (doc.components && doc.components.schemas) || {};
  for (const [name, schema] of Object.entries(schemas)) {
    components.append(el("div", { class: "schema", id: "schema-" + name },
      el("h3", {}, name), schema.description ? el("p", {}, schema.description) : null, propertiesTable(schema)));
  }
  if (location.hash) {
    const target = document.getElementById(location.hash.slice(1));
    if (target) { if (target.tagName === "DETAILS") target.open = true; target.scrollIntoView(); }
  }
}

fetch("/openapi.json")
  .then((r) => { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
  .then(render)
  .catch((e) => { document.getElementById("loading").textContent = "Cannot load /openapi.json: " + e.message; });
