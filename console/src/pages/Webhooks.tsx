// Webhooks (docs/reference/api-admin.md Webhooks): the signing secret is shown once; deliveries per
// webhook.
import { useState } from "preact/hooks";
import { call, del, post } from "../api";
import { time } from "../format";
import { EVENT_TYPES, type Delivery, type Webhook } from "../types";
import { ConfirmButton, ErrorLine, Field, Head, LoadError, PageHead, ShowOnce, useAction, useGet, useSubmit } from "../components/ui";

function Deliveries(props: { id: string }) {
  const d = useGet<Delivery[]>(`/v1/admin/webhooks/${props.id}/deliveries?limit=50`);
  return (
    <div data-testid="deliveries">
      <LoadError error={d.error} what="Deliveries" />
      {d.data && d.data.length === 0 ? <p class="muted small">No deliveries yet.</p> : null}
      {d.data && d.data.length ? (
        <table class="list">
          <Head cols={["Event", "Attempt", "Status", "Response", "Created", "Next attempt"]} />
          <tbody>
            {d.data.map((x) => (
              <tr key={x.id}>
                <td>{x.eventType}</td>
                <td>{x.attempt}</td>
                <td>
                  <span class={`badge ${x.status === "succeeded" ? "ok" : x.status === "failed" ? "bad" : ""}`}>{x.status}</span>
                </td>
                <td>{x.responseStatus ?? x.error ?? "–"}</td>
                <td>{time(x.createdAt)}</td>
                <td>{time(x.nextAttemptAt)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </div>
  );
}

function CreateWebhook(props: { onCreated: (w: Webhook) => void }) {
  const [name, setName] = useState("");
  const [url, setUrl] = useState("");
  const [types, setTypes] = useState<string[]>(["*"]);
  const { busy, error, run } = useSubmit();
  const toggle = (t: string) => setTypes(types.includes(t) ? types.filter((x) => x !== t) : [...types, t]);
  const submit = async (e: Event) => {
    e.preventDefault();
    await run(async () => {
      props.onCreated(await post<Webhook>("/v1/admin/webhooks", { name, url, enabled: true, eventTypes: types }));
      setName("");
      setUrl("");
    });
  };
  return (
    <form class="card form" onSubmit={submit} data-testid="webhook-form">
      <div class="fields">
        <Field label="Name" name="name" required maxLength={200} value={name} onInput={setName} />
        <Field label="URL" name="url" type="url" required placeholder="https://example.com/hook" value={url} onInput={setUrl} />
      </div>
      <fieldset class="types">
        <legend>Events</legend>
        {["*", ...EVENT_TYPES].map((t) => (
          <label class="check" key={t}>
            <input type="checkbox" checked={types.includes(t)} onChange={() => toggle(t)} />
            {t === "*" ? "all events" : t}
          </label>
        ))}
      </fieldset>
      <ErrorLine text={error} />
      <button class="primary" type="submit" disabled={busy} data-testid="webhook-create">
        Create webhook
      </button>
    </form>
  );
}

export function Webhooks() {
  const hooks = useGet<Webhook[]>("/v1/admin/webhooks");
  const [created, setCreated] = useState<Webhook | null>(null);
  const [open, setOpen] = useState<string | null>(null);
  const [busy, run] = useAction();
  const missing = hooks.error && "missing" in hooks.error && hooks.error.missing;
  const act = (f: () => Promise<unknown>) => void run(f).then(() => hooks.reload());
  return (
    <div data-testid="page-webhooks">
      <PageHead title="Webhooks" />
      <LoadError error={hooks.error} what="Webhooks" />
      {missing ? null : (
        <CreateWebhook
          onCreated={(w) => {
            setCreated(w);
            void hooks.reload();
          }}
        />
      )}
      {created?.secret ? (
        <ShowOnce title={`Signing secret of "${created.name}"`} value={created.secret} testid="webhook-secret" onClose={() => setCreated(null)} />
      ) : null}
      {(hooks.data ?? []).map((w) => (
        <section class="card" key={w.id} data-webhook-id={w.id}>
          <div class="row between">
            <h3>
              {w.name} <span class={`badge ${w.enabled ? "ok" : ""}`}>{w.enabled ? "enabled" : "disabled"}</span>
            </h3>
            <span class="row">
              <button disabled={busy} onClick={() => act(() => call("PATCH", `/v1/admin/webhooks/${w.id}`, { enabled: !w.enabled }))}>
                {w.enabled ? "Disable" : "Enable"}
              </button>
              <button onClick={() => setOpen(open === w.id ? null : w.id)} data-testid="webhook-deliveries">
                {open === w.id ? "Hide deliveries" : "Deliveries"}
              </button>
              <ConfirmButton label="Delete" disabled={busy} onConfirm={() => act(() => del(`/v1/admin/webhooks/${w.id}`))} />
            </span>
          </div>
          <p class="mono small">{w.url}</p>
          <p class="small muted">
            {w.eventTypes.join(", ")} · created {time(w.createdAt)}
          </p>
          {open === w.id ? <Deliveries id={w.id} /> : null}
        </section>
      ))}
    </div>
  );
}
