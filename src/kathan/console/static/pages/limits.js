// The limits editor (admin: accounts and keys) and how limits read.

import { h, field, select, button, uid } from "../dom.js";
import { openDialog, showError } from "../ui.js";

const FIELDS = [
  ["rpm", "Requests per minute"],
  ["tpm", "Tokens per minute"],
  ["max_concurrent", "Concurrent requests"],
  ["max_tokens", "Max tokens per request"],
];

/**
 * A dialog to edit limits. Empty fields are unlimited (null). save(limits) does the
 * request; the dialog closes when it succeeds and shows the error when it fails.
 */
export function editLimitsDialog({ title, intro, limits, save }) {
  const current = limits || {};
  const inputs = {};
  const numberInput = (name) => {
    const input = h("input", { type: "number", min: "1", step: "1", inputmode: "numeric", name,
      placeholder: "Unlimited", testid: `limits-${name.replace(/_/g, "-")}` });
    if (current[name] != null) input.value = String(current[name]);
    inputs[name] = input;
    return input;
  };
  const rows = FIELDS.map(([name, label]) => field(label, numberInput(name)).wrap);
  const quota = numberInput("quota_tokens");
  const period = select([{ value: "day", label: "per UTC day" }, { value: "month", label: "per UTC month" }],
    { testid: "limits-quota-period", id: uid("period") });
  period.value = current.quota_period || "day";

  const submit = h("button", { type: "submit", class: "btn btn-primary", testid: "limits-save" }, "Save limits");
  const dlg = openDialog({
    title,
    testid: "limits-dialog",
    content: [
      intro ? h("p", { class: "muted" }, intro) : null,
      h("p", { class: "hint" }, "Leave a field empty for no limit."),
      h("div", { class: "form" },
        h("div", { class: "form-row" }, rows),
        h("div", { class: "form-row" }, field("Token quota", quota).wrap, field("Quota period", period).wrap)),
    ],
    actions: [button("Cancel", { onClick: () => dlg.close() }), submit],
    onSubmit: async () => {
      const out = {};
      for (const [name, input] of Object.entries(inputs)) {
        const raw = input.value.trim();
        if (raw === "") {
          out[name] = null;
          continue;
        }
        const n = Number(raw);
        if (!Number.isInteger(n) || n < 1) {
          showError(`Each limit must be a whole number of at least 1, or empty for no limit.`);
          input.focus();
          return;
        }
        out[name] = n;
      }
      out.quota_period = out.quota_tokens == null ? null : period.value;
      dlg.setBusy(true);
      try {
        await save(out);
        dlg.close();
      } catch (err) {
        dlg.setBusy(false);
        showError(err);
      }
    },
  });
  return dlg;
}
