/** The `code` of a statement PostgreSQL left unanswered past its budget (the connection was dropped). */
export const QUERY_TIMEOUT = 'QUERY_TIMEOUT';
/**
 * The `code` of a failure to reach the database: PostgreSQL out of reach or a connection lost under
 * a statement, or the thread of a threaded SQLite connection gone under one (db/threadedSqlite.ts).
 */
export const DATABASE_UNREACHABLE = 'DATABASE_UNREACHABLE';
