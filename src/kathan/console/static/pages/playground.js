// Playground: multi-turn chat with streamed replies, parameters, voice options and
// "View code". Runs under the account's own limits (usage shows as "Playground").

import * as api from "../api.js";
import { h, mount, field, checkbox, select, setOptions, button, uid } from "../dom.js";
import { showError, clearError, openDialog, tabs, copyText } from "../ui.js";
import { curlCode, pythonCode, jsCode } from "../codegen.js";

const DEFAULT_SCHEMA = `{
  "type": "object",
  "properties": {
    "answer": { "type": "string" }
  },
  "required": ["answer"],
  "additionalProperties": false
}`;

function numberInput(testid, attrs) {
  return h("input", { type: "number", inputmode: "decimal", placeholder: "Default", testid, ...attrs });
}

/** Parse a number field: undefined when empty; throws a message for people when invalid. */
function readNumber(input, label, { min, max, integer = false } = {}) {
  const raw = input.value.trim();
  if (raw === "") return undefined;
  const n = Number(raw);
  const bad = !Number.isFinite(n) || (integer && !Number.isInteger(n))
    || (min !== undefined && n < min) || (max !== undefined && n > max);
  if (bad) {
    const range = min !== undefined && max !== undefined ? ` between ${min} and ${max}` : min !== undefined ? ` of at least ${min}` : "";
    const err = new Error(`${label} must be ${integer ? "a whole number" : "a number"}${range}.`);
    err.field = input;
    throw err;
  }
  return n;
}

export function parseStops(text) {
  return text.split(/[\n,]/).map((t) => t.trim()).filter(Boolean);
}

function fmtMs(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

export function renderPlayground(root) {
  // ---- Controls --------------------------------------------------------------------
  const model = h("select", { testid: "pg-model", disabled: true }, h("option", { value: "" }, "Loading models…"));
  const system = h("textarea", { rows: "2", testid: "pg-system", placeholder: "You are a helpful assistant." });
  const input = h("textarea", { rows: "2", testid: "pg-input", placeholder: "Type a message…" });
  const sendBtn = h("button", { type: "submit", class: "btn btn-primary", testid: "pg-send" }, "Send");
  const stopBtn = button("Stop", { class: "btn btn-danger", testid: "pg-stop", disabled: true });
  const clearBtn = button("Clear", { testid: "pg-clear" });
  const codeBtn = button("View code", { testid: "pg-view-code" });

  const temperature = numberInput("pg-temperature", { min: "0", max: "2", step: "0.1" });
  const topP = numberInput("pg-top-p", { min: "0", max: "1", step: "0.05" });
  const maxTokens = numberInput("pg-max-tokens", { min: "1", step: "1", inputmode: "numeric" });
  const seed = numberInput("pg-seed", { step: "1", inputmode: "numeric" });
  const stops = h("textarea", { rows: "2", testid: "pg-stop-seqs", placeholder: "Comma or newline separated" });
  const format = select([
    { value: "text", label: "Text" },
    { value: "json_object", label: "JSON object" },
    { value: "json_schema", label: "JSON schema" },
  ], { testid: "pg-format" });
  const schemaName = h("input", { type: "text", value: "response", testid: "pg-schema-name" });
  const schema = h("textarea", { class: "schema", rows: "8", testid: "pg-schema", spellcheck: "false", value: DEFAULT_SCHEMA });
  const schemaFields = h("div", { class: "form", hidden: true },
    field("Schema name", schemaName).wrap, field("JSON schema", schema).wrap);
  format.addEventListener("change", () => { schemaFields.hidden = format.value !== "json_schema"; });

  const finetune = checkbox("Fine-tuned voice", { testid: "pg-finetune" });
  const language = select([{ value: "", label: "Default" }], { testid: "pg-language", disabled: true });
  const accent = select([{ value: "", label: "Default" }], { testid: "pg-accent", disabled: true });
  const gender = select([{ value: "", label: "Default" }], { testid: "pg-gender", disabled: true });
  const voiceNote = h("p", { class: "hint" }, "Loading voices…");
  let voices = null;

  const ttft = h("strong", { testid: "pg-ttft" }, "—");
  const tps = h("strong", { testid: "pg-tps" }, "—");
  const tokens = h("strong", { testid: "pg-tokens" }, "—");
  const announcer = h("div", { class: "visually-hidden", role: "status", "aria-live": "polite" });

  const emptyState = h("div", { class: "empty" }, h("p", null, "Send a message to start a conversation."),
    h("p", { class: "hint" }, "Enter sends; Shift+Enter starts a new line."));
  const log = h("div", { class: "messages", role: "log", "aria-label": "Conversation", testid: "pg-messages" }, emptyState);

  const composer = h("form", { class: "composer", "aria-label": "Message" },
    h("div", { class: "field" }, h("label", { class: "visually-hidden", for: (input.id = uid("pg")) }, "Message"), input),
    h("div", { class: "btns" }, stopBtn, sendBtn));

  root.append(
    h("div", { class: "page-header" },
      h("div", null, h("h1", null, "Playground"),
        h("p", null, "Chat with a model under your account's limits. These requests show as “Playground” in Usage.")),
      h("div", { class: "page-actions" }, codeBtn, clearBtn)),
    h("div", { class: "playground" },
      h("div", { class: "pg-main" },
        h("div", { class: "card" }, h("div", { class: "form" },
          field("Model", model).wrap,
          field("System prompt", system, "Optional. Sent first in every request.").wrap)),
        h("div", { class: "card pg-chat" },
          log,
          composer,
          h("div", { class: "metrics", "aria-label": "Last reply" },
            h("span", null, "Time to first token: ", ttft),
            h("span", null, "Speed: ", tps),
            h("span", null, "Tokens: ", tokens)),
          announcer)),
      h("aside", { class: "card pg-side", "aria-label": "Parameters" },
        h("h2", null, "Parameters"),
        h("div", { class: "form" },
          h("p", { class: "hint" }, "Empty fields are not sent: the model's defaults apply."),
          h("div", { class: "form-row" }, field("Temperature", temperature).wrap, field("Top P", topP).wrap),
          h("div", { class: "form-row" }, field("Max tokens", maxTokens).wrap, field("Seed", seed).wrap),
          field("Stop sequences", stops, "Up to 4, comma or newline separated.").wrap,
          field("Response format", format).wrap,
          schemaFields,
          h("h3", null, "Voice"),
          finetune.wrap,
          field("Language", language).wrap,
          field("Accent", accent).wrap,
          field("Gender", gender).wrap,
          voiceNote))));

  // ---- Conversation state ------------------------------------------------------------
  /** [{role, content, state}] — only finished or stopped replies are sent back. */
  let turns = [];
  let current = null; // {controller, reply}
  let alive = true;

  function buildBody(pending) {
    if (!model.value) throw new Error("Choose a model first.");
    const messages = [];
    const sys = system.value;
    if (sys.trim()) messages.push({ role: "system", content: sys });
    for (const t of turns) {
      if (t.role === "assistant" && (t.state === "error" || !t.content)) continue;
      messages.push({ role: t.role, content: t.content });
    }
    if (pending) messages.push({ role: "user", content: pending });
    const body = { model: model.value, messages, stream: true, stream_options: { include_usage: true } };
    const t = readNumber(temperature, "Temperature", { min: 0, max: 2 });
    if (t !== undefined) body.temperature = t;
    const p = readNumber(topP, "Top P", { min: 0, max: 1 });
    if (p !== undefined) body.top_p = p;
    const m = readNumber(maxTokens, "Max tokens", { min: 1, integer: true });
    if (m !== undefined) body.max_tokens = m;
    const st = parseStops(stops.value);
    if (st.length) body.stop = st;
    const sd = readNumber(seed, "Seed", { integer: true });
    if (sd !== undefined) body.seed = sd;
    if (format.value === "json_object") body.response_format = { type: "json_object" };
    if (format.value === "json_schema") {
      let parsed;
      try {
        parsed = JSON.parse(schema.value);
      } catch (e) {
        const err = new Error(`The JSON schema is not valid JSON: ${e.message}`);
        err.field = schema;
        throw err;
      }
      body.response_format = { type: "json_schema", json_schema: { name: schemaName.value.trim() || "response", schema: parsed } };
    }
    if (finetune.control.checked) body.finetune = true;
    if (language.value) body.language = language.value;
    if (accent.value) body.accent = accent.value;
    if (gender.value) body.gender = gender.value;
    return body;
  }

  function nearBottom() {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  }
  function scrollDown(force) {
    if (force || nearBottom()) log.scrollTop = log.scrollHeight;
  }

  function addMessage(role, text) {
    if (emptyState.isConnected) emptyState.remove();
    const bubble = h("div", { class: "bubble", testid: role === "assistant" ? "pg-reply" : "pg-user" }, text);
    const meta = h("div", { class: "msg-meta" });
    const el = h("div", { class: `msg msg-${role}` },
      h("div", { class: "msg-role" }, role === "assistant" ? "Assistant" : "You"), bubble, meta);
    log.append(el);
    scrollDown(true);
    return { bubble, meta, el };
  }

  function setStreaming(on) {
    sendBtn.disabled = on;
    stopBtn.disabled = !on;
    model.disabled = on || !model.options.length || !model.value;
  }

  async function send() {
    if (current) return;
    clearError();
    const text = input.value;
    if (!text.trim()) {
      input.focus();
      return;
    }
    let body;
    try {
      body = buildBody(text);
    } catch (err) {
      showError(err.message);
      if (err.field) err.field.focus();
      return;
    }
    input.value = "";
    turns.push({ role: "user", content: text });
    addMessage("user", text);
    const turn = { role: "assistant", content: "", state: "streaming" };
    turns.push(turn);
    const view = addMessage("assistant", "");
    view.bubble.dataset.state = "streaming";
    view.bubble.setAttribute("aria-busy", "true");
    view.meta.textContent = "Waiting for the first token…";

    const controller = new AbortController();
    current = { controller, turn };
    setStreaming(true);
    ttft.textContent = "—";
    tps.textContent = "—";
    tokens.textContent = "—";

    const start = performance.now();
    let first = null;
    let pieces = 0;
    let usage = null;
    let lastPaint = 0;
    const speed = () => {
      const seconds = (performance.now() - first) / 1000;
      const n = usage ? usage.completion_tokens : pieces;
      return seconds > 0 && n ? n / seconds : null;
    };
    const paintMetrics = (final) => {
      const v = first !== null ? speed() : null;
      tps.textContent = v === null ? "—" : `${final && usage ? "" : "≈"}${v.toFixed(1)} tokens/s`;
      tokens.textContent = usage
        ? `${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion`
        : pieces ? `≈${pieces} completion` : "—";
    };

    try {
      await api.streamChat(body, {
        signal: controller.signal,
        onDelta: (piece) => {
          if (first === null) {
            first = performance.now();
            ttft.textContent = fmtMs(first - start);
            view.meta.textContent = "";
          }
          pieces += 1;
          turn.content += piece;
          view.bubble.append(document.createTextNode(piece));
          scrollDown(false);
          const now = performance.now();
          if (now - lastPaint > 150) {
            lastPaint = now;
            paintMetrics(false);
          }
        },
        onUsage: (u) => { usage = u; },
      });
      finish("done");
    } catch (err) {
      if (err && err.name === "AbortError") {
        finish("stopped");
      } else {
        finish("error", err);
      }
    }

    function finish(state, err) {
      turn.state = state;
      view.bubble.dataset.state = state;
      view.bubble.removeAttribute("aria-busy");
      // Join the pieces into one text node (same text, fewer nodes).
      view.bubble.textContent = turn.content;
      paintMetrics(true);
      const parts = [];
      if (first !== null) parts.push(`${fmtMs(first - start)} to first token`);
      if (tps.textContent !== "—") parts.push(tps.textContent);
      if (usage) parts.push(`${usage.completion_tokens} tokens`);
      mount(view.meta, parts.join(" · "));
      if (state === "stopped") view.meta.append(h("span", { class: "stopped" }, "Stopped"));
      if (state === "error") view.meta.append(h("span", { class: "failed" }, `Failed: ${api.errorText(err)}`));
      if (state === "done" && !turn.content) view.meta.append(h("span", null, "(empty reply)"));
      announcer.textContent = state === "done" ? "Reply finished." : state === "stopped" ? "Reply stopped." : "Reply failed.";
      if (current && current.turn === turn) current = null;
      if (alive) {
        setStreaming(false);
        if (state === "error") showError(err);
        if (state !== "error" || !err?.sessionExpired) input.focus();
      }
    }
  }

  composer.addEventListener("submit", (e) => {
    e.preventDefault();
    send();
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      if (!current) composer.requestSubmit();
    }
  });
  stopBtn.addEventListener("click", () => {
    if (current) current.controller.abort();
  });
  clearBtn.addEventListener("click", () => {
    if (current) current.controller.abort();
    turns = [];
    mount(log, emptyState);
    ttft.textContent = "—";
    tps.textContent = "—";
    tokens.textContent = "—";
    clearError();
    input.focus();
  });
  codeBtn.addEventListener("click", () => {
    clearError();
    let body;
    try {
      body = buildBody(input.value.trim() ? input.value : null);
    } catch (err) {
      showError(err.message);
      if (err.field) err.field.focus();
      return;
    }
    viewCodeDialog(body);
  });

  // ---- Data: models and voices ------------------------------------------------------
  api.get("/v1/models").then((res) => {
    if (!alive) return;
    // The playground chats: embedding models (embeddings only) are left out.
    const ids = (res.data || [])
      .filter((m) => !m.endpoints || m.endpoints.includes("chat/completions"))
      .map((m) => m.id);
    if (!ids.length) {
      setOptions(model, [{ value: "", label: "No models available" }]);
      return;
    }
    setOptions(model, ids);
    model.disabled = Boolean(current);
  }).catch((err) => {
    if (!alive) return;
    setOptions(model, [{ value: "", label: "Models could not be loaded" }]);
    showError(err);
  });

  function fillAccents() {
    const lang = voices && voices.languages.find((l) => l.code === language.value);
    const options = [{ value: "", label: "Default" }];
    if (lang) for (const a of lang.accents || []) options.push({ value: a.name, label: `${a.name} (${a.locale})` });
    setOptions(accent, options);
    accent.disabled = !lang;
  }
  language.addEventListener("change", fillAccents);

  api.get("/v1/voices").then((res) => {
    if (!alive) return;
    voices = { genders: res.genders || [], languages: res.languages || [] };
    setOptions(language, [{ value: "", label: "Default" },
      ...voices.languages.map((l) => ({ value: l.code, label: `${l.name} (${l.code})` }))]);
    setOptions(gender, [{ value: "", label: "Default" }, ...voices.genders.map((g) => ({ value: g, label: g[0].toUpperCase() + g.slice(1) }))]);
    language.disabled = false;
    gender.disabled = false;
    fillAccents();
    voiceNote.textContent = "Default: not sent. Accent choices depend on the language.";
  }).catch(() => {
    if (!alive) return;
    voiceNote.textContent = "Voice options are not available on this server.";
  });

  return () => {
    alive = false;
    if (current) current.controller.abort();
  };
}

function viewCodeDialog(body) {
  const snippets = [
    { id: "curl", label: "curl", code: curlCode(body) },
    { id: "python", label: "Python", code: pythonCode(body) },
    { id: "js", label: "JavaScript", code: jsCode(body) },
  ];
  let active = 0;
  const panels = snippets.map((sn) => h("pre", { class: "code-block" }, h("code", { testid: `code-${sn.id}` }, sn.code)));
  const t = tabs(snippets.map((sn, i) => ({ id: `code-${sn.id}-${uid("t")}`, label: sn.label, panel: panels[i],
    tabTestid: `code-tab-${sn.id}` })), { label: "Language", onChange: (_, i) => { active = i; } });
  const copy = button("Copy", { class: "btn btn-sm", testid: "code-copy",
    onClick: () => copyText(snippets[active].code, panels[active]) });
  const dlg = openDialog({
    title: "Code for this request",
    wide: true,
    testid: "code-dialog",
    content: [
      h("p", { class: "hint" }, "The exact request body the playground sends. Replace YOUR_API_KEY with one of your keys."),
      h("div", { class: "code-actions" }, t.list, copy),
      t.panels,
    ],
    actions: [button("Close", { class: "btn btn-primary", onClick: () => dlg.close() })],
  });
  t.select(0);
}
