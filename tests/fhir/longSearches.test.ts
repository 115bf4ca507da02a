import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway, UPSTREAMS } from '../helpers/gateway.js';
import { signedInPair } from '../helpers/journey.js';

/**
 * Long searches paged to their end by a patient and a practitioner, on each upstream flavour: the
 * cursor holds the upstream's next link, which repeats the whole query (percent-encoded again, and
 * narrowed for the caller).
 */
describe.each(UPSTREAMS)('a long search (%s upstream)', (upstream) => {
  let gw: TestGateway;
  const ids = { me: '', gp: '' };
  const tokens = { patient: '', gp: '' };

  beforeAll(async () => {
    gw = await startTestGateway({ upstream });
    const pair = await signedInPair(gw);
    Object.assign(ids, pair.ids);
    Object.assign(tokens, pair.tokens);
  });
  afterAll(() => gw.close());

  // the cursor held the upstream's whole next link: a long search's (its query percent-encoded
  // again, and narrowed) passed the 4 KiB a request may carry, and its next page was a 414 (helper review)
  it('a long search can be paged to its end: its next links stay short enough to follow', async () => {
    const made: string[] = [];
    for (let i = 0; i < 2; i++) {
      const written = await gw.deps.fhir.create('Observation', {
        resourceType: 'Observation',
        status: 'final',
        code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
        subject: { reference: `Patient/${ids.me}` },
      });
      made.push(written.id);
    }
    const codes = Array.from({ length: 89 }, (_, i) => `http://loinc.org|${1000 + i}-${i % 10}`);
    const fillers = Array.from({ length: 71 }, (_, i) =>
      `0000000${i}-aaaa-4bbb-8ccc-dddddddddddd`.slice(-36),
    );
    const searches = [
      [`/fhir/Observation?code=${[...codes, 'http://loinc.org|8867-4'].join(',')}&_count=1`, tokens.patient],
      [`/fhir/Observation?_id=${[...fillers, ...made].join(',')}&_count=1`, tokens.gp],
    ] as const;
    for (const [first, token] of searches) {
      const seen: string[] = [];
      let url: string | undefined = first;
      for (let page = 0; url && page < 5; page++) {
        const response = await gw.call(url.replace(gw.deps.config.publicBaseUrl, ''), { token });
        expect(response.status, url.slice(0, 80)).toBe(200);
        const bundle = (await response.json()) as {
          entry?: { resource: { id: string } }[];
          link?: { relation: string; url: string }[];
        };
        seen.push(...(bundle.entry ?? []).map((e) => e.resource.id));
        url = bundle.link?.find((l) => l.relation === 'next')?.url;
      }
      expect(seen.sort()).toEqual([...made].sort());
    }
  });
});
