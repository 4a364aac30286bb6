// Dead letters: what a subscription could not be delivered, why, and the
// last error; replay the selected ones or all of them.

import { api, fill, h, notice, pickSubscription, showError, when } from "./lib.js";

export async function render(main, _rest, params) {
  const body = h("tbody");
  const out = h("div", { id: "replay-result", "aria-live": "polite" });
  let subscription = null;

  const load = async () => {
    try {
      const page = await api("GET", `/v1/dead-letters?subscription_id=${encodeURIComponent(subscription)}&limit=250`);
      fill(
        body,
        page.data.length === 0
          ? h("tr", {}, h("td", { colspan: 7 }, "No dead letters."))
          : page.data.map((d) =>
              h(
                "tr",
                { "data-id": d.id, "data-event": d.event_id },
                h("td", {}, h("input", { type: "checkbox", class: "pick", value: d.id, "aria-label": `Select ${d.event_id}` })),
                h("td", {}, h("code", {}, d.event_id)),
                h("td", {}, d.event_type),
                h("td", {}, d.reason || ""),
                h("td", {}, d.last_error || (d.last_status ? `HTTP ${d.last_status}` : "")),
                h("td", {}, String(d.attempts)),
                h("td", {}, when(d.dead_at), d.replayed_at ? h("div", { class: "muted" }, `replayed ${when(d.replayed_at)}`) : null),
              ),
            ),
      );
    } catch (e) {
      showError(out, e);
    }
  };

  const replay = async (ids) => {
    try {
      const request = { subscription_id: subscription };
      if (ids) request.ids = ids;
      const r = await api("POST", "/v1/dead-letters/replay", request);
      fill(out, notice("ok", `Replayed ${r.replayed} as fresh deliveries.`));
      await load();
    } catch (e) {
      showError(out, e);
    }
  };

  fill(
    main,
    h("h2", {}, "Dead letters"),
    h("p", {}, "Deliveries that ran out of retries or could not be attempted. Replaying sends them again as fresh deliveries."),
    await pickSubscription(params.sub, (id) => {
      subscription = id;
      fill(out);
      load();
    }),
    h(
      "div",
      { class: "buttons" },
      h("button", {
        type: "button",
        id: "replay-selected",
        onclick: () => {
          const ids = [...body.querySelectorAll(".pick:checked")].map((c) => c.value);
          if (ids.length === 0) fill(out, notice("error", "Select dead letters first."));
          else replay(ids);
        },
      }, "Replay selected"),
      h("button", { type: "button", id: "replay-all", onclick: () => replay(null) }, "Replay all not yet replayed"),
      h("button", { type: "button", onclick: load }, "Refresh"),
    ),
    out,
    h("div", { class: "scroll" }, h("table", { id: "dead-letters" }, h("thead", {}, h("tr", {}, ["", "Event", "Type", "Reason", "Last error", "Attempts", "Dead since"].map((c) => h("th", { scope: "col" }, c)))), body)),
  );
}
