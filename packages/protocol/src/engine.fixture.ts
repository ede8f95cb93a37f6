/**
 * Test fixture (not built): the two parties of the channel the engine tests step, with its parameters. Each test
 * file keeps its own funding and context.
 */
import { nobleSigner } from './signer.js';
import type { Address, Bytes32, ChannelParams } from './types.js';

export const deviceKey = nobleSigner('0x' + '11'.repeat(32));
export const hubKey = nobleSigner('0x' + '22'.repeat(32));
export const params: ChannelParams = {
  chainId: 31337n,
  adjudicator: '0x5FbDB2315678afecb367f032d93F642f64180aa3' as Address,
  device: deviceKey.address,
  hub: hubKey.address,
  token: '0x0000000000000000000000000000000000000000' as Address,
  challengeDuration: 3600n,
  salt: ('0x' + '00'.repeat(32)) as Bytes32,
};
