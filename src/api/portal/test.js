// Test: send a catalog example to an endpoint now and see the request that
// went out (headers, body) and what the endpoint answered.

import { api, catalog, fill, h, json, ms, notice, pickSubscription, showError } from "./lib.js";

export async function render(main, _rest, params) {
  const types = await catalog();
  const result = h("div", { id: "test-result", "aria-live": "polite" });
  let subscription = null;
  const type = h("select", { id: "test-type" }, types.map((t) => h("option", { value: t.type }, t.type)));
  const send = h(
    "button",
    {
      type: "submit",
      class: "primary",
      id: "send-test",
    },
    "Send test event",
  );
  const form = h(
    "form",
    {
      onsubmit: async (e) => {
        e.preventDefault();
        send.disabled = true;
        fill(result, h("p", {}, "Sending…"));
        try {
          const a = await api("POST", `/v1/subscriptions/${subscription}/test`, { event_type: type.value });
          fill(
            result,
            notice(a.success ? "ok" : "error", a.success ? "Delivered" : `Failed: ${a.error || `HTTP ${a.status_code}`}`),
            h(
              "dl",
              { class: "facts" },
              h("dt", {}, "Status"), h("dd", { id: "test-status" }, a.status_code === null ? "no answer" : String(a.status_code)),
              h("dt", {}, "Latency"), h("dd", {}, ms(a.duration_ms)),
              h("dt", {}, "Event id"), h("dd", {}, h("code", {}, a.event_id)),
            ),
            h("h3", {}, "Request"),
            h("p", {}, h("code", {}, `POST ${a.request.url}`)),
            h("table", { class: "headers", id: "test-request-headers" }, h("tbody", {}, a.request.headers.map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, h("code", {}, v)))))),
            json(a.request.body),
            h("h3", {}, "Response body"),
            a.response_body ? json(a.response_body) : h("p", { class: "muted" }, "(empty)"),
          );
        } catch (err) {
          showError(result, err);
        } finally {
          send.disabled = false;
        }
      },
    },
    h("p", {}, h("label", { for: "test-type" }, "Event type "), type),
    send,
  );
  if (params.type) type.value = params.type;
  fill(
    main,
    h("h2", {}, "Send a test event"),
    h("p", {}, "Sends the catalog example (id ", h("code", {}, "evt_test_…"), ") through the real signing and HTTP path; it shows in the delivery log."),
    await pickSubscription(params.sub, (id) => {
      subscription = id;
      fill(result);
    }),
    form,
    result,
  );
}
