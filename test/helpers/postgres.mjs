// A real PostgreSQL server for tests: Debian's `postgresql` binaries (.ci/run installs them), a fresh data folder,
// a free loopback port, trust authentication. Nothing is mocked; the server is a child process of the test.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

/** The newest installed server's bin folder (`/usr/lib/postgresql/<major>/bin`). */
function binDir() {
  const root = '/usr/lib/postgresql';
  const majors = existsSync(root) ? readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'postgres'))) : [];
  majors.sort((a, b) => Number(b) - Number(a));
  if (majors.length === 0)
    throw new Error('no PostgreSQL server found under /usr/lib/postgresql: apt-get install postgresql (.ci/run does)');
  return join(root, majors[0], 'bin');
}

async function freePort() {
  const s = createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const port = s.address().port;
  await new Promise((r) => s.close(r));
  return port;
}

/** Root may not run the server: run it as the `postgres` user, which must own the data folder. */
function runAs() {
  if (userInfo().uid !== 0) return {};
  const uid = Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout.trim());
  const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim());
  if (!Number.isInteger(uid) || uid <= 0)
    throw new Error('running as root and there is no postgres user to run the server as');
  return { uid, gid };
}

/**
 * Start a PostgreSQL server on a free loopback port with a fresh data folder.
 * @returns the server: `url(db)` for a connection string, `createDatabase()` for a fresh database, `stop()`,
 * `restart()` (a fast shutdown and a start on the same data and port), `pid` of the postmaster.
 */
export async function startPostgres() {
  const bin = binDir();
  const user = runAs();
  // The parent is world-traversable so the postgres user reaches its data folder inside a root-owned temp dir.
  const base = mkdtempSync(join(tmpdir(), 'trickle-pg-'));
  chmodSync(base, 0o777);
  const data = join(base, 'data');
  mkdirSync(data, { mode: 0o700 });
  if (user.uid !== undefined) chownSync(data, user.uid, user.gid);
  const init = spawnSync(
    join(bin, 'initdb'),
    ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--locale=C', '--no-sync'],
    { encoding: 'utf8', ...user },
  );
  if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr || init.stdout}`);
  const port = await freePort();
  let child;
  let exited;

  const start = async () => {
    child = spawn(
      join(bin, 'postgres'),
      [
        '-D',
        data,
        '-p',
        String(port),
        '-c',
        'listen_addresses=127.0.0.1',
        '-c',
        'unix_socket_directories=',
        '-c',
        'max_connections=200',
        '-c',
        'fsync=on',
        '-c',
        'synchronous_commit=on',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'], ...user },
    );
    let log = '';
    child.stderr.on('data', (d) => {
      log = (log + d).slice(-4000);
    });
    exited = new Promise((r) => child.once('exit', r));
    const deadline = Date.now() + 30_000;
    for (;;) {
      const c = new pg.Client({ connectionString: url('postgres') });
      try {
        await c.connect();
        await c.end();
        return;
      } catch {
        await c.end(); // a probe that never connected: a no-op (pg's end() resolves, never rejects)
        if (child.exitCode !== null || Date.now() > deadline) throw new Error(`postgres did not start: ${log}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  };
  const stopServer = async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGINT'); // fast shutdown: clients are disconnected, committed data stays
      await exited;
    }
  };
  const url = (db) => `postgres://postgres@127.0.0.1:${port}/${db}`;
  await start();
  let n = 0;
  return {
    port,
    get pid() {
      return child.pid;
    },
    url,
    /** A fresh empty database; returns its connection string. */
    async createDatabase() {
      const name = `t${process.pid}_${n++}`;
      const c = new pg.Client({ connectionString: url('postgres') });
      await c.connect();
      try {
        await c.query(`CREATE DATABASE ${name}`);
      } finally {
        await c.end();
      }
      return url(name);
    },
    async restart() {
      await stopServer();
      await start();
    },
    stop: stopServer,
    /** Starts again after {@link stop} (same data, same port). */
    start,
    async close() {
      await stopServer();
      rmSync(base, { recursive: true, force: true });
    },
  };
}

/** One query on its own connection to database `url`; the rows. */
export async function sql(url, text, values) {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query(text, values)).rows;
  } finally {
    await c.end();
  }
}
