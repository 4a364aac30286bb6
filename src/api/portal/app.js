// The portal's shell: sign-in, navigation and the route table. A page is a
// module exporting `render(main, params)`; adding one is a new module and one
// line in ROUTES (with `requires` when it needs an API that may not exist).

import { api, fill, h, notice, offers, session, SessionExpired } from "./lib.js";

const ROUTES = [
  { path: "endpoints", title: "Endpoints", module: "./endpoints.js" },
  { path: "catalog", title: "Event catalog", module: "./catalog.js" },
  { path: "test", title: "Test", module: "./test.js" },
  { path: "log", title: "Delivery log", module: "./log.js" },
  { path: "dead-letters", title: "Dead letters", module: "./dead_letters.js" },
  { path: "recover", title: "Recover", module: "./recover.js", requires: ["post", "/v1/subscriptions/{id}/recover"] },
  { path: "secret", title: "Secret", module: "./secret.js" },
];

const root = document.getElementById("app");

/** `#token=…` (a portal session link) moves to session storage and leaves the address bar. */
function takeFragmentToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const token = fragment.get("token");
  if (token) {
    session.set(token);
    history.replaceState(null, "", `${location.pathname}${location.search}#/endpoints`);
  }
}

/** `#/log?sub=sub_1` → { path: "log", rest: [], params: {sub: "sub_1"} } */
function parseRoute() {
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  const [first, ...rest] = path.split("/").filter(Boolean);
  return { path: first || "endpoints", rest, params: Object.fromEntries(new URLSearchParams(query || "")) };
}

async function availableRoutes() {
  const checks = await Promise.all(ROUTES.map((r) => (r.requires ? offers(...r.requires) : true)));
  return ROUTES.filter((_, i) => checks[i]);
}

function signInForm(message) {
  const input = h("input", { id: "api-key", name: "token", type: "password", autocomplete: "off", required: true });
  const error = h("div", { id: "signin-error" });
  const form = h(
    "form",
    {
      id: "signin",
      onsubmit: async (e) => {
        e.preventDefault();
        session.set(input.value.trim());
        try {
          await api("GET", "/v1/subscriptions?limit=1");
          location.hash = "#/endpoints";
          render();
        } catch (err) {
          session.clear();
          fill(error, notice("error", err instanceof SessionExpired ? "That key is not valid." : err.message));
        }
      },
    },
    h("label", { for: "api-key" }, "API key"),
    input,
    h("button", { type: "submit", class: "primary" }, "Sign in"),
    error,
  );
  return h(
    "section",
    { class: "signin" },
    message,
    h("p", {}, "Open the portal link your platform gave you, or paste an API key of your account."),
    form,
  );
}

function showSignIn() {
  fill(root, h("header", {}, h("h1", {}, "Webhooks portal")), h("main", {}, signInForm()));
  document.getElementById("api-key").focus();
}

function showExpired() {
  session.clear();
  fill(
    root,
    h("header", {}, h("h1", {}, "Webhooks portal")),
    h(
      "main",
      { id: "expired" },
      signInForm(
        h(
          "div",
          { class: "expired", role: "alert" },
          h("h2", {}, "Your session has expired"),
          h("p", {}, "The link or key you signed in with is no longer valid. Ask your platform for a new portal link, or sign in with an API key."),
        ),
      ),
    ),
  );
}

async function render() {
  if (!session.token()) return showSignIn();
  const routes = await availableRoutes();
  const route = parseRoute();
  const current = routes.find((r) => r.path === route.path) || routes[0];
  const main = h("main", { id: "page", tabindex: "-1" }, h("p", { class: "loading" }, "Loading…"));
  const nav = h(
    "nav",
    { "aria-label": "Portal" },
    h(
      "ul",
      {},
      routes.map((r) =>
        h("li", {}, h("a", { href: `#/${r.path}`, "aria-current": r === current ? "page" : false }, r.title)),
      ),
    ),
    h("button", { type: "button", id: "sign-out", onclick: () => { session.clear(); location.hash = ""; showSignIn(); } }, "Sign out"),
  );
  fill(root, h("header", {}, h("h1", {}, "Webhooks portal"), nav), main);
  document.title = `${current.title} · Webhooks portal`;
  try {
    const page = await import(current.module);
    await page.render(main, route.rest, route.params);
  } catch (error) {
    if (error instanceof SessionExpired) return showExpired();
    fill(main, notice("error", error.message));
  }
}

/** A page whose later call finds the session expired (after render returned). */
window.addEventListener("unhandledrejection", (e) => {
  if (e.reason instanceof SessionExpired) {
    e.preventDefault();
    showExpired();
  }
});
window.addEventListener("hashchange", () => {
  takeFragmentToken();
  render();
});
takeFragmentToken();
render();
