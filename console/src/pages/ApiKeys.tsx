// DB API keys (docs/reference/api-admin.md API keys): the key is shown once, at creation.
import { useState } from "preact/hooks";
import { post } from "../api";
import { time } from "../format";
import type { ApiKey } from "../types";
import { ConfirmButton, ErrorLine, Field, Head, LoadError, PageHead, ShowOnce, useAction, useGet, useSubmit } from "../components/ui";

function status(k: ApiKey): string {
  if (k.revokedAt) return "revoked";
  if (k.expiresAt && new Date(k.expiresAt).getTime() <= Date.now()) return "expired";
  return "active";
}

export function ApiKeys() {
  const keys = useGet<ApiKey[]>("/v1/admin/api-keys");
  const [name, setName] = useState("");
  const [expires, setExpires] = useState("");
  const form = useSubmit();
  const [created, setCreated] = useState<ApiKey | null>(null);
  const [busy, run] = useAction();
  const create = async (e: Event) => {
    e.preventDefault();
    await form.run(async () => {
      const body: Record<string, unknown> = { name };
      if (expires) body.expiresAt = new Date(expires).toISOString();
      setCreated(await post<ApiKey>("/v1/admin/api-keys", body));
      setName("");
      setExpires("");
      void keys.reload();
    });
  };
  const missing = keys.error && "missing" in keys.error && keys.error.missing;
  return (
    <div data-testid="page-api-keys">
      <PageHead title="API keys" />
      <LoadError error={keys.error} what="API keys" />
      {missing ? null : (
        <form class="card form" onSubmit={create} data-testid="apikey-form">
          <div class="fields">
            <Field label="Name" name="name" required maxLength={200} value={name} onInput={setName} />
            <Field label="Expires (optional)" name="expiresAt" type="datetime-local" value={expires} onInput={setExpires} />
          </div>
          <ErrorLine text={form.error} />
          <button class="primary" type="submit" disabled={form.busy} data-testid="apikey-create">
            Create key
          </button>
        </form>
      )}
      {created?.apiKey ? (
        <ShowOnce title={`Key "${created.name}"`} value={created.apiKey} testid="apikey-secret" onClose={() => setCreated(null)} />
      ) : null}
      {keys.data ? (
        <table class="list" data-testid="apikey-table">
          <Head cols={["Name", "Prefix", "Status", "Created", "Expires", "Last used", ""]} />
          <tbody>
            {keys.data.map((k) => (
              <tr key={k.id} data-key-id={k.id}>
                <td>{k.name}</td>
                <td class="mono">{k.prefix}</td>
                <td>
                  <span class={`badge ${status(k) === "active" ? "ok" : "bad"}`} data-testid="apikey-status">
                    {status(k)}
                  </span>
                </td>
                <td>{time(k.createdAt)}</td>
                <td>{time(k.expiresAt)}</td>
                <td>{time(k.lastUsedAt)}</td>
                <td>
                  {k.revokedAt ? null : (
                    <ConfirmButton
                      label="Revoke"
                      disabled={busy}
                      testid="apikey-revoke"
                      onConfirm={() => void run(() => post(`/v1/admin/api-keys/${k.id}/revoke`)).then(() => keys.reload())}
                    />
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </div>
  );
}
