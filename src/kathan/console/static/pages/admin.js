// Admin: accounts, everyone's keys and everyone's usage, as tabs. Admins only.

import * as api from "../api.js";
import { session } from "../api.js";
import { h, mount, field, checkbox, select, setOptions, button, table, badge, loading, empty, timeEl,
  fmtLimits } from "../dom.js";
import { showError, clearError, openDialog, tabs, toast } from "../ui.js";
import { keysTable, sortKeys, revokeKey } from "./keys.js";
import { editLimitsDialog } from "./limits.js";
import { usageView } from "./usage.js";

const enc = encodeURIComponent;

function accountLabel(a) {
  return a.email ? (a.name && a.name !== a.email ? `${a.name} <${a.email}>` : a.email) : a.name;
}

async function fetchAccounts() {
  const res = await api.get("/admin/accounts");
  return res.data || [];
}

// ---- Accounts --------------------------------------------------------------------------

function accountsPanel() {
  const host = h("div", { "aria-live": "polite" }, loading());
  const createBtn = button("Create account", { class: "btn btn-primary", testid: "admin-account-create",
    onClick: () => createAccountDialog(load) });
  const el = h("div", null,
    h("div", { class: "toolbar" },
      h("p", { class: "muted" }, "Everyone who can log in. A disabled account's keys and sessions stop working."),
      createBtn),
    host);

  let alive = true;
  async function load() {
    try {
      const accounts = await fetchAccounts();
      if (!alive) return;
      if (!accounts.length) {
        mount(host, empty("No accounts yet."));
        return;
      }
      const rows = accounts.map((a) => {
        const self = session.account && a.id === session.account.id;
        const toggle = button(a.disabled ? "Enable" : "Disable", {
          class: `btn btn-sm${a.disabled ? "" : " btn-danger"}`, testid: "account-toggle",
          "aria-label": `${a.disabled ? "Enable" : "Disable"} ${accountLabel(a)}`,
          disabled: self && !a.disabled, title: self && !a.disabled ? "You cannot disable your own account." : null,
          onClick: async () => {
            toggle.disabled = true;
            clearError();
            try {
              await api.patch(`/admin/accounts/${enc(a.id)}`, { disabled: !a.disabled });
              toast(a.disabled ? "Account enabled" : "Account disabled");
              load();
            } catch (err) {
              toggle.disabled = false;
              showError(err);
            }
          } });
        const limits = button("Edit limits", { class: "btn btn-sm", testid: "account-limits",
          "aria-label": `Edit limits of ${accountLabel(a)}`,
          onClick: () => editLimitsDialog({
            title: "Account limits",
            intro: `${accountLabel(a)}: the limits of the keys this account creates and of its playground.`,
            limits: a.limits,
            save: async (l) => {
              await api.patch(`/admin/accounts/${enc(a.id)}`, { limits: l });
              toast("Limits saved");
              load();
            },
          }) });
        return h("tr", { testid: "account-row", dataset: { accountId: a.id, disabled: String(Boolean(a.disabled)) } },
          h("td", { class: "cell-name" }, a.name, self ? h("span", { class: "muted" }, " (you)") : null),
          h("td", null, a.email || h("span", { class: "muted" }, "—")),
          h("td", null, a.is_admin ? badge("Admin", "accent") : badge("Member")),
          h("td", null, a.disabled ? badge("Disabled", "danger", { testid: "account-status" }) : badge("Active", "success", { testid: "account-status" })),
          h("td", { class: "cell-wide" }, fmtLimits(a.limits)),
          h("td", { class: "nowrap" }, timeEl(a.created_at)),
          h("td", { class: "actions" }, limits, toggle));
      });
      mount(host, table(["Name", "Email", "Role", "Status", "Limits", "Created",
        h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions"))], rows,
      { "aria-label": "Accounts", testid: "accounts-table" }));
    } catch (err) {
      if (!alive) return;
      mount(host, empty("Accounts could not be loaded."));
      showError(err);
    }
  }
  return { el, start: load, stop: () => { alive = false; } };
}

function createAccountDialog(onCreated) {
  const name = h("input", { type: "text", required: true, maxlength: "200", testid: "account-create-name", autofocus: true });
  const email = h("input", { type: "email", required: true, maxlength: "320", autocomplete: "off", testid: "account-create-email" });
  const password = h("input", { type: "password", required: true, minlength: "8", maxlength: "256",
    autocomplete: "new-password", testid: "account-create-password" });
  const admin = checkbox("Administrator", { testid: "account-create-admin" });
  const submit = h("button", { type: "submit", class: "btn btn-primary", testid: "account-create-submit" }, "Create account");
  const dlg = openDialog({
    title: "Create an account",
    testid: "account-dialog",
    content: h("div", { class: "form" },
      field("Name", name).wrap,
      field("Email", email, "They log in with this address.").wrap,
      field("Password", password, "At least 8 characters. Share it with them safely.").wrap,
      admin.wrap,
      h("p", { class: "hint" }, "Limits can be set after the account is created.")),
    actions: [button("Cancel", { onClick: () => dlg.close() }), submit],
    onSubmit: async () => {
      clearError();
      const body = { name: name.value.trim(), email: email.value.trim(), password: password.value };
      if (!body.name || !body.email || !body.password) {
        showError("Name, email and password are all needed.");
        return;
      }
      if (admin.control.checked) body.is_admin = true;
      dlg.setBusy(true);
      try {
        await api.post("/admin/accounts", body);
        toast("Account created");
        dlg.close();
        onCreated();
      } catch (err) {
        dlg.setBusy(false);
        showError(err);
      }
    },
  });
}

// ---- Keys --------------------------------------------------------------------------------

function keysPanel() {
  const accountSel = select([{ value: "", label: "All accounts" }], { testid: "admin-keys-account-filter" });
  const host = h("div", { "aria-live": "polite" }, loading());
  const el = h("div", null,
    h("div", { class: "toolbar" }, field("Account", accountSel).wrap),
    host);
  let accounts = new Map();
  let alive = true;

  async function load() {
    mount(host, loading());
    try {
      const res = await api.get("/admin/keys", { account_id: accountSel.value });
      if (!alive) return;
      const keys = sortKeys(res.data || []);
      if (!keys.length) {
        mount(host, empty(accountSel.value ? "This account has no keys." : "No keys yet."));
        return;
      }
      mount(host, keysTable(keys, {
        account: (k) => {
          const a = accounts.get(k.account_id);
          return a ? accountLabel(a) : h("code", { class: "mono" }, k.account_id);
        },
        actions: (key, status) => (status.id === "revoked" ? null : [
          button("Edit limits", { class: "btn btn-sm", testid: "key-limits", "aria-label": `Edit limits of ${key.name}`,
            onClick: () => editLimitsDialog({
              title: "Key limits",
              intro: `${key.name} (${key.prefix}…)`,
              limits: key.limits,
              save: async (l) => {
                await api.patch(`/admin/keys/${enc(key.id)}`, { limits: l });
                toast("Limits saved");
                load();
              },
            }) }),
          button("Revoke", { class: "btn btn-sm btn-danger", testid: "key-revoke", "aria-label": `Revoke ${key.name}`,
            onClick: async () => {
              if (await revokeKey(key, `/admin/keys/${enc(key.id)}`)) {
                toast("Key revoked");
                load();
              }
            } }),
        ]),
      }));
    } catch (err) {
      if (!alive) return;
      mount(host, empty("Keys could not be loaded."));
      showError(err);
    }
  }

  accountSel.addEventListener("change", load);
  async function start() {
    try {
      const list = await fetchAccounts();
      accounts = new Map(list.map((a) => [a.id, a]));
      setOptions(accountSel, [{ value: "", label: "All accounts" }, ...list.map((a) => ({ value: a.id, label: accountLabel(a) }))]);
    } catch (err) {
      showError(err);
    }
    await load();
  }
  return { el, start, stop: () => { alive = false; } };
}

// ---- Page ----------------------------------------------------------------------------------

export function renderAdmin(root) {
  if (!session.account || !session.account.is_admin) {
    root.append(h("div", { class: "forbidden", testid: "admin-forbidden" },
      h("h1", null, "Admin"),
      h("p", null, "This page is for administrators.")));
    return null;
  }

  const accounts = accountsPanel();
  const keys = keysPanel();
  const usage = usageView({
    endpoint: "/admin/usage",
    title: "Everyone's activity",
    loadAccountOptions: async () => (await fetchAccounts()).map((a) => ({ value: a.id, label: accountLabel(a) })),
    loadKeyOptions: async (accountId) => {
      const res = await api.get("/admin/keys", { account_id: accountId });
      return [{ value: "console", label: "Playground" },
        ...(res.data || []).map((k) => ({ value: k.id, label: `${k.name} (${k.prefix}…)${k.revoked_at ? " — revoked" : ""}` }))];
    },
  });
  const sections = { accounts, keys, usage };
  const started = new Set();

  const t = tabs([
    { id: "accounts", label: "Accounts", testid: "admin-accounts", tabTestid: "admin-tab-accounts", panel: accounts.el },
    { id: "keys", label: "Keys", testid: "admin-keys", tabTestid: "admin-tab-keys", panel: keys.el },
    { id: "usage", label: "Usage", testid: "admin-usage", tabTestid: "admin-tab-usage", panel: usage.el },
  ], {
    label: "Admin sections",
    onChange: (id) => {
      clearError();
      // Load each tab the first time it is shown; later visits reload accounts and keys.
      if (!started.has(id) || id !== "usage") sections[id].start();
      started.add(id);
    },
  });

  root.append(
    h("div", { class: "page-header" }, h("div", null, h("h1", null, "Admin"),
      h("p", null, "Accounts, keys and usage of everyone on this server."))),
    t.list, ...t.panels);
  t.select(0);
  return () => { accounts.stop(); keys.stop(); usage.stop(); };
}
