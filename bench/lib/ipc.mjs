// A forked worker process answering one request at a time over IPC.
import { fork } from 'node:child_process';

/**
 * Fork `script` and return { child, call(msg, timeoutMs), stop() }. A worker answers each request with one message;
 * `{ t: 'error', message }` rejects the call.
 */
export function forkWorker(script, execArgv = []) {
  const child = fork(script, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv });
  let waiting;
  child.on('message', (m) => {
    const w = waiting;
    waiting = undefined;
    if (!w) return;
    if (m.t === 'error') w.reject(new Error(`${script}: ${m.message}`));
    else w.resolve(m);
  });
  child.on('exit', (code, signal) => {
    waiting?.reject(new Error(`${script} exited with ${code ?? signal}`));
    waiting = undefined;
  });
  return {
    child,
    call(msg, timeoutMs) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`${script}: no answer to ${msg.t} in ${timeoutMs} ms`)),
          timeoutMs,
        );
        waiting = {
          resolve: (m) => (clearTimeout(timer), resolve(m)),
          reject: (e) => (clearTimeout(timer), reject(e)),
        };
        child.send(msg);
      });
    },
    /** Ask it to exit, then SIGKILL whatever is left after `graceMs`. */
    async stop(graceMs = 3000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      try {
        child.send({ t: 'exit' });
      } catch {
        /* channel closed */
      }
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}
