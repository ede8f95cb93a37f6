import type { ChannelRecord } from '@trickle/hub/store/types';
import type { Address, Funding, State } from '@trickle/protocol/types';

export declare function hubChannelRecord(o: {
  hub: Address;
  device: Address;
  adjudicator: Address;
  salt: string;
  funding?: Funding;
  state?: Partial<State>;
}): ChannelRecord;
