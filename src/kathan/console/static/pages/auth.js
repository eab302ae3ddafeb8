// Log in and sign up.

import * as api from "../api.js";
import { session, ApiError } from "../api.js";
import { h, field } from "../dom.js";
import { showError, clearError, toast } from "../ui.js";

function authCard(title, lead, ...content) {
  return h("div", { class: "auth" },
    h("div", { class: "card" }, h("h1", null, title), h("p", { class: "lead" }, lead), content));
}

function submitButton(label, testid) {
  return h("button", { type: "submit", class: "btn btn-primary btn-block", testid }, label);
}

function busy(btn, on, label) {
  if (on) {
    btn.dataset.label = btn.textContent;
    btn.textContent = label;
  } else if (btn.dataset.label) {
    btn.textContent = btn.dataset.label;
  }
  btn.disabled = on;
}

function loginError(err) {
  if (err instanceof ApiError && err.status === 429) {
    const n = err.retryAfter;
    return n != null
      ? `Too many failed attempts. Try again in ${n} second${n === 1 ? "" : "s"}.`
      : "Too many failed attempts. Try again later.";
  }
  return err;
}

export function renderLogin(root, { navigate }) {
  const email = h("input", { type: "email", name: "email", autocomplete: "username", required: true,
    autofocus: true, testid: "login-email" });
  const password = h("input", { type: "password", name: "password", autocomplete: "current-password",
    required: true, testid: "login-password" });
  const submit = submitButton("Log in", "login-submit");
  const form = h("form", { class: "form", "aria-label": "Log in" },
    field("Email", email).wrap, field("Password", password).wrap, submit);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError();
    busy(submit, true, "Logging in…");
    try {
      await api.login(email.value.trim(), password.value);
      password.value = "";
      navigate("keys");
    } catch (err) {
      busy(submit, false);
      showError(loginError(err));
      password.select();
      password.focus();
    }
  });

  const signup = session.config.registration === "open"
    ? h("p", { class: "switch" }, "New to Kathan? ", h("a", { href: "#/signup", testid: "signup-link" }, "Create an account"))
    : null;
  root.append(authCard("Log in", "Manage your API keys, usage and try models in the playground.", form, signup));
  email.focus();
}

export function renderSignup(root, { navigate }) {
  if (session.config.registration !== "open") {
    root.append(authCard("Sign up",
      "Registration is closed on this server.",
      h("p", { class: "notice notice-info", testid: "signup-closed" },
        "Accounts are created by an administrator. Ask yours for one, then log in."),
      h("p", { class: "switch" }, h("a", { href: "#/login" }, "Go to log in"))));
    return;
  }

  const name = h("input", { type: "text", name: "name", autocomplete: "name", maxlength: "200", testid: "signup-name" });
  const email = h("input", { type: "email", name: "email", autocomplete: "username", required: true,
    maxlength: "320", testid: "signup-email" });
  const password = h("input", { type: "password", name: "password", autocomplete: "new-password", required: true,
    minlength: "8", maxlength: "256", testid: "signup-password" });
  const submit = submitButton("Create account", "signup-submit");
  const form = h("form", { class: "form", "aria-label": "Sign up" },
    field("Name (optional)", name).wrap,
    field("Email", email).wrap,
    field("Password", password, "At least 8 characters.").wrap,
    submit);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError();
    busy(submit, true, "Creating account…");
    try {
      await api.register(email.value.trim(), password.value, name.value.trim() || undefined);
    } catch (err) {
      busy(submit, false);
      showError(err);
      return;
    }
    try {
      await api.login(email.value.trim(), password.value);
      toast("Welcome to Kathan");
      navigate("keys");
    } catch {
      toast("Account created. Log in to continue.");
      navigate("login");
    }
  });

  root.append(authCard("Create your account", "Get an API key and start calling models in minutes.", form,
    h("p", { class: "switch" }, "Already have an account? ", h("a", { href: "#/login" }, "Log in"))));
  name.focus();
}
