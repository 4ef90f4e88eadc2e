// A tiny DOM helper: elements are built with textContent, never innerHTML,
// so message bodies and queue names cannot inject markup.

import { ApiError } from "./api";

type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, string | number | boolean | EventListener | undefined | null>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = String(v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

// errorText is how any failure reads on the page.
export function errorText(e: unknown): string {
  if (e instanceof ApiError) return e.text();
  return e instanceof Error ? e.message : String(e);
}

// showError puts a failure in the alert banner (announced by screen readers).
export function showError(e: unknown, what = ""): void {
  const b = document.getElementById("banner")!;
  b.replaceChildren(
    h("div", { class: "error", "data-testid": "error" }, what ? `${what}: ${errorText(e)}` : errorText(e),
      h("button", { class: "link", "aria-label": "Dismiss", onclick: () => b.replaceChildren() }, "×")),
  );
}

export function clearError(): void {
  document.getElementById("banner")!.replaceChildren();
}

// notice confirms a done action politely.
export function notice(text: string): void {
  const s = document.getElementById("status")!;
  s.textContent = text;
  const b = document.getElementById("banner")!;
  b.replaceChildren(h("div", { class: "ok", "data-testid": "notice" }, text));
}

// confirmDialog asks before a destructive action; a native <dialog> is
// modal, traps focus and closes on Escape.
export function confirmDialog(question: string, action: string): Promise<boolean> {
  return new Promise((resolve) => {
    const dlg = h("dialog", { class: "confirm", "aria-label": action },
      h("p", {}, question),
      h("form", { method: "dialog" },
        h("button", { value: "cancel", autofocus: true }, "Cancel"),
        h("button", { value: "ok", class: "danger" }, action)));
    dlg.addEventListener("close", () => {
      resolve(dlg.returnValue === "ok");
      dlg.remove();
    });
    document.body.append(dlg);
    dlg.showModal();
  });
}

export function num(s: string | number | undefined | null): number {
  const n = Number(s ?? 0);
  return Number.isFinite(n) ? n : 0;
}

export function fmtNum(n: number): string {
  if (Math.abs(n) >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (Math.abs(n) >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

export function fmtAge(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return "—";
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d`;
}

export function fmtBytes(n: number): string {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(1)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)} KiB`;
  return `${n} B`;
}
