import type pg from 'pg';

/** A PostgreSQL server started by {@link startPostgres}. */
export interface TestPostgres {
  readonly port: number;
  /** Process id of the postmaster (changes across restarts). */
  readonly pid: number;
  /** Connection string of database `db` on this server. */
  url(db: string): string;
  /** Creates a fresh empty database and returns its connection string. */
  createDatabase(): Promise<string>;
  /** Fast shutdown, then start again on the same data folder and port. */
  restart(): Promise<void>;
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Stops the server and deletes its data. */
  close(): Promise<void>;
}
export declare function startPostgres(): Promise<TestPostgres>;
/** One query on its own connection to database `url`; the rows. */
export declare function sql<R extends pg.QueryResultRow>(url: string, text: string, values?: unknown[]): Promise<R[]>;
