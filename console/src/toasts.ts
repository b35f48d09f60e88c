// Short-lived notices: results of the admin's own actions and live activity (SSE).
import { store } from "./store";

export interface Toast {
  id: number;
  kind: "info" | "ok" | "error";
  text: string;
}

export const toasts = store<Toast[]>([]);
let next = 1;

export function toast(text: string, kind: Toast["kind"] = "info"): void {
  const t = { id: next++, kind, text };
  // At most three on screen: a burst of events must not cover the page (the feed keeps them all).
  toasts.set([...toasts.get(), t].slice(-3));
  setTimeout(() => dismiss(t.id), kind === "error" ? 10000 : 4000);
}

function dismiss(id: number): void {
  toasts.set(toasts.get().filter((t) => t.id !== id));
}
