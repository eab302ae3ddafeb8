// Shared UI pieces: the error region, toasts, dialogs and the theme.

import { h, button } from "./dom.js";
import { errorText } from "./api.js";

// ---- Error region -----------------------------------------------------------------
// One error region for the whole console (data-testid="error"). While a modal dialog
// is open the region is moved into it, so the message is seen where the person is.

let errorBox = null;
let errorText_ = null;
let errorHome = null;
const dialogStack = [];

export function initErrorRegion(home) {
  errorHome = home;
  errorText_ = h("p", { class: "alert-text", id: "error", testid: "error", role: "alert", "aria-live": "assertive" });
  const close = h("button", { type: "button", class: "alert-close", "aria-label": "Dismiss error",
    onClick: () => clearError() }, "×");
  errorBox = h("div", { class: "alert" }, errorText_, close);
  home.appendChild(errorBox);
}

/** Show an error (an Error/ApiError or a plain string) in words. */
export function showError(err) {
  // A request that found the session expired has already sent the person to the
  // login page with its own message.
  if (err && err.sessionExpired) return;
  const text = typeof err === "string" ? err : errorText(err);
  errorText_.textContent = text;
  errorBox.classList.toggle("has-error", Boolean(text));
  if (!dialogStack.length && text) errorBox.scrollIntoView({ block: "nearest" });
}

export function clearError() {
  errorText_.textContent = "";
  errorBox.classList.remove("has-error");
}

function placeErrorRegion() {
  const top = dialogStack[dialogStack.length - 1];
  const slot = top ? top.querySelector(".dialog-error-slot") : errorHome;
  if (slot && errorBox.parentNode !== slot) slot.appendChild(errorBox);
}

// ---- Toasts -------------------------------------------------------------------------

let toastRegion = null;
export function initToasts(region) {
  toastRegion = region;
}

export function toast(text) {
  if (!toastRegion) return;
  const el = h("div", { class: "toast" }, text);
  toastRegion.appendChild(el);
  setTimeout(() => el.remove(), 2600);
}

// ---- Dialogs ------------------------------------------------------------------------

export function closeAllDialogs() {
  for (const dialog of [...dialogStack].reverse()) {
    dialog.close();
    dialog.dispatchEvent(new Event("close")); // tear down now, not a task later
  }
}

/**
 * A modal <dialog>. Escape closes it (the browser's own handling), focus goes to the
 * element marked autofocus (or the first control) and back to where it was on close.
 * onSubmit(event) is called when the form is submitted (Enter or the submit button).
 * Returns {dialog, form, content, footer, heading, close, setBusy}.
 */
export function openDialog({ title, content = [], actions = [], onSubmit, onClose, wide = false, testid }) {
  const previousFocus = document.activeElement;
  const titleId = `dlg-${Math.random().toString(36).slice(2, 9)}`;
  const contentEl = h("div", { class: "dialog-content" }, content);
  const body = h("div", { class: "dialog-body" }, h("div", { class: "dialog-error-slot" }), contentEl);
  const heading = h("h2", { id: titleId }, title);
  const footer = h("div", { class: "dialog-footer" }, actions);
  const form = h("form", { class: "dialog-form", method: "dialog", novalidate: true },
    h("div", { class: "dialog-header" }, heading),
    body, footer);
  const dialog = h("dialog", { class: `dialog${wide ? " dialog-wide" : ""}`, "aria-labelledby": titleId, testid },
    form);

  let closed = false;
  // Runs once, at once when closed from code (the close event comes a task later) and
  // on the close event when the browser closed it (Escape).
  const teardown = () => {
    if (closed) return;
    closed = true;
    const i = dialogStack.indexOf(dialog);
    if (i >= 0) dialogStack.splice(i, 1);
    clearError();
    placeErrorRegion();
    dialog.remove(); // anything secret shown in it goes with it
    if (onClose) onClose();
    if (previousFocus && typeof previousFocus.focus === "function" && document.contains(previousFocus)) {
      previousFocus.focus();
    }
  };
  const close = () => {
    if (dialog.open) dialog.close();
    teardown();
  };
  form.addEventListener("submit", (event) => {
    // Enter in a field or a submit button: the caller decides; nothing closes by itself.
    event.preventDefault();
    if (onSubmit) onSubmit(event);
  });
  dialog.addEventListener("cancel", (event) => {
    // Escape closes, except while the dialog waits for the server.
    if (dialog.getAttribute("aria-busy") === "true") event.preventDefault();
  });
  dialog.addEventListener("close", teardown);

  document.body.appendChild(dialog);
  dialogStack.push(dialog);
  clearError();
  placeErrorRegion();
  dialog.showModal();
  const focusTarget = dialog.querySelector("[autofocus]")
    || dialog.querySelector("input, select, textarea, button:not(.alert-close)");
  if (focusTarget) focusTarget.focus();

  const setBusy = (busy) => {
    for (const el of form.querySelectorAll("button, input, select, textarea")) {
      if (busy) {
        el.dataset.wasDisabled = el.disabled ? "1" : "";
        el.disabled = true;
      } else if (el.dataset.wasDisabled !== undefined) {
        el.disabled = el.dataset.wasDisabled === "1";
        delete el.dataset.wasDisabled;
      }
    }
    dialog.setAttribute("aria-busy", busy ? "true" : "false");
  };
  return { dialog, form, content: contentEl, footer, heading, close, setBusy };
}

/**
 * Ask before doing something that cannot be undone. action() runs when OK is pressed;
 * while it runs the buttons are disabled; if it fails the error shows in the dialog,
 * which stays open. Resolves true when the action succeeded, false when cancelled.
 */
export function confirmAction({ title, message, okLabel = "OK", danger = false, action }) {
  return new Promise((resolve) => {
    let result = false;
    const cancel = button("Cancel", { testid: "confirm-cancel", onClick: () => dlg.close() });
    const ok = h("button", { type: "submit", class: `btn ${danger ? "btn-danger-solid" : "btn-primary"}`,
      testid: "confirm-ok" }, okLabel);
    const dlg = openDialog({
      title,
      content: (Array.isArray(message) ? message : [message]).map((m) => (typeof m === "string" ? h("p", null, m) : m)),
      actions: [cancel, ok],
      testid: "confirm-dialog",
      onSubmit: async () => {
        dlg.setBusy(true);
        try {
          if (action) await action();
          result = true;
          dlg.close();
        } catch (err) {
          dlg.setBusy(false);
          showError(err);
        }
      },
      onClose: () => resolve(result),
    });
    cancel.setAttribute("autofocus", "");
    cancel.focus();
  });
}

// ---- Theme -------------------------------------------------------------------------

const THEME_KEY = "kathan.theme";
const THEMES = ["system", "light", "dark"];
const THEME_LABEL = { system: "System", light: "Light", dark: "Dark" };

export function currentTheme() {
  try {
    const t = localStorage.getItem(THEME_KEY);
    return THEMES.includes(t) ? t : "system";
  } catch {
    return "system";
  }
}

export function applyTheme(theme) {
  if (theme === "system") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
  try {
    if (theme === "system") localStorage.removeItem(THEME_KEY);
    else localStorage.setItem(THEME_KEY, theme);
  } catch {
    /* storage may be unavailable: the theme just isn't remembered */
  }
}

/** A button that cycles system → light → dark. */
export function themeToggle() {
  const btn = h("button", { type: "button", class: "btn btn-ghost btn-sm", testid: "theme-toggle" });
  const render = () => {
    const t = currentTheme();
    btn.dataset.theme = t;
    btn.textContent = `Theme: ${THEME_LABEL[t]}`;
    const next = THEMES[(THEMES.indexOf(t) + 1) % THEMES.length];
    btn.setAttribute("aria-label", `Theme: ${THEME_LABEL[t]}. Switch to ${THEME_LABEL[next]}.`);
  };
  btn.addEventListener("click", () => {
    const t = currentTheme();
    applyTheme(THEMES[(THEMES.indexOf(t) + 1) % THEMES.length]);
    render();
  });
  render();
  return btn;
}

/** Tabs with arrow-key navigation. tabs: [{id, label, testid, panel: Node}]. */
export function tabs(items, { label, onChange } = {}) {
  const list = h("div", { class: "tabs", role: "tablist", "aria-label": label });
  const panels = [];
  const buttons = items.map((item, i) => {
    const tabId = `tab-${item.id}`;
    const panelId = `panel-${item.id}`;
    const btn = h("button", { type: "button", class: "tab", role: "tab", id: tabId,
      "aria-controls": panelId, testid: item.tabTestid }, item.label);
    const panel = h("div", { role: "tabpanel", id: panelId, "aria-labelledby": tabId, tabindex: "0",
      testid: item.testid }, item.panel);
    panels.push(panel);
    btn.addEventListener("click", () => select(i));
    btn.addEventListener("keydown", (e) => {
      let j = null;
      if (e.key === "ArrowRight") j = (i + 1) % items.length;
      else if (e.key === "ArrowLeft") j = (i - 1 + items.length) % items.length;
      else if (e.key === "Home") j = 0;
      else if (e.key === "End") j = items.length - 1;
      if (j !== null) {
        e.preventDefault();
        select(j);
        buttons[j].focus();
      }
    });
    return btn;
  });
  list.append(...buttons);
  function select(i) {
    buttons.forEach((b, k) => {
      b.setAttribute("aria-selected", k === i ? "true" : "false");
      b.tabIndex = k === i ? 0 : -1;
      panels[k].hidden = k !== i;
    });
    if (onChange) onChange(items[i].id, i);
  }
  return { list, panels, select };
}

/** Copy text; falls back to selecting it when the clipboard API is unavailable. */
export async function copyText(text, selectEl) {
  try {
    await navigator.clipboard.writeText(text);
    toast("Copied to clipboard");
    return true;
  } catch {
    if (selectEl) {
      const range = document.createRange();
      range.selectNodeContents(selectEl);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
    }
    showError("Copying is not allowed here. The text is selected: press Ctrl+C (⌘C on a Mac) to copy it.");
    return false;
  }
}
