// A synthetic device channel record (unsigned placeholders for the signatures: stores only parse and write them),
// shared by the device store's tests, its crash child process and its benchmark, and the watchtower's store reader
// tests. Plain JS so the child and the benchmark can import it next to the built package; typed by store-fixture.d.mts.
export const SAMPLE_ID = `0x${'ab'.repeat(32)}`;

/** The record at `version`, with a paid amount above 64 bits so exact bigints are exercised. */
export const sampleRecord = (version, channelId = SAMPLE_ID) => ({
  params: {
    chainId: 1n,
    adjudicator: '0x5FbDB2315678afecb367f032d93F642f64180aa3',
    device: '0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A',
    hub: '0x1563915e194D8CfBA1943570603F7606A3115508',
    token: '0x0000000000000000000000000000000000000000',
    challengeDuration: 60n,
    salt: `0x${'00'.repeat(32)}`,
  },
  channelId,
  funding: { device: 10n, hub: 0n },
  latest: {
    state: {
      channelId,
      version,
      paidByDevice: (1n << 200n) + version,
      paidByHub: 0n,
      round: 0n,
      locksRoot: `0x${'00'.repeat(32)}`,
      lockedByDevice: 0n,
      lockedByHub: 0n,
      isFinal: false,
    },
    deviceSig: `0x${'11'.repeat(65)}`,
    hubSig: `0x${'22'.repeat(65)}`,
  },
  signedVersion: version,
});
