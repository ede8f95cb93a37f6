// The market a TrickleClient makes when connect() is given none (`ClientOptions.market`): MarketSession. A browser
// bundle reads market-default-browser.ts instead (package.json `browser` map): there the market is made only when the
// app passes it (`MarketSession` from `@trickle/client/market`), so a device that does not trade does not ship it.
export { MarketSession as DefaultMarket } from './market.js';
