// Kathan console: start-up, the hash router and the top bar.

import * as api from "./api.js";
import { session } from "./api.js";
import { h, mount } from "./dom.js";
import { initErrorRegion, initToasts, showError, clearError, themeToggle, closeAllDialogs } from "./ui.js";
import { renderLogin, renderSignup } from "./pages/auth.js";
import { renderKeys } from "./pages/keys.js";
import { renderUsage } from "./pages/usage.js";
import { renderPlayground } from "./pages/playground.js";
import { renderModels } from "./pages/models.js";
import { renderAdmin } from "./pages/admin.js";

const ROUTES = {
  login: { title: "Log in", render: renderLogin, public: true },
  signup: { title: "Sign up", render: renderSignup, public: true },
  keys: { title: "API keys", render: renderKeys, nav: "Keys" },
  usage: { title: "Usage", render: renderUsage, nav: "Usage" },
  playground: { title: "Playground", render: renderPlayground, nav: "Playground" },
  models: { title: "Models", render: renderModels, nav: "Models" },
  admin: { title: "Admin", render: renderAdmin, nav: "Admin", admin: true },
};
const HOME = "keys";

const topbar = document.getElementById("topbar");
const pageHost = document.getElementById("page");
const main = document.getElementById("main");

let cleanup = null;
let flash = null; // a message to show after the next page renders
let renderCount = 0;

function routeName() {
  const m = /^#\/([a-z]+)/.exec(location.hash);
  return m && ROUTES[m[1]] ? m[1] : null;
}

/** Go to a route. replace: no new history entry. */
export function navigate(name, { replace = false } = {}) {
  const hash = `#/${name}`;
  if (location.hash === hash) {
    render();
  } else if (replace) {
    history.replaceState(null, "", hash);
    render();
  } else {
    location.hash = hash; // hashchange renders
  }
}

function renderTopbar(current) {
  const inner = h("div", { class: "topbar-inner" });
  const brand = h("a", { class: "brand", href: session.account ? `#/${HOME}` : "#/login" },
    h("span", { class: "brand-mark", "aria-hidden": "true" }, "K"), "Kathan");
  inner.append(brand);

  if (!session.account) {
    inner.append(h("div", { class: "nav-end" }, themeToggle()));
    mount(topbar, inner);
    return;
  }

  const panel = h("div", { class: "nav-panel", id: "nav-panel" });
  const menu = h("button", { type: "button", class: "btn btn-ghost btn-sm menu-button", testid: "nav-menu",
    "aria-expanded": "false", "aria-controls": "nav-panel" }, "Menu");
  const setOpen = (open) => {
    panel.classList.toggle("open", open);
    menu.setAttribute("aria-expanded", open ? "true" : "false");
  };
  menu.addEventListener("click", () => setOpen(!panel.classList.contains("open")));
  panel.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && panel.classList.contains("open")) {
      setOpen(false);
      menu.focus();
    }
  });

  const links = Object.entries(ROUTES)
    .filter(([, r]) => r.nav && (!r.admin || session.account.is_admin))
    .map(([name, r]) => h("a", { href: `#/${name}`, testid: `nav-${name}`,
      "aria-current": name === current ? "page" : null, onClick: () => setOpen(false) }, r.nav));
  const nav = h("nav", { class: "nav", "aria-label": "Main" }, links);

  const logout = h("button", { type: "button", class: "btn btn-sm", testid: "logout", onClick: doLogout }, "Log out");
  const email = h("span", { class: "account-email", testid: "user-email",
    title: session.account.email || session.account.name }, session.account.email || session.account.name);
  panel.append(nav, h("div", { class: "nav-end" }, email, themeToggle(), logout));
  inner.append(menu, panel);
  mount(topbar, inner);
}

async function doLogout() {
  try {
    await api.logout();
  } catch (err) {
    if (!(err instanceof api.ApiError && err.status === 401)) flash = err;
  }
  navigate("login");
}

function render() {
  renderCount += 1;
  let name = routeName();
  if (!name) {
    history.replaceState(null, "", `#/${session.account ? HOME : "login"}`);
    name = routeName();
  }
  const route = ROUTES[name];
  if (!route.public && !session.account) {
    history.replaceState(null, "", "#/login");
    render();
    return;
  }
  if (route.public && session.account) {
    history.replaceState(null, "", `#/${HOME}`);
    render();
    return;
  }

  if (cleanup) {
    try {
      cleanup();
    } catch {
      /* a page's cleanup must not stop the next page */
    }
    cleanup = null;
  }
  closeAllDialogs();
  clearError();
  renderTopbar(name);
  document.title = `${route.title} · Kathan`;

  const section = h("section", { class: "page", dataset: { page: name } });
  mount(pageHost, section);
  const ctx = { navigate, session, refreshTopbar: () => renderTopbar(name) };
  try {
    cleanup = route.render(section, ctx) || null;
  } catch (err) {
    showError(err);
  }

  if (flash) {
    showError(flash);
    flash = null;
  }
  // After a navigation, move focus to the page heading (not on the first load).
  if (renderCount > 1 && !route.public) {
    const heading = section.querySelector("h1");
    if (heading) {
      heading.tabIndex = -1;
      heading.focus({ preventScroll: true });
    }
  }
  window.scrollTo(0, 0);
}

async function boot() {
  initErrorRegion(document.getElementById("error-home"));
  initToasts(document.getElementById("toasts"));
  document.getElementById("skip-link").addEventListener("click", (e) => {
    e.preventDefault();
    main.focus();
  });
  api.onSessionExpired(() => {
    flash = "Your session has expired. Log in again.";
    navigate("login");
  });

  const [, restored] = await Promise.allSettled([api.loadConfig(), api.restoreSession()]);
  if (restored.status === "rejected") flash = restored.reason;

  window.addEventListener("hashchange", render);
  render();
}

boot();
