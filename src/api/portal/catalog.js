// The event catalog: each type's description, its schema as a field table
// (dotted name, type, required, description) and its example.

import { catalog, fill, h, json } from "./lib.js";

/** Rows for an object schema's properties, nested objects and arrays flattened with dots. */
function rows(schema, prefix = "") {
  const out = [];
  const required = new Set(schema.required || []);
  for (const [name, prop] of Object.entries(schema.properties || {})) {
    const path = prefix ? `${prefix}.${name}` : name;
    let type = Array.isArray(prop.type) ? prop.type.join(" | ") : prop.type || (prop.enum ? "enum" : "any");
    if (prop.enum) type += ` (${prop.enum.join(", ")})`;
    if (type === "array" && prop.items && prop.items.type) type = `array of ${prop.items.type}`;
    out.push({ path, type, required: required.has(name), description: prop.description || "" });
    if (prop.type === "object") out.push(...rows(prop, path));
    if (prop.type === "array" && prop.items && prop.items.type === "object") out.push(...rows(prop.items, `${path}[]`));
  }
  return out;
}

export async function render(main) {
  const types = await catalog();
  fill(
    main,
    h("h2", {}, "Event catalog"),
    h("p", {}, "Every webhook body is ", h("code", {}, '{"id", "type", "timestamp", "data"}'), "; the tables describe ", h("code", {}, "data"), "."),
    h("ul", { class: "toc" }, types.map((t) => h("li", {}, h("a", { href: `#type-${t.type}` }, t.type)))),
    types.map((t) =>
      h(
        "section",
        { class: "event-type", id: `type-${t.type}` },
        h("h3", {}, h("code", {}, t.type)),
        h("p", {}, t.description),
        h(
          "div",
          { class: "scroll" },
          h(
            "table",
            { class: "fields" },
            h("thead", {}, h("tr", {}, ["Field", "Type", "Required", "Description"].map((c) => h("th", { scope: "col" }, c)))),
            h("tbody", {}, rows(t.schema).map((r) => h("tr", {}, h("td", {}, h("code", {}, `data.${r.path}`)), h("td", {}, r.type), h("td", {}, r.required ? "yes" : "no"), h("td", {}, r.description)))),
          ),
        ),
        h("details", {}, h("summary", {}, "Example"), json(t.example)),
      ),
    ),
  );
  // In-page links use ids, not routes: keep the route in the address bar.
  main.querySelectorAll(".toc a").forEach((a) =>
    a.addEventListener("click", (e) => {
      e.preventDefault();
      document.getElementById(a.getAttribute("href").slice(1)).scrollIntoView();
    }),
  );
}
