import type { DeviceChannelRecord } from '@trickle/client/store';

export declare const SAMPLE_ID: string;
export declare function sampleRecord(version: bigint, channelId?: string): DeviceChannelRecord;
