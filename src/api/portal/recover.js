// Recover: re-deliver every event of a time window that matches the endpoint
// now, and watch the job's progress. Shown only where the server offers
// POST /v1/subscriptions/{id}/recover (see ROUTES in app.js).

import { api, catalog, fill, h, notice, pickSubscription, showError } from "./lib.js";

const POLL_MS = 1000;

export async function render(main, _rest, params) {
  const types = await catalog();
  const hourAgo = new Date(Date.now() - 3600 * 1000);
  const local = (d) => new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  const since = h("input", { id: "recover-since", type: "datetime-local", value: local(hourAgo), required: true });
  const until = h("input", { id: "recover-until", type: "datetime-local" });
  const only = h("select", { id: "recover-types", multiple: true, size: Math.min(6, types.length) }, types.map((t) => h("option", { value: t.type }, t.type)));
  const progress = h("div", { id: "recover-progress", "aria-live": "polite" });
  let subscription = null;
  let timer = null;

  const show = (job) =>
    fill(
      progress,
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Job"), h("dd", {}, h("code", {}, job.id)),
        h("dt", {}, "Status"), h("dd", { id: "recover-status" }, job.status),
        h("dt", {}, "Scanned"), h("dd", {}, String(job.scanned ?? 0)),
        h("dt", {}, "Matched"), h("dd", {}, String(job.matched ?? 0)),
        h("dt", {}, "Re-delivered"), h("dd", {}, String(job.written ?? 0)),
      ),
      h("progress", { max: Math.max(1, job.matched || 0), value: job.written || 0 }),
    );

  const poll = async (id) => {
    try {
      const job = await api("GET", `/v1/recoveries/${encodeURIComponent(id)}`);
      show(job);
      if (!["finished", "failed", "cancelled", "done"].includes(job.status)) timer = setTimeout(() => poll(id), POLL_MS);
    } catch (e) {
      showError(progress, e);
    }
  };

  const form = h(
    "form",
    {
      id: "recover-form",
      onsubmit: async (e) => {
        e.preventDefault();
        clearTimeout(timer);
        const request = { since: new Date(since.value).toISOString() };
        if (until.value) request.until = new Date(until.value).toISOString();
        const picked = [...only.selectedOptions].map((o) => o.value);
        if (picked.length) request.event_types = picked;
        try {
          const job = await api("POST", `/v1/subscriptions/${subscription}/recover`, request);
          show(job);
          poll(job.id);
        } catch (err) {
          showError(progress, err);
        }
      },
    },
    h("p", {}, h("label", { for: "recover-since" }, "From "), since, h("label", { for: "recover-until" }, " until "), until, h("span", { class: "muted" }, " (empty: now)")),
    h("p", { class: "stacked" }, h("label", { for: "recover-types" }, "Only these types (none selected: all the endpoint takes)"), only),
    h("button", { type: "submit", class: "primary", id: "start-recover" }, "Start recovery"),
  );

  fill(
    main,
    h("h2", {}, "Recover a time window"),
    notice("ok", "Every event of the window that matches this endpoint now is delivered again, whether it was delivered before or not: your receiver should deduplicate by webhook-id."),
    await pickSubscription(params.sub, (id) => {
      subscription = id;
      clearTimeout(timer);
      fill(progress);
    }),
    form,
    progress,
  );
}
