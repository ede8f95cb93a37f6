// The hub channel record the store benchmarks commit: channel `n` (its own device) at `version`, both signatures as
// placeholders (stores only parse and write them).
export function record(n, version) {
  const id = `0x${(n + 1).toString(16).padStart(64, '0')}`;
  return {
    params: {
      chainId: 31337n,
      adjudicator: `0x${'11'.repeat(20)}`,
      device: `0x${(n + 1).toString(16).padStart(40, '0')}`,
      hub: `0x${'33'.repeat(20)}`,
      token: `0x${'00'.repeat(20)}`,
      challengeDuration: 3600n,
      salt: `0x${n.toString(16).padStart(64, '0')}`,
    },
    channelId: id,
    funding: { device: 10n ** 18n, hub: 0n },
    status: 'open',
    latest: {
      state: {
        channelId: id,
        version,
        paidByDevice: version,
        paidByHub: 0n,
        round: 0n,
        locksRoot: `0x${'00'.repeat(32)}`,
        lockedByDevice: 0n,
        lockedByHub: 0n,
        isFinal: false,
      },
      deviceSig: `0x${'aa'.repeat(65)}`,
      hubSig: `0x${'bb'.repeat(65)}`,
    },
    hubSignedVersion: version,
  };
}
