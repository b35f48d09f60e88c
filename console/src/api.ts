// Every call to the manager: same-origin fetch with the session cookie, the CSRF token on writes
// (docs/reference/api.md §1.3), `{message}` errors surfaced as ApiError, and a 401 sending the
// admin to /login/.

let csrfToken = "";
let onUnauthorized: () => void = () => {};

export function setCsrf(token: string): void {
  csrfToken = token;
}

export function setUnauthorizedHandler(f: () => void): void {
  onUnauthorized = f;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
  /** The route is not served by this manager (a backend part not built yet). */
  get missing(): boolean {
    return this.status === 404 && this.message === "Not Found";
  }
}

function writeHeaders(method: string, extra: Record<string, string>): Record<string, string> {
  return method === "GET" || !csrfToken ? extra : { ...extra, "X-RDS-CSRF": csrfToken };
}

async function errorOf(resp: Response): Promise<ApiError> {
  let message = `HTTP ${resp.status}`;
  try {
    const body = await resp.json();
    if (body && typeof body.message === "string") message = body.message;
  } catch {
    /* not JSON: keep the status line */
  }
  return new ApiError(resp.status, message);
}

export interface CallOptions {
  /** Don't redirect to /login/ on 401 (the session check itself). */
  quiet401?: boolean;
}

/** A raw response after the error checks: for downloads and non-JSON bodies. */
export async function request(
  method: string,
  path: string,
  body?: BodyInit,
  contentType?: string,
  opts: CallOptions = {},
): Promise<Response> {
  const headers = writeHeaders(method, contentType ? { "Content-Type": contentType } : {});
  const resp = await fetch(path, { method, headers, body, credentials: "same-origin" });
  if (!resp.ok) {
    if (resp.status === 401 && !opts.quiet401) onUnauthorized();
    throw await errorOf(resp);
  }
  return resp;
}

export async function call<T = unknown>(
  method: string,
  path: string,
  json?: unknown,
  opts: CallOptions = {},
): Promise<T> {
  const resp = await request(
    method,
    path,
    json === undefined ? undefined : JSON.stringify(json),
    json === undefined ? undefined : "application/json",
    opts,
  );
  if (resp.status === 204) return undefined as T;
  const text = await resp.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

export const get = <T>(path: string, opts?: CallOptions) => call<T>("GET", path, undefined, opts);
export const post = <T>(path: string, json?: unknown) => call<T>("POST", path, json);
export const del = (path: string) => call<void>("DELETE", path);

/** PUT a file with upload progress (fetch cannot report it), as `application/octet-stream`. */
export function putWithProgress(
  path: string,
  file: Blob,
  onProgress: (sent: number, total: number) => void,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", path);
    for (const [k, v] of Object.entries(
      writeHeaders("PUT", { "Content-Type": "application/octet-stream" }),
    ))
      xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : file.size);
    xhr.onerror = () => reject(new ApiError(0, "Network error during upload"));
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) return resolve();
      if (xhr.status === 401) onUnauthorized();
      let message = `HTTP ${xhr.status}`;
      try {
        message = JSON.parse(xhr.responseText).message ?? message;
      } catch {
        /* keep the status line */
      }
      reject(new ApiError(xhr.status, message));
    };
    xhr.send(file);
  });
}

export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
