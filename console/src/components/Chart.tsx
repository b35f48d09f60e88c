// A small SVG time chart of the last hour: a step line (counts) or dots (latencies). Attributes only,
// no inline styles, so the console's CSP holds.
const W = 320;
const H = 110;
const PAD = { l: 34, r: 8, t: 8, b: 18 };
const HOUR = 3600_000;

function niceMax(v: number): number {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * p).find((m) => m >= v) ?? v;
}

export function Chart(props: {
  title: string;
  points: { t: number; v: number }[];
  kind: "step" | "dots";
  unit: string;
  testid: string;
}) {
  const now = Date.now();
  const max = niceMax(Math.max(0, ...props.points.map((p) => p.v)));
  const x = (t: number) => PAD.l + ((t - (now - HOUR)) / HOUR) * (W - PAD.l - PAD.r);
  const y = (v: number) => H - PAD.b - (v / max) * (H - PAD.t - PAD.b);
  let path = "";
  props.points.forEach((p, i) => {
    path += i === 0 ? `M${x(p.t)},${y(p.v)}` : `H${x(p.t)}V${y(p.v)}`;
  });
  if (props.points.length) path += `H${x(now)}`;
  const last = props.points[props.points.length - 1];
  return (
    <figure class="chart" data-testid={props.testid}>
      <figcaption>
        {props.title}
        {last ? <span class="muted"> · now {fmt(last.v)} {props.unit}</span> : null}
      </figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={props.title}>
        <line class="axis" x1={PAD.l} y1={H - PAD.b} x2={W - PAD.r} y2={H - PAD.b} />
        <line class="grid" x1={PAD.l} y1={PAD.t} x2={W - PAD.r} y2={PAD.t} />
        <text class="tick" x={PAD.l - 4} y={PAD.t + 4} text-anchor="end">{fmt(max)}</text>
        <text class="tick" x={PAD.l - 4} y={H - PAD.b + 4} text-anchor="end">0</text>
        <text class="tick" x={PAD.l} y={H - 4}>−60 min</text>
        <text class="tick" x={W - PAD.r} y={H - 4} text-anchor="end">now</text>
        {props.kind === "step" && path ? <path class="series" d={path} /> : null}
        {props.kind === "dots"
          ? props.points.map((p) => (
              <circle class="dot" cx={x(p.t)} cy={y(p.v)} r="3">
                <title>{`${fmt(p.v)} ${props.unit} at ${new Date(p.t).toLocaleTimeString()}`}</title>
              </circle>
            ))
          : null}
      </svg>
      {props.points.length === 0 ? <p class="muted small">No data yet.</p> : null}
    </figure>
  );
}

function fmt(v: number): string {
  return Number.isInteger(v) ? String(v) : v.toFixed(v < 10 ? 2 : 1);
}
