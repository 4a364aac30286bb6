// The delivery log: a subscription's attempts newest first, filtered by
// outcome, event type and time; one opens to its detail, with Resend where
// the server offers it.

import { api, catalog, fill, h, json, ms, notice, offers, pickSubscription, showError, when } from "./lib.js";

export async function render(main, _rest, params) {
  const [types, canResend] = await Promise.all([catalog(), offers("post", "/v1/subscriptions/{id}/resend")]);
  const outcome = h("select", { id: "filter-outcome" }, h("option", { value: "" }, "any"), h("option", { value: "success" }, "succeeded"), h("option", { value: "failure" }, "failed"));
  const type = h("select", { id: "filter-type" }, h("option", { value: "" }, "any"), types.map((t) => h("option", { value: t.type }, t.type)));
  const since = h("input", { id: "filter-since", type: "datetime-local" });
  const table = h("tbody");
  const detail = h("section", { id: "attempt-detail", "aria-live": "polite" });
  const more = h("div");
  let subscription = null;
  let attempts = [];
  let cursor = null;

  const shown = () =>
    attempts.filter(
      (a) =>
        (!outcome.value || (outcome.value === "success") === a.success) &&
        (!type.value || a.event_type === type.value) &&
        (!since.value || new Date(a.at) >= new Date(since.value)),
    );

  const open = (a) => {
    const out = h("div");
    const resend = canResend
      ? h("button", {
          type: "button",
          id: "resend",
          onclick: async () => {
            try {
              await api("POST", `/v1/subscriptions/${subscription}/resend`, { event_id: a.event_id });
              fill(out, notice("ok", "Sent again as a fresh delivery: it appears here when attempted."));
            } catch (e) {
              showError(out, e);
            }
          },
        }, "Resend this event")
      : null;
    fill(
      detail,
      h("h3", {}, "Attempt ", h("code", {}, a.event_id), ` #${a.attempt}`),
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Event type"), h("dd", {}, a.event_type),
        h("dt", {}, "At"), h("dd", {}, when(a.at)),
        h("dt", {}, "Outcome"), h("dd", {}, a.success ? "succeeded" : "failed"),
        h("dt", {}, "Status"), h("dd", {}, a.status_code === null ? "no answer" : String(a.status_code)),
        h("dt", {}, "Latency"), h("dd", {}, ms(a.duration_ms)),
        a.error ? [h("dt", {}, "Error"), h("dd", {}, a.error)] : null,
      ),
      h("h4", {}, "Response body"),
      a.response_body ? json(a.response_body) : h("p", { class: "muted" }, "(empty)"),
      resend,
      out,
    );
    detail.focus();
  };

  const draw = () => {
    const list = shown();
    fill(
      table,
      list.length === 0
        ? h("tr", {}, h("td", { colspan: 5 }, "No attempts."))
        : list.map((a) =>
            h(
              "tr",
              { class: a.success ? "ok" : "failed", "data-event": a.event_id },
              h("td", {}, when(a.at)),
              h("td", {}, h("button", { type: "button", class: "link", onclick: () => open(a) }, a.event_id)),
              h("td", {}, a.event_type),
              h("td", {}, a.success ? `✓ ${a.status_code}` : `✗ ${a.status_code === null ? a.error || "no answer" : a.status_code}`),
              h("td", {}, ms(a.duration_ms)),
            ),
          ),
    );
    fill(more, cursor ? h("button", { type: "button", id: "more", onclick: () => load(false) }, "Older attempts") : null);
  };

  const load = async (fresh) => {
    if (fresh) {
      attempts = [];
      cursor = null;
      fill(detail);
    }
    try {
      const page = await api("GET", `/v1/subscriptions/${subscription}/attempts?limit=100${cursor ? `&before=${encodeURIComponent(cursor)}` : ""}`);
      attempts = attempts.concat(page.data);
      cursor = page.next_cursor;
      draw();
    } catch (e) {
      showError(more, e);
    }
  };
  for (const input of [outcome, type, since]) input.addEventListener("change", draw);

  fill(
    main,
    h("h2", {}, "Delivery log"),
    await pickSubscription(params.sub, (id) => {
      subscription = id;
      load(true);
    }),
    h(
      "div",
      { class: "filters" },
      h("label", {}, "Outcome ", outcome),
      h("label", {}, "Event type ", type),
      h("label", {}, "Since ", since),
      h("button", { type: "button", id: "refresh", onclick: () => load(true) }, "Refresh"),
    ),
    h("div", { class: "scroll" }, h("table", { id: "attempts" }, h("thead", {}, h("tr", {}, ["Time", "Event", "Type", "Result", "Latency"].map((c) => h("th", { scope: "col" }, c)))), table)),
    more,
    h("div", { class: "detail", tabindex: "-1" }, detail),
  );
  detail.setAttribute("tabindex", "-1");
}
