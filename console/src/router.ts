// Client-side navigation between console pages: history.pushState, no server round trip. Full loads
// of /console* go through the server, which redirects to /login/ without a session.
import { useEffect, useRef } from "preact/hooks";
import { store, useStore } from "./store";

const path = store(location.pathname + location.search);

export function navigate(to: string, replace = false): void {
  if (to === path.get()) return;
  if (replace) history.replaceState(null, "", to);
  else history.pushState(null, "", to);
  path.set(to);
  window.scrollTo(0, 0);
}

addEventListener("popstate", () => path.set(location.pathname + location.search));

/** The current path with its query string. */
export function usePath(): string {
  return useStore(path);
}

export function query(name: string): string | null {
  return new URLSearchParams(path.get().split("?")[1] ?? "").get(name);
}

/** An anchor that navigates in place unless a modifier asks for a new tab. */
export function onLinkClick(e: MouseEvent): void {
  const a = (e.currentTarget as HTMLAnchorElement | null) ?? null;
  if (!a || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  navigate(a.getAttribute("href") ?? "/");
}

/** Calls `f` every `ms` while the page is visible (the first load is the caller's). */
export function usePoll(f: () => void, ms: number): void {
  const latest = useRef(f);
  latest.current = f;
  useEffect(() => {
    const t = setInterval(() => {
      if (document.visibilityState === "visible") latest.current();
    }, ms);
    return () => clearInterval(t);
  }, [ms]);
}
