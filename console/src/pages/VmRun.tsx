// Exec and run-ts / run-js boxes (docs/reference/api.md §3.7, §3.8). Output is guest text: rendered
// as text only.
import { useState } from "preact/hooks";
import { post } from "../api";
import { intOrUndefined, lines } from "../format";
import type { ExecResult } from "../types";
import { ErrorLine, Field, Output, useSubmit } from "../components/ui";

function envObject(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const l of lines(text)) {
    const i = l.indexOf("=");
    env[i < 0 ? l : l.slice(0, i)] = i < 0 ? "" : l.slice(i + 1);
  }
  return env;
}

export function ResultView(props: { r: ExecResult; showResult?: boolean }) {
  const { r } = props;
  return (
    <div class="result" data-testid="exec-result">
      <div class="row">
        <span class={`badge ${r.exitCode === 0 ? "ok" : "bad"}`} data-testid="exec-exit-code">
          exit {r.exitCode}
        </span>
        <span class="muted small">{r.durationMs} ms</span>
        {r.timedOut ? <span class="badge warn">timed out</span> : null}
      </div>
      <Output label="stdout" text={r.stdout} truncated={r.stdoutTruncated} testid="exec-stdout" />
      <Output label="stderr" text={r.stderr} truncated={r.stderrTruncated} testid="exec-stderr" />
      {props.showResult && r.result !== undefined ? (
        <Output label="result" text={JSON.stringify(r.result, null, 2)} testid="run-result" />
      ) : null}
      {props.showResult && r.error !== undefined ? (
        <Output label="error" text={JSON.stringify(r.error, null, 2)} testid="run-error" />
      ) : null}
    </div>
  );
}

function useRunner(): [boolean, string | null, ExecResult | null, (f: () => Promise<ExecResult>) => Promise<void>] {
  const { busy, error, run } = useSubmit();
  const [result, setResult] = useState<ExecResult | null>(null);
  return [busy, error, result, (f) => run(async () => setResult(await f()))];
}

export function ExecBox(props: { id: string; disabled: boolean }) {
  const [cmd, setCmd] = useState("");
  const [cwd, setCwd] = useState("");
  const [timeout, setTimeoutMs] = useState("");
  const [env, setEnv] = useState("");
  const [busy, error, result, run] = useRunner();
  const submit = (e?: Event) => {
    e?.preventDefault();
    void run(() =>
      post<ExecResult>(`/v1/vms/${props.id}/exec`, {
        cmd,
        cwd: cwd.trim() || undefined,
        timeoutMs: intOrUndefined(timeout),
        env: envObject(env),
      }),
    );
  };
  return (
    <form class="card form" onSubmit={submit} data-testid="exec-form">
      <Field
        label="Command (bash -lc, as uid 1000 in /workspace; Ctrl+Enter runs)"
        name="cmd"
        mono
        rows={3}
        value={cmd}
        onInput={setCmd}
        onKeyDown={(e) => {
          if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) submit();
        }}
      />
      <details>
        <summary>Options</summary>
        <div class="fields">
          <Field label="Working directory" name="cwd" placeholder="/workspace" value={cwd} onInput={setCwd} />
          <Field label="Timeout (ms)" name="timeoutMs" type="number" min={1} placeholder="30000" value={timeout} onInput={setTimeoutMs} />
          <Field label="Environment (KEY=value per line)" name="env" rows={2} value={env} onInput={setEnv} />
        </div>
      </details>
      <div class="row">
        <button class="primary" type="submit" disabled={props.disabled || busy || !cmd.trim()} data-testid="exec-run">
          {busy ? "Running…" : "Run"}
        </button>
      </div>
      <ErrorLine text={error} />
      {result ? <ResultView r={result} /> : null}
    </form>
  );
}

export function RunBox(props: { id: string; disabled: boolean }) {
  const [lang, setLang] = useState<"ts" | "js">("ts");
  const [code, setCode] = useState('console.log("hello");\nresult.set({ ok: true });');
  const [args, setArgs] = useState("");
  const [env, setEnv] = useState("");
  const [timeout, setTimeoutMs] = useState("");
  const [busy, error, result, run] = useRunner();
  const submit = (e: Event) => {
    e.preventDefault();
    void run(() =>
      post<ExecResult>(`/v1/vms/${props.id}/run-${lang}`, {
        code,
        args: lines(args),
        env: lines(env),
        timeoutMs: intOrUndefined(timeout),
      }),
    );
  };
  return (
    <form class="card form" onSubmit={submit} data-testid="run-form">
      <div class="fields">
        <label>
          Runtime
          <select name="lang" value={lang} onChange={(e) => setLang(e.currentTarget.value as "ts" | "js")}>
            <option value="ts">TypeScript (Deno)</option>
            <option value="js">JavaScript (Node)</option>
          </select>
        </label>
        <Field label="Timeout (ms)" name="timeoutMs" type="number" min={1} placeholder="30000" value={timeout} onInput={setTimeoutMs} />
      </div>
      <Field label="Code (call result.set(value) to return a value)" name="code" mono rows={8} value={code} onInput={setCode} />
      <details>
        <summary>Arguments and environment</summary>
        <div class="fields">
          <Field label="Arguments (one per line)" name="args" rows={2} value={args} onInput={setArgs} />
          <Field label="Environment (KEY=value per line)" name="env" rows={2} value={env} onInput={setEnv} />
        </div>
      </details>
      <div class="row">
        <button class="primary" type="submit" disabled={props.disabled || busy || !code.trim()} data-testid="run-submit">
          {busy ? "Running…" : `Run ${lang === "ts" ? "TypeScript" : "JavaScript"}`}
        </button>
      </div>
      <ErrorLine text={error} />
      {result ? <ResultView r={result} showResult /> : null}
    </form>
  );
}
