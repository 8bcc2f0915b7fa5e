import type { z } from "zod";

const TOKEN_KEY = "molt.token";

/** An answer other than 2xx, with the server's error code and message (one error shape everywhere). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export function token(): string | null {
  return localStorage.getItem(TOKEN_KEY);
}

export function setToken(value: string | null): void {
  if (value === null) localStorage.removeItem(TOKEN_KEY);
  else localStorage.setItem(TOKEN_KEY, value);
}

export function authHeaders(): Record<string, string> {
  const t = token();
  return t ? { authorization: `Bearer ${t}` } : {};
}

export async function failure(res: Response): Promise<ApiError> {
  const text = await res.text();
  try {
    const body = JSON.parse(text) as { error?: { code?: string; message?: string } };
    return new ApiError(res.status, body.error?.code ?? "error", body.error?.message ?? text);
  } catch {
    return new ApiError(res.status, "error", text || res.statusText);
  }
}

/** GET through the gateway, parsed with the view's schema from contracts (so drift shows as an error). */
export async function get<S extends z.ZodType>(path: string, schema: S): Promise<z.infer<S>> {
  const res = await fetch(path, { headers: authHeaders() });
  if (!res.ok) throw await failure(res);
  return schema.parse(await res.json());
}

/** An operator command; the Idempotency-Key makes a double click one command. */
export async function command(path: string): Promise<unknown> {
  const res = await fetch(path, {
    method: "POST",
    headers: { ...authHeaders(), "content-type": "application/json", "idempotency-key": crypto.randomUUID() },
    body: "{}",
  });
  if (!res.ok) throw await failure(res);
  return res.json();
}
