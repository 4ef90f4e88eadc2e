// The console: a hash-routed page (#/, #/queues, #/queues/NAME, #/tenants)
// over the REST API. Each page renders into <main> and returns a cleanup
// that stops its pollers when the route changes.

import "./style.css";
import { api } from "./api";
import { can, claims, setToken, tenant, token } from "./auth";
import { clearError, h, showError } from "./dom";
import { overviewPage } from "./pages/overview";
import { queuePage } from "./pages/queue";
import { queuesPage } from "./pages/queues";
import { tenantsPage } from "./pages/tenants";

export type Cleanup = () => void;

let cleanup: Cleanup | null = null;
// authRequired: the node has --auth-* (GET /ui/config.json); without a
// token the page asks for one before calling the API.
let authRequired = false;

function route(): { page: string; arg: string } {
  const hash = location.hash.replace(/^#\/?/, "");
  const [page, ...rest] = hash.split("/");
  return { page: page || "overview", arg: decodeURIComponent(rest.join("/")) };
}

function renderNav(): void {
  const { page } = route();
  const links: [string, string, string][] = [
    ["overview", "#/", "Overview"],
    ["queues", "#/queues", "Queues"],
  ];
  if (can("cluster:admin")) links.push(["tenants", "#/tenants", "Tenants"]);
  const nav = document.getElementById("nav")!;
  nav.replaceChildren(
    h("ul", {}, ...links.map(([id, href, text]) =>
      h("li", {}, h("a", { href, "aria-current": id === page || (id === "queues" && page === "queue") ? "page" : undefined }, text)))),
  );
}

function renderLogin(): void {
  const box = document.getElementById("login")!;
  if (token()) {
    const c = claims();
    const scopes = c ? [...c.scopes].join(" ") : "unreadable token";
    box.replaceChildren(
      h("span", { class: "who", "data-testid": "who", title: scopes }, `tenant ${tenant()}`),
      h("span", { class: "scopes" }, scopes),
      h("button", { type: "button", onclick: () => { setToken(""); render(); } }, "Log out"),
    );
    return;
  }
  const input = h("input", { id: "token", type: "password", placeholder: "bearer token (dev mode: none)", autocomplete: "off", "aria-label": "Bearer token" });
  const form = h("form", {
    class: "login-form",
    onsubmit: async (ev: Event) => {
      ev.preventDefault();
      const t = input.value.trim();
      if (!t) return;
      setToken(t);
      try {
        await api.listQueues(); // any read scope: proves the token is accepted
        clearError();
      } catch (e) {
        setToken("");
        showError(e, "Log in refused");
        return;
      }
      async function start(): Promise<void> {
  try {
    const resp = await fetch("/ui/config.json", { cache: "no-store" });
    authRequired = resp.ok && ((await resp.json()) as { auth?: boolean }).auth === true;
  } catch {
    authRequired = false; // the API calls will say what is wrong
  }
  render();
}
void start();
    },
  }, input, h("button", { type: "submit" }, "Log in"));
  box.replaceChildren(form);
}

function render(): void {
  cleanup?.();
  cleanup = null;
  renderNav();
  renderLogin();
  const main = document.getElementById("main")!;
  main.replaceChildren();
  if (authRequired && !token()) {
    main.append(h("h1", {}, "Log in"),
      h("p", { "data-testid": "login-needed" }, "This node requires a bearer token (a JWT, see `quorumq token`). Paste it in the field at the top; it is kept in this tab only."));
    document.getElementById("token")?.focus();
    return;
  }
  const { page, arg } = route();
  switch (page) {
    case "queues":
      cleanup = arg ? queuePage(main, arg) : queuesPage(main);
      break;
    case "tenants":
      cleanup = tenantsPage(main);
      break;
    default:
      cleanup = overviewPage(main);
  }
}

window.addEventListener("hashchange", () => {
  clearError();
  async function start(): Promise<void> {
  try {
    const resp = await fetch("/ui/config.json", { cache: "no-store" });
    authRequired = resp.ok && ((await resp.json()) as { auth?: boolean }).auth === true;
  } catch {
    authRequired = false; // the API calls will say what is wrong
  }
  render();
}
void start();
  document.getElementById("main")!.focus({ preventScroll: true });
});
async function start(): Promise<void> {
  try {
    const resp = await fetch("/ui/config.json", { cache: "no-store" });
    authRequired = resp.ok && ((await resp.json()) as { auth?: boolean }).auth === true;
  } catch {
    authRequired = false; // the API calls will say what is wrong
  }
  render();
}
void start();
