// Models: what this server serves, from GET /v1/catalog.

import * as api from "../api.js";
import { h, mount, badge, chip, loading, empty, button, fmtDate } from "../dom.js";
import { showError } from "../ui.js";

const CIRCUIT_LABEL = { closed: "circuit closed", open: "circuit open", half_open: "circuit half-open" };

function deploymentItem(d) {
  return h("li", { testid: "deployment", dataset: { healthy: String(Boolean(d.healthy)) } },
    h("div", null,
      h("div", { class: "dep-name" }, d.name),
      h("div", { class: "muted mono" }, `${d.provider} · ${d.model}`)),
    h("div", { class: "chips" },
      d.healthy ? badge("Healthy", "success") : badge("Unhealthy", "danger"),
      d.circuit ? badge(CIRCUIT_LABEL[d.circuit] || d.circuit, d.circuit === "closed" ? "neutral" : "warning") : null));
}

function modelCard(m) {
  const aliases = m.aliases || [];
  const caps = m.capabilities || [];
  const deps = m.deployments || [];
  return h("article", { class: "card model-card", testid: "model-card", dataset: { modelId: m.id } },
    h("div", { class: "model-head" },
      h("h2", null, m.id),
      m.ready ? badge("Ready", "success", { testid: "model-ready" }) : badge("Not ready", "warning", { testid: "model-ready" })),
    h("dl", { class: "kv" },
      h("dt", null, "Owner"), h("dd", null, m.owned_by || "—"),
      h("dt", null, "Backend"), h("dd", null, m.backend || "—"),
      m.created ? [h("dt", null, "Added"), h("dd", null, fmtDate(new Date(m.created * 1000).toISOString()))] : null,
      h("dt", null, "Aliases"), h("dd", null, aliases.length ? h("div", { class: "chips" }, aliases.map(chip)) : h("span", { class: "muted" }, "None"))),
    caps.length ? h("div", null, h("div", { class: "field-label" }, "Capabilities"),
      h("div", { class: "chips" }, caps.map((c) => h("span", { class: "badge badge-accent" }, c)))) : null,
    deps.length
      ? h("div", null, h("div", { class: "field-label" }, "Deployments"), h("ul", { class: "deployments" }, deps.map(deploymentItem)))
      : (m.backend === "local" ? h("p", { class: "hint" }, "Served by the embedded engine on this server.") : null));
}

export function renderModels(root) {
  const content = h("div", { "aria-live": "polite", testid: "models-list" }, loading());
  root.append(
    h("div", { class: "page-header" }, h("div", null, h("h1", null, "Models"),
      h("p", null, "The models this server serves, with their aliases and where they run."))),
    content);
  let alive = true;
  const load = async () => {
    try {
      const res = await api.get("/v1/catalog");
      if (!alive) return;
      const models = res.data || [];
      mount(content, models.length
        ? h("div", { class: "model-grid" }, models.map(modelCard))
        : empty("No models are configured on this server."));
    } catch (err) {
      if (!alive) return;
      mount(content, empty("The models could not be loaded.", button("Try again", { onClick: () => { mount(content, loading()); load(); } })));
      showError(err);
    }
  };
  load();
  return () => { alive = false; };
}
