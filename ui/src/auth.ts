// The bearer token lives in sessionStorage (gone with the tab). Its payload
// is decoded, never verified, only to hide what the server would refuse:
// the server checks every call itself.

const key = "quorumq.token";

export function token(): string {
  return sessionStorage.getItem(key) ?? "";
}

export function setToken(t: string): void {
  if (t) sessionStorage.setItem(key, t);
  else sessionStorage.removeItem(key);
}

export interface Claims {
  tenant: string;
  scopes: Set<string>;
  exp?: number;
}

// claims of the current token; null without one (dev mode: the server
// grants every scope to tenant "default") or when it does not decode.
export function claims(): Claims | null {
  const t = token();
  if (!t) return null;
  const part = t.split(".")[1];
  if (!part) return null;
  try {
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "="));
    const c = JSON.parse(json) as { tenant?: unknown; scope?: unknown; exp?: unknown };
    const scope = typeof c.scope === "string" ? c.scope : "";
    return {
      tenant: typeof c.tenant === "string" ? c.tenant : "",
      scopes: new Set(scope.split(/\s+/).filter(Boolean)),
      exp: typeof c.exp === "number" ? c.exp : undefined,
    };
  } catch {
    return null;
  }
}

// can reports whether the token grants scope; without a token (dev mode)
// everything is offered and the server decides.
export function can(scope: string): boolean {
  const c = claims();
  return c === null || c.scopes.has(scope);
}

export function tenant(): string {
  return claims()?.tenant || (token() ? "?" : "default");
}
