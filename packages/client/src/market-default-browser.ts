// A browser bundle's market-default.ts (package.json `browser` map): no market unless `ClientOptions.market` names one.
import type { MarketSession } from './market.js';

export const DefaultMarket: typeof MarketSession | undefined = undefined;
