// The library surface of @trickle/cli: the watchtower, for running in-process, and the program, for embedding.
export {
  createWatchtower,
  WATCHTOWER_DEFAULTS,
  type Watchtower,
  type WatchtowerOptions,
  type WatchtowerStatus,
  type AddStateResult,
  type WatchedChannelView,
} from './watch/watchtower.js';
export { parseSubmission, type StateSubmission } from './watch/submission.js';
export { jsonLinesLogger, silentLogger, type WatchLogger, type LogLevel } from './watch/log.js';
export { main, buildProgram } from './program.js';
export { EXIT, CliError, type ExitCode } from './exit.js';
