/**
 * The engine pair (packages/protocol/src/engine-pair.fixture.ts) on the built `@trickle/protocol`, as users run it:
 * a device engine and a hub engine on one channel of the fixture's adjudicator, joined through the wire codec.
 */
import * as channel from '@trickle/protocol/channel';
import * as codec from '@trickle/protocol/codec';
import * as eip712 from '@trickle/protocol/eip712';
import * as engine from '@trickle/protocol/engine';
import * as engineDevice from '@trickle/protocol/engine-device';
import * as engineHub from '@trickle/protocol/engine-hub';
import * as locks from '@trickle/protocol/locks';
import * as signer from '@trickle/protocol/signer';
import { EnginePair, type EnginePairOptions } from '../../packages/protocol/src/engine-pair.fixture.js';
import type { Fixture } from './fixture.js';

/** The built modules the pair takes its functions from (`EngineKit` names them). */
const builtKit = { ...channel, ...codec, ...eip712, ...engine, ...engineDevice, ...engineHub, ...locks, ...signer };

/** The pair on the built protocol, signing with the fixture's device and hub keys. */
export class Pair extends EnginePair<typeof builtKit> {
  constructor(
    fx: Pick<Fixture, 'deviceKey' | 'hubKey'>,
    options: Omit<EnginePairOptions<typeof builtKit>, 'kit' | 'keys'>,
  ) {
    super({ ...options, kit: builtKit, keys: { device: fx.deviceKey, hub: fx.hubKey } });
  }
}
