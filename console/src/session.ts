// The admin session: who is signed in and the CSRF token every write carries.
import { ApiError, call, setCsrf, setUnauthorizedHandler } from "./api";
import { navigate } from "./router";
import { store } from "./store";
import type { Session } from "./types";

/** undefined: not checked yet; null: signed out; "unavailable": the manager has no session support. */
export type SessionState = Session | null | undefined | "unavailable";

export const session = store<SessionState>(undefined);

function signedIn(s: Session): void {
  setCsrf(s.csrfToken);
  session.set(s);
}

function signedOut(): void {
  setCsrf("");
  session.set(null);
}

export async function checkSession(): Promise<SessionState> {
  try {
    signedIn(await call<Session>("GET", "/auth/me", undefined, { quiet401: true }));
  } catch (e) {
    if (e instanceof ApiError && e.missing) session.set("unavailable");
    else signedOut();
  }
  return session.get();
}

export async function login(email: string, password: string): Promise<void> {
  signedIn(await call<Session>("POST", "/auth/login", { email, password }, { quiet401: true }));
}

export async function logout(): Promise<void> {
  try {
    await call("POST", "/auth/logout", undefined, { quiet401: true });
  } finally {
    signedOut();
    navigate("/login/");
  }
}

function loginPath(): string {
  const here = location.pathname + location.search;
  return here.startsWith("/console") ? `/login/?next=${encodeURIComponent(here)}` : "/login/";
}

// Any API call answering 401 means the session ended (expired, logged out elsewhere).
setUnauthorizedHandler(() => {
  if (session.get() === null) return;
  signedOut();
  navigate(loginPath());
});
