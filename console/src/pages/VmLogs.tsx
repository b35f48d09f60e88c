// VM log files (docs/reference/api.md §3.5) and the exec log (§3.6). Both are guest-influenced
// text: text nodes only.
import { useState } from "preact/hooks";
import { get } from "../api";
import { time } from "../format";
import { usePoll } from "../router";
import type { ExecLogEntry, LogTail } from "../types";
import { ErrorLine, Head, LoadError, useGet, useLoad } from "../components/ui";
import { ResultView } from "./VmRun";

const LOG_TYPES = ["console.log", "vmm.log", "vmm.stderr.log"];

export function VmLogs(props: { id: string }) {
  const [type, setType] = useState("console.log");
  const [tail, setTail] = useState(200);
  const [follow, setFollow] = useState(false);
  const log = useGet<LogTail>(`/v1/vms/${props.id}/logs?type=${encodeURIComponent(type)}&tail=${tail}`);
  usePoll(() => {
    if (follow) void log.reload();
  }, 3000);
  return (
    <div class="card" data-testid="vm-logs">
      <div class="row">
        <select value={type} onChange={(e) => setType(e.currentTarget.value)} data-testid="log-type">
          {LOG_TYPES.map((t) => (
            <option value={t} key={t}>
              {t}
            </option>
          ))}
        </select>
        <select value={String(tail)} onChange={(e) => setTail(Number(e.currentTarget.value))}>
          {[50, 200, 1000].map((n) => (
            <option value={String(n)} key={n}>
              last {n} lines
            </option>
          ))}
        </select>
        <label class="check">
          <input type="checkbox" checked={follow} onChange={(e) => setFollow(e.currentTarget.checked)} />
          Follow
        </label>
        <button onClick={() => void log.reload()}>Refresh</button>
        {log.data ? <span class="muted small">updated {time(log.data.updatedAt)}</span> : null}
      </div>
      <LoadError error={log.error} what="Logs" />
      {log.data ? (
        <pre class="log" data-testid="log-text">
          {log.data.truncated ? "… (earlier lines not shown)\n" : ""}
          {log.data.lines.join("\n")}
        </pre>
      ) : null}
    </div>
  );
}

function summary(e: ExecLogEntry): string {
  const s = e.input.cmd ?? e.input.path ?? e.input.code ?? "";
  return s.length > 120 ? s.slice(0, 120) + "…" : s;
}

export function ExecLogs(props: { id: string }) {
  const [type, setType] = useState("all");
  const [entries, setEntries] = useState<ExecLogEntry[]>([]);
  const [hasMore, setHasMore] = useState(false);
  const [open, setOpen] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const page = async (before?: string) => {
    const q = `limit=50&type=${type}${before ? `&before=${before}` : ""}`;
    const r = await get<{ entries: ExecLogEntry[]; hasMore: boolean }>(`/v1/vms/${props.id}/exec-logs?${q}`);
    setHasMore(r.hasMore);
    return r.entries;
  };
  const first = useLoad(async () => {
    const list = await page();
    setEntries(list);
    return list;
  }, [props.id, type]);
  const more = async () => {
    try {
      const list = await page(entries[entries.length - 1]?.id);
      setEntries([...entries, ...list]);
    } catch (e) {
      setError(String(e));
    }
  };
  return (
    <div class="card" data-testid="exec-logs">
      <div class="row">
        <select value={type} onChange={(e) => setType(e.currentTarget.value)}>
          {["all", "exec", "run-ts", "run-js"].map((t) => (
            <option value={t} key={t}>
              {t}
            </option>
          ))}
        </select>
        <button onClick={() => void first.reload()}>Refresh</button>
      </div>
      <LoadError error={first.error} what="Exec log" />
      <ErrorLine text={error} />
      <table class="list">
        <Head cols={["When", "Type", "Input", "Exit", "Duration"]} />
        <tbody>
          {entries.map((e) => [
            <tr key={e.id} class="clickable" onClick={() => setOpen(open === e.id ? null : e.id)}>
              <td>{time(e.timestamp)}</td>
              <td>{e.type}</td>
              <td class="mono" data-testid="exec-log-input">{summary(e)}</td>
              <td>{e.result.exitCode}</td>
              <td>{e.durationMs} ms</td>
            </tr>,
            open === e.id ? (
              <tr key={`${e.id}-detail`}>
                <td colSpan={5}>
                  <ResultView r={e.result} showResult />
                </td>
              </tr>
            ) : null,
          ])}
        </tbody>
      </table>
      {!first.loading && entries.length === 0 ? <p class="muted">No executions yet.</p> : null}
      {hasMore ? <button onClick={() => void more()}>Load older</button> : null}
    </div>
  );
}
