// Endpoints: the list (status, circuit, 24 h success rate and p95 with a
// chart) and the create/edit form (catalog event types grouped by prefix, a
// filter checked against every catalog example, rate limit, custom headers,
// pause/resume, delete with confirmation).

import { api, catalog, chart, fieldError, fill, h, ms, notice, percent, showError, subscriptions } from "./lib.js";

export async function render(main, rest) {
  if (rest[0] === "new") return form(main, null);
  if (rest[0]) return form(main, await api("GET", `/v1/subscriptions/${encodeURIComponent(rest[0])}`));
  return list(main);
}

async function list(main) {
  const subs = await subscriptions();
  const body = h("tbody");
  fill(
    main,
    h("div", { class: "title-row" }, h("h2", {}, "Endpoints"), h("a", { class: "button primary", href: "#/endpoints/new", id: "new-endpoint" }, "Add endpoint")),
    subs.length === 0
      ? h("p", { id: "no-endpoints" }, "No endpoints yet.")
      : h(
          "div",
          { class: "scroll" },
          h(
            "table",
            { id: "endpoints" },
            h("thead", {}, h("tr", {}, ["Endpoint", "Status", "Circuit", "Success (24 h)", "p95", "Last 24 h", ""].map((t) => h("th", { scope: "col" }, t)))),
            body,
          ),
        ),
  );
  for (const sub of subs) {
    const rate = h("td", { "data-label": "24 h success" }, "…");
    const p95 = h("td", { "data-label": "p95" }, "…");
    const graph = h("td", {});
    body.append(
      h(
        "tr",
        { "data-id": sub.id },
        h("td", {}, h("a", { href: `#/endpoints/${sub.id}`, class: "endpoint-url" }, sub.url), h("div", { class: "muted" }, sub.description || sub.id)),
        h("td", {}, h("span", { class: `badge ${sub.status}` }, sub.status)),
        h("td", {}, h("span", { class: `badge circuit-${sub.circuit}` }, sub.circuit)),
        rate,
        p95,
        graph,
        h(
          "td",
          { class: "actions" },
          h("a", { href: `#/test?sub=${sub.id}` }, "Test"),
          " ",
          h("a", { href: `#/log?sub=${sub.id}` }, "Log"),
        ),
      ),
    );
    api("GET", `/v1/subscriptions/${sub.id}/stats?window=24h`)
      .then((s) => {
        fill(rate, percent(s.success_rate), h("div", { class: "muted" }, `${s.attempts} attempts`));
        fill(p95, ms(s.p95_ms));
        fill(graph, chart(s.series));
      })
      .catch((e) => showError(rate, e));
  }
}

/** Event types grouped by their first dot segment, each group with its wildcard. */
function typePicker(types, chosen) {
  const groups = new Map();
  for (const t of types) {
    const prefix = t.type.split(".")[0];
    if (!groups.has(prefix)) groups.set(prefix, []);
    groups.get(prefix).push(t);
  }
  const box = (value, label, description) =>
    h("label", { class: "check" }, h("input", { type: "checkbox", name: "event_types", value, checked: chosen.has(value) }), " ", h("code", {}, label), description ? h("span", { class: "muted" }, ` ${description}`) : null);
  return h(
    "div",
    { class: "types" },
    h("label", { class: "check" }, h("input", { type: "checkbox", name: "event_types", value: "*", checked: chosen.has("*") }), " ", h("code", {}, "*"), h("span", { class: "muted" }, " every type")),
    [...groups].map(([prefix, list]) =>
      h("fieldset", {}, h("legend", {}, prefix), box(`${prefix}.*`, `${prefix}.*`, "all of these"), list.map((t) => box(t.type, t.type, t.description))),
    ),
  );
}

function headerRow(name = "", value = "") {
  const row = h(
    "div",
    { class: "header-row" },
    h("input", { "aria-label": "Header name", class: "header-name", value: name, placeholder: "Authorization" }),
    h("input", { "aria-label": "Header value", class: "header-value", value, placeholder: "Bearer …" }),
    h("button", { type: "button", onclick: () => row.remove() }, "Remove"),
  );
  return row;
}

async function form(main, sub) {
  const types = await catalog();
  const chosen = new Set(sub ? sub.event_types : []);
  const general = h("div", { id: "form-error" });
  const filterChecks = h("ul", { id: "filter-checks", class: "checks", "aria-live": "polite" });
  const filter = h("textarea", { id: "filter", name: "filter", rows: 4, spellcheck: "false", placeholder: '{"data.new_tier": {"$in": ["gold", "platinum"]}}' }, sub && sub.filter ? JSON.stringify(sub.filter, null, 2) : "");
  const headers = h("div", { id: "headers" }, Object.entries((sub && sub.headers) || {}).map(([k, v]) => headerRow(k, v)));
  const field = (id, label, input, help) =>
    h("div", { class: "field" }, h("label", { for: id }, label), input, help ? h("div", { class: "help" }, help) : null, h("div", { class: "field-error", id: `err-${id}`, role: "alert" }));

  const el = h(
    "form",
    { id: "endpoint-form", novalidate: true, onsubmit: (e) => { e.preventDefault(); save(); } },
    field("url", "URL", h("input", { id: "url", name: "url", type: "url", value: sub ? sub.url : "", placeholder: "https://example.com/webhooks", required: true })),
    field("description", "Description", h("input", { id: "description", name: "description", value: sub ? sub.description || "" : "" })),
    h("fieldset", { class: "field" }, h("legend", {}, "Event types"), typePicker(types, chosen), h("div", { class: "field-error", id: "err-event_types", role: "alert" })),
    field("filter", "Filter (optional)", filter, "JSON: dotted path → condition over the webhook body, with $eq $ne $in $nin $gt $gte $lt $lte $exists. Below: does it match each catalog example?"),
    filterChecks,
    h(
      "fieldset",
      { class: "field" },
      h("legend", {}, "Rate limit (optional)"),
      h("label", { for: "per_second" }, "Per second "),
      h("input", { id: "per_second", name: "rate_limit", type: "number", min: 1, value: sub && sub.rate_limit ? sub.rate_limit.per_second : "" }),
      h("label", { for: "burst" }, " Burst "),
      h("input", { id: "burst", type: "number", min: 1, value: sub && sub.rate_limit ? sub.rate_limit.burst : "" }),
      h("div", { class: "field-error", id: "err-rate_limit", role: "alert" }),
    ),
    h(
      "fieldset",
      { class: "field", name: "headers" },
      h("legend", {}, "Custom headers (optional)"),
      h("div", { class: "help" }, "Sent with every webhook, e.g. your endpoint's own Authorization. Values are stored encrypted and shown redacted once saved; leave a redacted value as it is to keep it."),
      headers,
      h("button", { type: "button", id: "add-header", onclick: () => headers.append(headerRow()) }, "Add header"),
      h("div", { class: "field-error", id: "err-headers", role: "alert" }),
    ),
    h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary", id: "save" }, sub ? "Save" : "Create endpoint"), h("a", { href: "#/endpoints" }, "Cancel")),
    general,
  );

  let pending = 0;
  const checkFilter = async () => {
    const mine = ++pending;
    const text = filter.value.trim();
    let parsed = {};
    if (text) {
      try {
        parsed = JSON.parse(text);
      } catch {
        fill(filterChecks, h("li", { class: "no" }, "Not JSON yet"));
        return;
      }
    }
    try {
      const answer = await api("POST", "/v1/event-types/filter-check", { filter: parsed });
      if (mine !== pending) return;
      fill(filterChecks, answer.data.map((c) => h("li", { class: c.matches ? "yes" : "no", "data-type": c.type }, `${c.matches ? "✓ matches" : "✗ does not match"} the ${c.type} example`)));
    } catch (e) {
      if (mine === pending) showError(filterChecks, e);
    }
  };
  filter.addEventListener("input", checkFilter);
  checkFilter();

  const save = async () => {
    const body = {
      url: el.querySelector("#url").value.trim(),
      event_types: [...el.querySelectorAll('input[name="event_types"]:checked')].map((c) => c.value),
    };
    const description = el.querySelector("#description").value;
    if (description || (sub && sub.description)) body.description = description;
    const text = filter.value.trim();
    if (text) {
      try {
        body.filter = JSON.parse(text);
      } catch {
        fieldError(el, general, { code: "invalid_filter", message: "The filter is not valid JSON." });
        return;
      }
    } else if (sub && sub.filter) {
      body.filter = {};
    }
    const perSecond = el.querySelector("#per_second").value;
    const burst = el.querySelector("#burst").value;
    if (perSecond || burst) body.rate_limit = { per_second: Number(perSecond), burst: Number(burst || perSecond) };
    const rows = [...headers.querySelectorAll(".header-row")]
      .map((r) => [r.querySelector(".header-name").value.trim(), r.querySelector(".header-value").value])
      .filter(([k]) => k);
    if (rows.length || (sub && sub.headers)) body.headers = Object.fromEntries(rows);
    try {
      const saved = sub
        ? await api("PATCH", `/v1/subscriptions/${sub.id}`, body)
        : await api("POST", "/v1/subscriptions", body);
      location.hash = sub ? "#/endpoints" : `#/secret?sub=${saved.id}&created=1`;
    } catch (e) {
      fieldError(el, general, e);
    }
  };

  const parts = [h("h2", {}, sub ? "Edit endpoint" : "Add endpoint")];
  if (sub) parts.push(h("p", { class: "muted" }, sub.id), manage(sub));
  fill(main, ...parts, el);
  el.querySelector("#url").focus();
}

/** Pause/resume and delete (with a confirmation step) of a saved endpoint. */
function manage(sub) {
  const out = h("div", { class: "status-line" });
  const paused = sub.status === "paused";
  const confirm = h("span", { class: "confirm" });
  const toggle = h(
    "button",
    {
      type: "button",
      id: paused ? "resume" : "pause",
      onclick: async () => {
        try {
          await api("PATCH", `/v1/subscriptions/${sub.id}`, { status: paused ? "active" : "paused" });
          location.hash = "#/endpoints";
        } catch (e) {
          showError(out, e);
        }
      },
    },
    paused ? "Resume deliveries" : "Pause deliveries",
  );
  const del = h(
    "button",
    {
      type: "button",
      id: "delete",
      class: "danger",
      onclick: () => {
        const yes = h("button", {
          type: "button", id: "confirm-delete", class: "danger",
          onclick: async () => {
            try {
              await api("DELETE", `/v1/subscriptions/${sub.id}`);
              location.hash = "#/endpoints";
            } catch (e) {
              showError(out, e);
            }
          },
        }, "Yes, delete it");
        fill(confirm, ` Delete ${sub.url}? Pending deliveries are dropped. `, yes, " ", h("button", { type: "button", onclick: () => fill(confirm) }, "Keep it"));
        yes.focus();
      },
    },
    "Delete endpoint",
  );
  return h("div", { class: "manage" }, h("span", { class: `badge ${sub.status}` }, sub.status), " ", h("span", { class: `badge circuit-${sub.circuit}` }, `circuit ${sub.circuit}`), sub.disabled_reason ? notice("error", `Disabled: ${sub.disabled_reason}`) : null, h("div", { class: "buttons" }, toggle, del, confirm), out);
}
