// Tenants (cluster:admin): a tenant's quota and usage, and setting it.

import { api, type TenantQuotaResponse } from "../api";
import { can, tenant } from "../auth";
import { errorText, fmtBytes, h, notice, num, showError } from "../dom";

export function tenantsPage(main: HTMLElement): () => void {
  main.append(h("h1", {}, "Tenants"));
  if (!can("cluster:admin")) {
    main.append(h("p", { class: "error" }, "Tenant quotas need the cluster:admin scope."));
    return () => {};
  }
  const name = h("input", { id: "tenant-name", value: tenant() === "?" ? "" : tenant(), required: true, "aria-label": "Tenant" });
  const box = h("div", { "data-testid": "tenant" });
  const lookup = h("form", { class: "toolbar", onsubmit: (ev: Event) => { ev.preventDefault(); void load(); } },
    h("label", { for: "tenant-name" }, "Tenant"), name, h("button", { type: "submit" }, "Show"));
  main.append(lookup, box);

  async function load(): Promise<void> {
    const t = name.value.trim();
    if (!t) return;
    let r: TenantQuotaResponse;
    try {
      r = await api.getQuota(t);
    } catch (e) {
      box.replaceChildren(h("p", { class: "error" }, errorText(e)));
      return;
    }
    const q = r.quota ?? {};
    const u = r.usage ?? {};
    const lim = (v: string | undefined, f: (n: number) => string = String) => (num(v) ? f(num(v)) : "no limit");
    const mq = h("input", { id: "q-queues", type: "number", min: 0, value: num(q.maxQueues) });
    const mr = h("input", { id: "q-rate", type: "number", min: 0, value: num(q.maxSendRate) });
    const mb = h("input", { id: "q-bytes", type: "number", min: 0, value: num(q.maxStoredBytes) });
    box.replaceChildren(
      h("table", { class: "kv" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, ""), h("th", { scope: "col" }, "Usage"), h("th", { scope: "col" }, "Quota"))),
        h("tbody", {},
          h("tr", {}, h("th", { scope: "row" }, "Queues"), h("td", {}, String(num(u.queues))), h("td", {}, lim(q.maxQueues))),
          h("tr", {}, h("th", { scope: "row" }, "Stored"), h("td", {}, fmtBytes(num(u.storedBytes))), h("td", {}, lim(q.maxStoredBytes, fmtBytes))),
          h("tr", {}, h("th", { scope: "row" }, "Send rate"), h("td", {}, "—"), h("td", {}, lim(q.maxSendRate, (n) => `${n} msg/s`))))),
      h("form", {
        class: "create",
        onsubmit: async (ev: Event) => {
          ev.preventDefault();
          try {
            await api.setQuota(t, { maxQueues: String(num(mq.value)), maxSendRate: String(num(mr.value)), maxStoredBytes: String(num(mb.value)) });
            notice(`Quota of ${t} set`);
          } catch (e) {
            showError(e, "Set quota");
          }
          await load();
        },
      },
      h("fieldset", {}, h("legend", {}, `Quota of ${t} (0: no limit)`),
        h("label", { for: "q-queues" }, "Max queues"), mq,
        h("label", { for: "q-rate" }, "Max send rate (msg/s)"), mr,
        h("label", { for: "q-bytes" }, "Max stored bytes"), mb,
        h("button", { type: "submit" }, "Set quota"))),
    );
  }
  void load();
  return () => {};
}
