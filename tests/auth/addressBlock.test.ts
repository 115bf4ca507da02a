import { describe, expect, it } from 'vitest';
import { addressBlock } from '../../src/auth/rateLimiter.js';

describe('the block a client address is counted by', () => {
  it.each([
    ['203.0.113.9', '203.0.113.9'],
    ['2001:db8:1:2::21', '2001:db8:1:2::/64'],
    ['2001:0db8:0001:0002:ffff:ffff:ffff:ffff', '2001:db8:1:2::/64'],
    ['2001:DB8:1:2::1', '2001:db8:1:2::/64'],
    ['::ffff:203.0.113.9', '203.0.113.9'],
    ['fe80::1%eth0', 'fe80:0:0:0::/64'],
    ['::1', '0:0:0:0::/64'],
    // not an address (a test's app.request(), a proxy's odd hop): counted as it is
    ['unknown', 'unknown'],
  ])('%s: %s', (address, block) => {
    expect(addressBlock(address)).toBe(block);
  });
});
