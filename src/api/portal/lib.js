// Shared helpers of the portal's pages: the API client (every call goes to
// the public /v1 API with the visitor's token), DOM building without HTML
// strings, and small widgets (subscription picker, chart, field errors).

const TOKEN_KEY = "rewardhooks.portal.token";

export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY),
  set: (token) => sessionStorage.setItem(TOKEN_KEY, token),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

/** The token is no longer accepted (401): the app shows the expired page. */
export class SessionExpired extends Error {}

/** The API refused a call: `code` and `message` from its error body. */
export class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Calls the API; answers the JSON body, or throws ApiFailure / SessionExpired. */
export async function api(method, path, body) {
  const headers = { authorization: `Bearer ${session.token()}` };
  const init = { method, headers };
  if (body !== undefined) {
    headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401) throw new SessionExpired("session expired");
  const text = await response.text();
  const json = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const error = (json && json.error) || {};
    throw new ApiFailure(response.status, error.code || "error", error.message || `HTTP ${response.status}`);
  }
  return json;
}

let openapi = null;
/** Whether the server offers `method path` (features that land later show up by themselves). */
export async function offers(method, path) {
  if (!openapi) openapi = fetch("/openapi.json").then((r) => r.json()).catch(() => ({ paths: {} }));
  const doc = await openapi;
  return Boolean(doc.paths && doc.paths[path] && doc.paths[path][method]);
}

let catalogCache = null;
/** The event catalog (types with schema and example). */
export function catalog() {
  if (!catalogCache) catalogCache = api("GET", "/v1/event-types").then((page) => page.data);
  return catalogCache;
}

/** Every subscription of the caller (all pages). */
export async function subscriptions() {
  let all = [];
  let cursor = null;
  do {
    const page = await api("GET", `/v1/subscriptions?limit=250${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    all = all.concat(page.data);
    cursor = page.next_cursor;
  } while (cursor);
  return all;
}

/**
 * Builds an element: h("button", {class: "primary", onclick: fn}, "Save").
 * Keys starting with "on" become listeners, `dataset`-free attributes are set
 * as attributes; children are nodes or text.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "value") el.value = value;
    else if (key === "checked") el.checked = Boolean(value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's content. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleString();
}

export function percent(rate) {
  return rate === null || rate === undefined ? "–" : `${(rate * 100).toFixed(1)}%`;
}

export function ms(value) {
  return value === null || value === undefined ? "–" : `${value} ms`;
}

/** A message line: kind is "ok" or "error". */
export function notice(kind, text) {
  return h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

/** Shows an error from a failed call in `where` (rethrows an expired session). */
export function showError(where, error) {
  if (error instanceof SessionExpired) throw error;
  fill(where, notice("error", error.message));
}

/**
 * A subscription picker: a labelled select of the caller's endpoints. Calls
 * `onpick(id)` with the chosen one (first, or `selected`) and on change.
 */
export async function pickSubscription(selected, onpick) {
  const subs = await subscriptions();
  if (subs.length === 0) {
    // Nothing to pick: the page's controls would have no endpoint to act on
    // (removed once the page has drawn them).
    setTimeout(() => document.querySelectorAll("#page form, #page .buttons").forEach((el) => el.remove()), 0);
    return h("p", { id: "no-endpoints" }, "No endpoints yet. ", h("a", { href: "#/endpoints/new" }, "Add one"), ".");
  }
  const current = subs.some((s) => s.id === selected) ? selected : subs[0].id;
  const select = h(
    "select",
    { id: "pick-subscription", onchange: () => onpick(select.value) },
    subs.map((s) => h("option", { value: s.id, selected: s.id === current }, `${s.url} (${s.id})`)),
  );
  queueMicrotask(() => onpick(current));
  return h("p", { class: "picker" }, h("label", { for: "pick-subscription" }, "Endpoint "), select);
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

/**
 * A small chart of a stats series: bars of attempts per bucket, the failed
 * part in red, and a line of p95 latency.
 */
export function chart(series) {
  const width = 120;
  const height = 28;
  const max = Math.max(1, ...series.map((b) => b.attempts));
  const maxMs = Math.max(1, ...series.map((b) => b.p95_ms || 0));
  const step = width / series.length;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "chart", role: "img" });
  const total = series.reduce((n, b) => n + b.attempts, 0);
  const ok = series.reduce((n, b) => n + b.success, 0);
  const title = svg("title", {});
  title.textContent = `${total} attempts, ${ok} succeeded`;
  root.append(title);
  series.forEach((b, i) => {
    const x = i * step + 0.5;
    const hAll = (b.attempts / max) * (height - 2);
    const hOk = (b.success / max) * (height - 2);
    if (b.attempts > b.success) root.append(svg("rect", { x, y: height - hAll, width: step - 1, height: hAll - hOk, class: "bar-failed" }));
    if (b.success > 0) root.append(svg("rect", { x, y: height - hOk, width: step - 1, height: hOk, class: "bar-ok" }));
  });
  const points = series
    .map((b, i) => (b.p95_ms === null ? null : `${(i + 0.5) * step},${height - 1 - (b.p95_ms / maxMs) * (height - 4)}`))
    .filter(Boolean);
  if (points.length > 1) root.append(svg("polyline", { points: points.join(" "), class: "latency" }));
  return root;
}

/** The API's error codes that belong to one form field. */
const FIELD_OF_CODE = {
  invalid_url: "url",
  invalid_event_types: "event_types",
  invalid_filter: "filter",
  invalid_rate_limit: "rate_limit",
  invalid_description: "description",
  invalid_headers: "headers",
};

/**
 * Shows an API error at its field (an element with id `err-<field>` in
 * `form`), or in `general` when no field owns it.
 */
export function fieldError(form, general, error) {
  if (error instanceof SessionExpired) throw error;
  form.querySelectorAll(".field-error").forEach((el) => fill(el));
  form.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
  const field = FIELD_OF_CODE[error.code];
  const slot = field && form.querySelector(`#err-${field}`);
  if (slot) {
    fill(slot, error.message);
    const input = form.querySelector(`[name="${field}"]`);
    if (input) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
    fill(general);
  } else {
    fill(general, notice("error", error.message));
  }
}

/** Pre-formatted JSON. */
export function json(value) {
  let text = value;
  if (typeof value === "string") {
    try {
      text = JSON.stringify(JSON.parse(value), null, 2);
    } catch {
      text = value;
    }
  } else {
    text = JSON.stringify(value, null, 2);
  }
  return h("pre", {}, text);
}
