import type * as PromClient from 'prom-client';
import { onFirstUse } from '../onFirstUse.js';

/** prom-client, loaded only once metrics are on (METRICS_TOKEN): without them no process loads it. */
export const promClient = onFirstUse<typeof PromClient>('prom-client');
