import { describe, expect, it } from 'vitest';
import { grantFor } from '../../src/oauth/smartGrant.js';
import { consentPage } from '../../src/oauth/views.js';

/** The consent page says what a partly granted wildcard becomes, not only that it was "not given". */
describe('the consent page', () => {
  const page = (requested: string, registered: string) => {
    const grant = grantFor(requested, registered, 'patient');
    return {
      grant,
      html: consentPage({
        appName: 'Gateway',
        clientName: 'Charts',
        userEmail: 'p@example.com',
        action: '/oauth/interaction/x/consent',
        csrf: 'token',
        granted: grant.granted,
        dropped: grant.dropped,
      }),
    };
  };

  it('lists what a wildcard is narrowed to, and names the wildcard as given only in part', () => {
    const { grant, html } = page('patient/*.cruds', 'patient/Observation.rs patient/Condition.rs');
    expect(grant.granted).toEqual(['patient/Observation.rs', 'patient/Condition.rs']);
    expect(grant.dropped).toEqual(['patient/*.cruds']);
    expect(html).toContain('<code>patient/Observation.rs</code>');
    expect(html).toContain('<code>patient/Condition.rs</code>');
    expect(html).toMatch(
      /Not given, or given only in part[^<]*<\/h2>\s*<ul><li>[^<]*<code>patient\/\*\.cruds<\/code>/,
    );
  });

  it('escapes the app name', () => {
    const { html } = page('patient/Observation.rs', 'patient/Observation.rs');
    expect(html).toContain('<strong>Charts</strong>');
    expect(
      consentPage({
        ...{ appName: 'G', clientName: '<b>x</b>', userEmail: 'e', action: 'a', csrf: 'c' },
        granted: [],
        dropped: [],
      }),
    ).toContain('&lt;b&gt;x&lt;/b&gt;');
  });
});
