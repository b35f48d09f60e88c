// Live activity over SSE (`/v1/admin/events`, docs/reference/api-admin.md Activity): a feed of the
// events seen since the console opened, toasts, and a hook pages use to refresh when something they
// show changed. EventSource reconnects by itself and sends Last-Event-ID, so the server replays
// what was missed.
import { useEffect } from "preact/hooks";
import { checkSession } from "./session";
import { store } from "./store";
import { toast } from "./toasts";
import type { ActivityEvent } from "./types";

export type LiveState = "off" | "connecting" | "live" | "unavailable";

export const live = store<LiveState>("off");
/** Newest first, at most 200. */
export const feed = store<ActivityEvent[]>([]);

const listeners = new Set<(e: ActivityEvent) => void>();
let source: EventSource | null = null;
let retry: ReturnType<typeof setTimeout> | undefined;

// Frequent or self-evident events stay in the feed without a toast.
const QUIET = new Set(["exec.command", "runTs.executed", "runJs.executed", "auth.login"]);

export function metaOf(e: ActivityEvent): unknown {
  if (e.meta !== undefined) return e.meta;
  try {
    return e.metaJson ? JSON.parse(e.metaJson) : null;
  } catch {
    return e.metaJson;
  }
}

function receive(e: ActivityEvent): void {
  const seen = feed.get();
  if (seen.some((x) => x.id === e.id)) return;
  feed.set([e, ...seen].slice(0, 200));
  if (!QUIET.has(e.type)) toast(e.message || e.type, e.type.endsWith("error") || e.type.endsWith("failed") ? "error" : "info");
  listeners.forEach((f) => f(e));
}

export function startEvents(): void {
  stopEvents();
  live.set("connecting");
  const es = new EventSource("/v1/admin/events");
  source = es;
  es.onopen = () => live.set("live");
  es.addEventListener("activity", (m) => {
    try {
      receive(JSON.parse((m as MessageEvent<string>).data) as ActivityEvent);
    } catch {
      /* a malformed frame is skipped; the next one may be fine */
    }
  });
  es.onerror = () => {
    if (es.readyState !== EventSource.CLOSED) return live.set("connecting");
    // Refused (no stream on this manager, or the session ended): check the session, retry later.
    live.set("unavailable");
    source = null;
    retry = setTimeout(async () => {
      const s = await checkSession();
      if (s && s !== "unavailable") startEvents();
    }, 15000);
  };
}

export function stopEvents(): void {
  clearTimeout(retry);
  source?.close();
  source = null;
  live.set("off");
}

/** Calls `f` for each live event whose entity type is in `entities`. */
export function useActivity(entities: string[], f: (e: ActivityEvent) => void): void {
  useEffect(() => {
    const g = (e: ActivityEvent) => {
      if (entities.includes(e.entityType)) f(e);
    };
    listeners.add(g);
    return () => {
      listeners.delete(g);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);
}
