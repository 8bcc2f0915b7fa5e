import type { ComponentChildren } from "preact";

export function ProgressBar(props: { percent: number; failed?: number; label?: string }) {
  const failed = Math.min(props.failed ?? 0, props.percent);
  return (
    <div class="progress" role="progressbar" aria-valuenow={props.percent} aria-valuemin={0} aria-valuemax={100} data-progress={props.percent}>
      <div class="progress-ok" style={{ width: `${props.percent - failed}%` }} />
      <div class="progress-bad" style={{ width: `${failed}%` }} />
      <span class="progress-label">{props.label ?? `${props.percent} %`}</span>
    </div>
  );
}

export function StateBadge(props: { state: string }) {
  return (
    <span class={`badge badge-${props.state}`} data-state={props.state}>
      {props.state}
    </span>
  );
}

export function Card(props: { title: string; children: ComponentChildren }) {
  return (
    <section class="card">
      <h2>{props.title}</h2>
      {props.children}
    </section>
  );
}

export function ErrorLine(props: { error: Error | null }) {
  return props.error ? (
    <p class="error" role="alert">
      {props.error.message}
    </p>
  ) : null;
}

/** Horizontal bars: one per entry, scaled to the largest. */
export function BarChart(props: { rows: ReadonlyArray<{ label: string; value: number }>; name: string }) {
  const max = Math.max(1, ...props.rows.map((r) => r.value));
  return (
    <svg class="chart" width="100%" height={props.rows.length * 26 + 4} role="img" aria-label={props.name}>
      {props.rows.map((r, i) => (
        <g key={r.label} transform={`translate(0 ${i * 26 + 2})`} data-label={r.label} data-value={r.value}>
          <text x="0" y="16">
            {r.label}
          </text>
          <rect x="140" y="2" height="20" width={`${Math.max(0.5, (r.value * 60) / max)}%`} class="chart-bar" />
          <text x="145" y="16" class="chart-value">
            {r.value}
          </text>
        </g>
      ))}
    </svg>
  );
}

/** A table's header row; a column given as `[label, class]` carries a class (e.g. `wide`). */
export function Head(props: { columns: ReadonlyArray<string | readonly [string, string]> }) {
  return (
    <thead>
      <tr>
        {props.columns.map((c) => (typeof c === "string" ? <th key={c}>{c}</th> : <th key={c[0]} class={c[1]}>{c[0]}</th>))}
      </tr>
    </thead>
  );
}

/** A filter: one of `options`, or "" for any. */
export function Filter(props: { label: string; value: string; options: readonly string[]; onChange: (value: string) => void }) {
  return (
    <label class="filter">
      {props.label}{" "}
      <select value={props.value} onChange={(e) => props.onChange((e.target as HTMLSelectElement).value)}>
        {["", ...props.options].map((s) => (
          <option key={s} value={s}>
            {s || "any"}
          </option>
        ))}
      </select>
    </label>
  );
}
