// The public API of @trickle/chain. Subpaths (`@trickle/chain/adjudicator`, `/actions/<operation>`, …) are importable too.
export { Adjudicator } from './adjudicator.js';
export {
  deployAdjudicator,
  deployToken,
  type DeployOptions,
  type DeployTokenOptions,
  type TestToken,
  type TestTokenKind,
} from './deploy.js';
export {
  connectChain,
  jsonRpcProvider,
  CONNECT_CHAIN_DEFAULTS,
  type ChainConnection,
  type ConnectChainOptions,
} from './rpc.js';
export { SerialWallet } from './serialWallet.js';
export { allowance, approve, balanceOf, mintTestToken, transfer } from './erc20.js';
export { decodeChainError, isChainRevert, type ChainRevertDetails } from './errors.js';
export {
  parseLogs,
  queryEvents,
  eventsNamed,
  type AdjudicatorEvent,
  type AdjudicatorEventName,
  type EventFilter,
} from './events.js';
export {
  CHANNEL_STATUSES,
  type ChannelStatus,
  type OnChainChannel,
  type Registration,
  type ReplaceOptions,
  type SentCopy,
  type StuckCopy,
  type StuckCopyStore,
  type TxOptions,
  type TxResult,
} from './types.js';
