import type { Metric, Registry } from 'prom-client';

/**
 * The two metric families recorded on the hot path — every request (requestLog.ts) and every
 * upstream FHIR exchange (fhirService.ts) — kept in plain numbers, and turned into prom-client
 * values only when scraped (or when a cluster primary gathers the workers' metrics).
 *
 * Why not prom-client's own Counter/Histogram here: even a pre-created label child re-validates
 * and re-hashes its labels into a fresh string on every `inc`/`observe` (~0.7 µs and several
 * allocations per request, measured by bench/metrics.ts). Here a request costs two Map lookups on
 * strings V8 has already hashed, a bucket scan and a few additions, and allocates nothing once
 * its (route, method, status) was seen. Everything that happens rarely uses prom-client directly.
 */

/** Upper bounds of the latency buckets, seconds (`le`): the gateway answers in 1-20 ms, the upstream in more. */
const LATENCY_BUCKETS_SECONDS: readonly number[] = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];
const BOUNDS_MS = Float64Array.from(LATENCY_BUCKETS_SECONDS, (s) => s * 1000);

/** The methods a label may name; anything else is `other`, so the label stays bounded whatever arrives. */
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'other'] as const;

function methodIndex(method: string): number {
  switch (method) {
    case 'GET':
      return 0;
    case 'HEAD':
      return 1;
    case 'POST':
      return 2;
    case 'PUT':
      return 3;
    case 'PATCH':
      return 4;
    case 'DELETE':
      return 5;
    case 'OPTIONS':
      return 6;
    default:
      return 7;
  }
}

/** Route patterns kept apart at most; more would be a bug elsewhere, and they then share `other`. */
const MAX_ROUTES = 1000;

/** Count, sum and per-bucket counts (not cumulative; the last slot is +Inf) of one label set. */
export class LatencySeries {
  count = 0;
  sumMs = 0;
  readonly buckets = new Float64Array(BOUNDS_MS.length + 1);

  observe(ms: number): void {
    this.count += 1;
    this.sumMs += ms;
    let i = 0;
    while (i < BOUNDS_MS.length && ms > (BOUNDS_MS[i] as number)) i += 1;
    (this.buckets[i] as number) += 1;
  }

  add(other: LatencySeries): void {
    this.count += other.count;
    this.sumMs += other.sumMs;
    for (let i = 0; i < this.buckets.length; i++) (this.buckets[i] as number) += other.buckets[i] as number;
  }
}

/** A request series: its method and status are fixed when it is created. */
class RequestSeries extends LatencySeries {
  constructor(
    readonly method: number,
    readonly status: number,
  ) {
    super();
  }
}

/** Requests by route pattern, method and status. */
export class RequestTable {
  private readonly routes = new Map<string, Map<number, RequestSeries>>();

  record(method: string, route: string, status: number, ms: number): void {
    let byKey = this.routes.get(route);
    if (byKey === undefined) byKey = this.addRoute(route);
    const m = methodIndex(method);
    const key = status * 8 + m;
    let series = byKey.get(key);
    if (series === undefined) {
      series = new RequestSeries(m, status);
      byKey.set(key, series);
    }
    series.observe(ms);
  }

  private addRoute(route: string): Map<number, RequestSeries> {
    const name = this.routes.size < MAX_ROUTES ? route : 'other';
    let byKey = this.routes.get(name);
    if (byKey === undefined) {
      byKey = new Map();
      this.routes.set(name, byKey);
    }
    return byKey;
  }

  /** `requests_total{method,route,status}` values. */
  counts(): Sample[] {
    const out: Sample[] = [];
    for (const [route, byKey] of this.routes) {
      for (const s of byKey.values()) {
        out.push({ value: s.count, labels: { method: METHODS[s.method], route, status: s.status } });
      }
    }
    return out;
  }

  /** `request_duration_seconds{method,route}` values: the statuses of a route and method added up. */
  histogram(name: string): Sample[] {
    const out: Sample[] = [];
    for (const [route, byKey] of this.routes) {
      const byMethod = new Map<number, LatencySeries>();
      for (const s of byKey.values()) {
        let total = byMethod.get(s.method);
        if (total === undefined) {
          total = new LatencySeries();
          byMethod.set(s.method, total);
        }
        total.add(s);
      }
      for (const [method, total] of byMethod) {
        out.push(...histogramSamples(name, { method: METHODS[method], route }, total));
      }
    }
    return out;
  }
}

/** Upstream FHIR exchanges by method. */
export class UpstreamTable {
  private readonly byMethod = METHODS.map(() => new LatencySeries());

  record(method: string, ms: number): void {
    (this.byMethod[methodIndex(method)] as LatencySeries).observe(ms);
  }

  histogram(name: string): Sample[] {
    return this.byMethod.flatMap((series, i) =>
      series.count === 0 ? [] : histogramSamples(name, { method: METHODS[i] }, series),
    );
  }
}

/** One value as prom-client's Registry reads it (`get()`), with the sample's own name for histograms. */
export interface Sample {
  value: number;
  labels: Record<string, string | number | undefined>;
  metricName?: string;
}

function histogramSamples(name: string, labels: Record<string, string | undefined>, series: LatencySeries) {
  const out: Sample[] = [];
  let cumulative = 0;
  for (let i = 0; i < BOUNDS_MS.length; i++) {
    cumulative += series.buckets[i] as number;
    out.push({
      value: cumulative,
      labels: { ...labels, le: LATENCY_BUCKETS_SECONDS[i] },
      metricName: `${name}_bucket`,
    });
  }
  out.push({ value: series.count, labels: { ...labels, le: '+Inf' }, metricName: `${name}_bucket` });
  out.push({ value: series.sumMs / 1000, labels, metricName: `${name}_sum` });
  out.push({ value: series.count, labels, metricName: `${name}_count` });
  return out;
}

/**
 * Registers a family whose values are computed when read. prom-client's Registry reads every
 * metric through `get()` (rendering, JSON, and the cluster aggregation, which registers its own
 * results the same way: AggregatorRegistry.aggregate); its typings only name its own classes.
 */
export function registerComputed(
  registry: Registry,
  family: { name: string; help: string; type: 'counter' | 'histogram'; values: () => Sample[] },
): void {
  const metric = {
    name: family.name,
    help: family.help,
    type: family.type,
    aggregator: 'sum',
    get: async () => ({
      name: family.name,
      help: family.help,
      type: family.type,
      aggregator: 'sum',
      values: family.values(),
    }),
    reset: () => undefined,
  };
  registry.registerMetric(metric as unknown as Metric);
}
