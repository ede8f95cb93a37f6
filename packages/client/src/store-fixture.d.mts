import type { DeviceChannelRecord } from './store.js';

export declare const SAMPLE_ID: string;
export declare function sampleRecord(version: bigint, channelId?: string): DeviceChannelRecord;
