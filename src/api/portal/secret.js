// Secret: reveal and copy an endpoint's signing secret, rotate it (the old
// one keeps signing during the grace period), and verification snippets.

import { api, fill, h, notice, pickSubscription, showError } from "./lib.js";

const SNIPPETS = {
  Python: (s) => `# pip install standardwebhooks
from standardwebhooks.webhooks import Webhook

wh = Webhook("${s}")

def handle(body: bytes, headers: dict) -> dict:
    # Raises if the signature or the timestamp (5 minutes) is wrong.
    return wh.verify(body, headers)`,
  Node: (s) => `// npm install standardwebhooks
const { Webhook } = require("standardwebhooks");

const wh = new Webhook("${s}".replace(/^whsec_/, ""));

function handle(rawBody, headers) {
  // Throws if the signature or the timestamp (5 minutes) is wrong.
  return wh.verify(rawBody, headers);
}`,
  Rust: (s) => `// cargo add standardwebhooks
let wh = standardwebhooks::Webhook::new("${s}")?;

// body: the raw request bytes; headers: http::HeaderMap.
// Errors if the signature or the timestamp (5 minutes) is wrong.
wh.verify(&body, &headers)?;`,
};

export async function render(main, _rest, params) {
  const value = h("code", { id: "secret-value" }, "whsec_••••••••••••");
  const out = h("div", { id: "secret-result", "aria-live": "polite" });
  const snippets = h("div", { id: "snippets" });
  let subscription = null;
  let secret = null;

  const drawSnippets = () => {
    const shown = secret || "whsec_…";
    const tabs = Object.keys(SNIPPETS);
    const code = h("pre", { id: "snippet" });
    const pick = (lang) => {
      fill(code, SNIPPETS[lang](shown));
      bar.querySelectorAll("button").forEach((b) => b.setAttribute("aria-pressed", String(b.textContent === lang)));
    };
    const bar = h("div", { class: "tabs", role: "group", "aria-label": "Language" }, tabs.map((lang) => h("button", { type: "button", onclick: () => pick(lang) }, lang)));
    fill(snippets, h("h3", {}, "Verify webhooks with it"), bar, code);
    pick(tabs[0]);
  };

  const reveal = async () => {
    try {
      secret = (await api("GET", `/v1/subscriptions/${subscription}/secret`)).secret;
      fill(value, secret);
      drawSnippets();
    } catch (e) {
      showError(out, e);
    }
  };

  const copy = async () => {
    if (!secret) await reveal();
    try {
      await navigator.clipboard.writeText(secret);
      fill(out, notice("ok", "Copied."));
    } catch {
      const range = document.createRange();
      range.selectNodeContents(value);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      fill(out, notice("ok", "Selected: press Ctrl+C (⌘C) to copy."));
    }
  };

  const rotate = () => {
    const yes = h("button", {
      type: "button",
      id: "confirm-rotate",
      class: "danger",
      onclick: async () => {
        try {
          secret = (await api("POST", `/v1/subscriptions/${subscription}/secret/rotate`)).secret;
          fill(value, secret);
          fill(out, notice("ok", "Rotated. Webhooks are now signed with both the new and the old secret until the grace period ends; switch your receiver to the new secret before then."));
          drawSnippets();
        } catch (e) {
          showError(out, e);
        }
      },
    }, "Yes, rotate");
    fill(out, h("p", {}, "A new secret replaces this one. ", yes, " ", h("button", { type: "button", onclick: () => fill(out) }, "Cancel")));
    yes.focus();
  };

  fill(
    main,
    h("h2", {}, "Signing secret"),
    params.created ? notice("ok", "Endpoint created. Configure your receiver with this secret.") : null,
    await pickSubscription(params.sub, (id) => {
      subscription = id;
      secret = null;
      fill(value, "whsec_••••••••••••");
      fill(out);
      drawSnippets();
    }),
    h("p", { class: "secret" }, value),
    h(
      "div",
      { class: "buttons" },
      h("button", { type: "button", id: "reveal", onclick: reveal }, "Reveal"),
      h("button", { type: "button", id: "copy", onclick: copy }, "Copy"),
      h("button", { type: "button", id: "rotate", onclick: rotate }, "Rotate"),
    ),
    out,
    h(
      "p",
      { class: "help" },
      "Every webhook carries a webhook-signature header: an HMAC-SHA256 of id.timestamp.body with this secret (Standard Webhooks). ",
      "Rotating keeps the old secret signing alongside the new one for a grace period (24 hours unless your platform set another), so a receiver that accepts either signature never rejects a genuine webhook while you switch.",
    ),
    snippets,
  );
}
