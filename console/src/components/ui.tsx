// Small shared pieces. Everything that may carry guest or user text renders it as a text node.
import type { ComponentChildren } from "preact";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { ApiError, errorText, get } from "../api";
import { time, until } from "../format";
import { onLinkClick } from "../router";
import { toast } from "../toasts";

export function Link(props: { href: string; children: ComponentChildren; class?: string; testid?: string }) {
  return (
    <a href={props.href} class={props.class} onClick={onLinkClick} data-testid={props.testid}>
      {props.children}
    </a>
  );
}

export interface Loaded<T> {
  data: T | undefined;
  error: ApiError | Error | undefined;
  loading: boolean;
  reload: () => Promise<void>;
}

/** Loads `f` on mount (and when `deps` change); keeps the last data while reloading. */
export function useLoad<T>(f: () => Promise<T>, deps: unknown[] = []): Loaded<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<ApiError | Error | undefined>(undefined);
  const [loading, setLoading] = useState(true);
  const alive = useRef(true);
  // Only the latest load lands: an older answer (a poll of the previous filter) arriving late is dropped.
  const seq = useRef(0);
  // eslint-disable-next-line react-hooks/exhaustive-deps
  const reload = useCallback(async () => {
    const mine = ++seq.current;
    const current = () => alive.current && mine === seq.current;
    setLoading(true);
    try {
      const v = await f();
      if (!current()) return;
      setData(v);
      setError(undefined);
    } catch (e) {
      if (current()) setError(e instanceof Error ? e : new Error(String(e)));
    } finally {
      if (current()) setLoading(false);
    }
  }, deps);
  useEffect(() => {
    alive.current = true;
    void reload();
    return () => {
      alive.current = false;
    };
  }, [reload]);
  return { data, error, loading, reload };
}

/** `GET path` on mount; the first answer marks the page interactive. */
export function useGet<T>(path: string, deps: unknown[] = []): Loaded<T> {
  return useLoad(async () => {
    const v = await get<T>(path);
    markReady();
    return v;
  }, [path, ...deps]);
}

/** A labelled input (or textarea) bound to a string. */
export function Field(props: {
  label: string;
  name: string;
  value: string;
  onInput: (v: string) => void;
  type?: "text" | "email" | "password" | "number" | "url" | "datetime-local";
  rows?: number;
  placeholder?: string;
  required?: boolean;
  maxLength?: number;
  min?: number;
  mono?: boolean;
  autocomplete?: string;
  onKeyDown?: (e: KeyboardEvent) => void;
}) {
  const common = {
    name: props.name,
    value: props.value,
    placeholder: props.placeholder,
    required: props.required,
    maxLength: props.maxLength,
    class: props.mono ? "mono" : undefined,
    onInput: (e: Event) => props.onInput((e.currentTarget as HTMLInputElement).value),
    onKeyDown: props.onKeyDown,
  };
  return (
    <label>
      {props.label}
      {props.rows ? (
        <textarea rows={props.rows} {...common} />
      ) : (
        // Preact types `type` as a union keyed per literal; any of the allowed ones is fine here.
        <input type={(props.type ?? "text") as "text"} min={props.min} autocomplete={props.autocomplete} {...common} />
      )}
    </label>
  );
}

/** A table head from column titles. */
export function Head(props: { cols: string[] }) {
  return (
    <thead>
      <tr>
        {props.cols.map((c, i) => (
          <th key={i}>{c}</th>
        ))}
      </tr>
    </thead>
  );
}

/** A form's submit: a busy flag and the last failure's message, shown beside the form. */
export function useSubmit(): { busy: boolean; error: string | null; run: (f: () => Promise<unknown>) => Promise<void> } {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const run = async (f: () => Promise<unknown>) => {
    setBusy(true);
    setError(null);
    try {
      await f();
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  };
  return { busy, error, run };
}

/** Runs an action with a busy flag; failures become an error toast and are returned as text. */
export function useAction(): [boolean, (f: () => Promise<unknown>) => Promise<boolean>] {
  const [busy, setBusy] = useState(false);
  const run = async (f: () => Promise<unknown>) => {
    setBusy(true);
    try {
      await f();
      return true;
    } catch (e) {
      toast(errorText(e), "error");
      return false;
    } finally {
      setBusy(false);
    }
  };
  return [busy, run];
}

export function LoadError(props: { error: Error | undefined; what: string }) {
  if (!props.error) return null;
  if (props.error instanceof ApiError && props.error.missing)
    return <NotAvailable what={props.what} />;
  return <p class="error" role="alert">{props.error.message}</p>;
}

export function NotAvailable(props: { what: string }) {
  return (
    <div class="notice" data-testid="not-available">
      {props.what} not available: this manager does not serve it yet.
    </div>
  );
}

export function ErrorLine(props: { text: string | null | undefined }) {
  return props.text ? <p class="error" role="alert">{props.text}</p> : null;
}

/** A button that asks for a second click before it runs a destructive action. */
export function ConfirmButton(props: {
  label: string;
  confirm?: string;
  onConfirm: () => void;
  disabled?: boolean;
  testid?: string;
}) {
  const [asking, setAsking] = useState(false);
  useEffect(() => {
    if (!asking) return;
    const t = setTimeout(() => setAsking(false), 5000);
    return () => clearTimeout(t);
  }, [asking]);
  if (!asking)
    return (
      <button class="danger" disabled={props.disabled} onClick={() => setAsking(true)} data-testid={props.testid}>
        {props.label}
      </button>
    );
  return (
    <span class="confirm">
      <button
        class="danger solid"
        data-testid={props.testid ? `${props.testid}-confirm` : undefined}
        onClick={() => {
          setAsking(false);
          props.onConfirm();
        }}
      >
        {props.confirm ?? `Yes, ${props.label.toLowerCase()}`}
      </button>
      <button onClick={() => setAsking(false)}>Cancel</button>
    </span>
  );
}

export function StateBadge(props: { state: string }) {
  return <span class={`badge state-${props.state.toLowerCase()}`}>{props.state}</span>;
}

/** A VM's deadline: relative ("in 4 min"), the absolute time and the action on hover; "–" when none. */
export function Deadline(props: { expiresAt: string | null | undefined; action?: string; testid?: string }) {
  if (!props.expiresAt) return <span class="muted" data-testid={props.testid}>–</span>;
  const due = until(props.expiresAt);
  return (
    <time dateTime={props.expiresAt} title={`${time(props.expiresAt)}${props.action ? ` (then ${props.action})` : ""}`} data-testid={props.testid}>
      {props.action && due !== "due now" ? `${props.action} ${due}` : due}
    </time>
  );
}

/** Metadata as `key=value` chips. Keys and values are the client's text: text nodes only. */
export function MetaChips(props: { metadata: Record<string, string> | null | undefined }) {
  const pairs = Object.entries(props.metadata ?? {});
  if (pairs.length === 0) return <span class="muted">–</span>;
  return (
    <span class="chips">
      {pairs.map(([k, v]) => (
        <span class="chip mono" key={k} title={`${k}=${v}`} data-testid="vm-meta-chip" data-key={k}>
          {`${k}=${v}`}
        </span>
      ))}
    </span>
  );
}

/** Guest or log text in a scrollable block; always a text node. */
export function Output(props: { text: string; label: string; testid: string; truncated?: boolean }) {
  return (
    <div class="output">
      <div class="output-label">
        {props.label}
        {props.truncated ? <span class="badge warn">truncated</span> : null}
      </div>
      <pre data-testid={props.testid}>{props.text}</pre>
    </div>
  );
}

/** The secret of a just-created key or webhook, shown once. */
export function ShowOnce(props: { title: string; value: string; testid: string; onClose: () => void }) {
  const [copied, setCopied] = useState(false);
  return (
    <div class="once" role="status">
      <strong>{props.title}</strong>
      <p class="small">Copy it now: it is shown only this once.</p>
      <code data-testid={props.testid}>{props.value}</code>
      <div class="row">
        <button
          onClick={async () => {
            try {
              await navigator.clipboard.writeText(props.value);
              setCopied(true);
            } catch {
              toast("Copy failed: select the text and copy it by hand", "error");
            }
          }}
        >
          {copied ? "Copied" : "Copy"}
        </button>
        <button onClick={props.onClose}>Done</button>
      </div>
    </div>
  );
}

export function PageHead(props: { title: string; children?: ComponentChildren }) {
  return (
    <div class="page-head">
      <h1>{props.title}</h1>
      <div class="row">{props.children}</div>
    </div>
  );
}

/** Marks the console interactive once per full page load (the load benchmark reads this mark). */
export function markReady(): void {
  if (performance.getEntriesByName("rds:ready").length === 0) performance.mark("rds:ready");
}
