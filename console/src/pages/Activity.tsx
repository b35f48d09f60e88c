// The activity log: live events (SSE) on top of the stored history, older pages on demand.
import { useState } from "preact/hooks";
import { get } from "../api";
import { feed, live, metaOf } from "../events";
import { time } from "../format";
import { useStore } from "../store";
import type { ActivityEvent } from "../types";
import { ErrorLine, LoadError, markReady, PageHead, useLoad } from "../components/ui";

function Row(props: { e: ActivityEvent }) {
  const { e } = props;
  const meta = metaOf(e);
  return (
    <li class="event" data-testid="activity-item" data-type={e.type}>
      <div class="row between">
        <span>
          <code>{e.type}</code> {e.message}
        </span>
        <span class="muted small">{time(e.createdAt)}</span>
      </div>
      {e.entityId ? <div class="small muted mono">{`${e.entityType} ${e.entityId}`}</div> : null}
      {meta && typeof meta === "object" && Object.keys(meta).length ? (
        <pre class="meta">{JSON.stringify(meta)}</pre>
      ) : null}
    </li>
  );
}

export function Activity() {
  const liveEvents = useStore(feed);
  const state = useStore(live);
  const [older, setOlder] = useState<ActivityEvent[]>([]);
  const [hasMore, setHasMore] = useState(true);
  const [error, setError] = useState<string | null>(null);
  const first = useLoad(async () => {
    const list = await get<ActivityEvent[]>("/v1/admin/activity?limit=50");
    setOlder(list);
    setHasMore(list.length === 50);
    markReady();
    return list;
  });
  const more = async () => {
    try {
      const last = older[older.length - 1];
      const list = await get<ActivityEvent[]>(`/v1/admin/activity?limit=50&before=${last.id}`);
      setOlder([...older, ...list]);
      setHasMore(list.length === 50);
    } catch (e) {
      setError(String(e));
    }
  };
  const seen = new Set<string>();
  const all = [...liveEvents, ...older].filter((e) => !seen.has(e.id) && seen.add(e.id));
  return (
    <div data-testid="page-activity">
      <PageHead title="Activity">
        <span class={`live ${state}`}>{state === "live" ? "● live" : state}</span>
      </PageHead>
      <LoadError error={first.error} what="Activity history" />
      <ErrorLine text={error} />
      <ul class="events card" data-testid="activity-feed">
        {all.map((e) => (
          <Row e={e} key={e.id} />
        ))}
      </ul>
      {!first.loading && all.length === 0 ? <p class="muted">No activity yet.</p> : null}
      {hasMore && older.length ? <button onClick={() => void more()}>Load older</button> : null}
    </div>
  );
}
