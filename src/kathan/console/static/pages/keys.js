// API keys: list, create (the secret shown once), revoke.

import * as api from "../api.js";
import { h, mount, field, button, table, badge, chip, loading, empty, timeEl, fmtLimits,
  endOfLocalDay } from "../dom.js";
import { openDialog, confirmAction, showError, clearError, copyText, toast } from "../ui.js";

export function keyStatus(key) {
  if (key.revoked_at) return { id: "revoked", label: "Revoked", kind: "danger" };
  if (key.expires_at && Date.parse(key.expires_at) <= Date.now()) return { id: "expired", label: "Expired", kind: "warning" };
  return { id: "active", label: "Active", kind: "success" };
}

export function modelsCell(models) {
  if (!models) return h("span", { class: "muted" }, "All models");
  if (!models.length) return h("span", { class: "muted" }, "None");
  return h("div", { class: "chips" }, models.map((m) => chip(m)));
}

/**
 * The keys table. actions(key) returns the buttons of a row; account(key) an optional
 * owner cell (admin).
 */
export function keysTable(keys, { actions, account } = {}) {
  const headers = ["Name", "Key", ...(account ? ["Account"] : []), "Models", "Limits", "Created",
    "Last used", "Expires", "Status", h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions"))];
  const rows = keys.map((key) => {
    const status = keyStatus(key);
    return h("tr", { testid: "key-row", dataset: { keyId: key.id, status: status.id } },
      h("td", { class: "cell-name" }, key.name),
      h("td", { class: "nowrap" }, h("code", { class: "mono" }, `${key.prefix}…`)),
      account ? h("td", null, account(key)) : null,
      h("td", { class: "cell-wide" }, modelsCell(key.models)),
      h("td", { class: "cell-wide" }, fmtLimits(key.limits)),
      h("td", { class: "nowrap" }, timeEl(key.created_at)),
      h("td", { class: "nowrap" }, timeEl(key.last_used_at, true)),
      h("td", { class: "nowrap" }, key.expires_at ? timeEl(key.expires_at) : h("span", { class: "muted" }, "Never")),
      h("td", null, badge(status.label, status.kind, { testid: "key-status" })),
      h("td", { class: "actions" }, actions ? actions(key, status) : null));
  });
  return table(headers, rows, { "aria-label": "API keys", testid: "keys-table" });
}

export function sortKeys(keys) {
  return [...keys].sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
}

export function revokeKey(key, path) {
  return confirmAction({
    title: "Revoke this key?",
    message: [
      h("p", null, "Requests made with ", h("strong", null, key.name), " (", h("code", null, `${key.prefix}…`),
        ") will be refused from now on."),
      h("p", { class: "muted" }, "This cannot be undone."),
    ],
    okLabel: "Revoke key",
    danger: true,
    action: () => api.del(path),
  });
}

export function renderKeys(root) {
  const createBtn = h("button", { type: "button", class: "btn btn-primary", testid: "key-create",
    onClick: () => createKeyDialog(load) }, "Create key");
  const content = h("div", { "aria-live": "polite", "aria-busy": "true" }, loading());
  root.append(
    h("div", { class: "page-header" },
      h("div", null, h("h1", null, "API keys"),
        h("p", null, "Keys authenticate your requests to the API. Keep them secret: anyone with a key can use it.")),
      h("div", { class: "page-actions" }, createBtn)),
    content);

  let alive = true;
  async function load() {
    try {
      const res = await api.get("/v1/keys");
      if (!alive) return;
      content.setAttribute("aria-busy", "false");
      const keys = sortKeys(res.data || []);
      if (!keys.length) {
        mount(content, empty("No keys yet — create one to call the API.",
          button("Create key", { class: "btn btn-primary", onClick: () => createKeyDialog(load) })));
        return;
      }
      mount(content, keysTable(keys, {
        actions: (key, status) => (status.id === "revoked" ? null
          : button("Revoke", { class: "btn btn-sm btn-danger", testid: "key-revoke",
            "aria-label": `Revoke ${key.name}`,
            onClick: async () => {
              if (await revokeKey(key, `/v1/keys/${encodeURIComponent(key.id)}`)) {
                toast("Key revoked");
                load();
              }
            } })),
      }));
    } catch (err) {
      if (!alive) return;
      content.setAttribute("aria-busy", "false");
      mount(content, empty("The keys could not be loaded.", button("Try again", { onClick: () => { mount(content, loading()); load(); } })));
      showError(err);
    }
  }
  load();
  return () => { alive = false; };
}

function tomorrow() {
  const d = new Date();
  d.setDate(d.getDate() + 1);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

function createKeyDialog(onCreated) {
  const name = h("input", { type: "text", required: true, maxlength: "200", autocomplete: "off",
    placeholder: "e.g. production-backend", testid: "key-name", autofocus: true });
  const models = h("select", { multiple: true, testid: "key-models", size: "5", disabled: true },
    h("option", { value: "", disabled: true }, "Loading models…"));
  const expires = h("input", { type: "date", min: tomorrow(), testid: "key-expires" });
  const submit = h("button", { type: "submit", class: "btn btn-primary", testid: "key-create-submit" }, "Create key");
  const cancel = button("Cancel", { testid: "key-create-cancel", onClick: () => dlg.close() });
  let created = false;

  const dlg = openDialog({
    title: "Create a new key",
    testid: "key-dialog",
    content: h("div", { class: "form" },
      field("Name", name, "A name to recognise the key by, such as where it is used.").wrap,
      field("Models", models, "Leave none selected to allow every model. Ctrl-click (⌘-click) to select several.").wrap,
      field("Expires (optional)", expires, "The key stops working at the end of this day. Empty: never.").wrap),
    actions: [cancel, submit],
    onClose: () => { if (created) onCreated(); },
    onSubmit: async () => {
      if (created) return;
      clearError();
      const body = { name: name.value.trim() };
      if (!body.name) {
        showError("Give the key a name.");
        name.focus();
        return;
      }
      const chosen = [...models.selectedOptions].map((o) => o.value).filter(Boolean);
      if (chosen.length) body.models = chosen;
      if (expires.value) body.expires_at = endOfLocalDay(expires.value);
      dlg.setBusy(true);
      try {
        const key = await api.post("/v1/keys", body);
        created = true;
        dlg.setBusy(false);
        showSecret(dlg, key);
      } catch (err) {
        dlg.setBusy(false);
        showError(err);
      }
    },
  });

  api.get("/v1/models").then((res) => {
    const ids = (res.data || []).map((m) => m.id);
    models.replaceChildren(...ids.map((id) => h("option", { value: id }, id)));
    models.disabled = false;
    if (!ids.length) models.append(h("option", { value: "", disabled: true }, "No models available"));
  }).catch((err) => {
    models.replaceChildren(h("option", { value: "", disabled: true }, "Models could not be loaded"));
    showError(err);
  });
}

/** The secret, shown once: it lives only in this dialog's DOM and goes with it. */
function showSecret(dlg, key) {
  dlg.heading.textContent = "Save your key";
  const secret = h("code", { testid: "key-secret" }, key.key);
  const copy = button("Copy", { class: "btn btn-primary", testid: "key-copy",
    onClick: async () => {
      if (await copyText(secret.textContent, secret)) copy.textContent = "Copied";
    } });
  const done = button("Done", { class: "btn", testid: "key-done", onClick: () => dlg.close() });
  dlg.content.replaceChildren(
    h("p", { class: "notice", role: "note" },
      h("strong", null, "Copy this key now. "), "It will not be shown again: Kathan keeps only a hash of it. ",
      "If you lose it, revoke it and create a new one."),
    h("div", { class: "secret-box" }, secret, copy),
    h("dl", { class: "kv" },
      h("dt", null, "Name"), h("dd", null, key.name),
      h("dt", null, "Models"), h("dd", null, modelsCell(key.models)),
      h("dt", null, "Expires"), h("dd", null, key.expires_at ? timeEl(key.expires_at, true) : "Never")));
  dlg.footer.replaceChildren(done);
  copy.focus();
}
