import type { Compilable, CompiledQuery, Insertable, Kysely, QueryResult, Transaction } from 'kysely';
import type { Database } from './schema.js';

type Db = Kysely<Database> | Transaction<Database>;

/** What a precompiled statement binds: never `undefined`, which the builder would have left out. */
export type BoundValue = string | number | bigint | null;

/** A row of `table` with every listed column given, each typed as the table has it (never undefined). */
type Row<T extends keyof Database, C extends keyof Insertable<Database[T]>> = {
  readonly [P in C]-?: Exclude<Insertable<Database[T]>[P], undefined>;
};

/** Where a compiled statement's parameter comes from: a named value of the call, or a constant of the builder. */
type Slot = { readonly name: string } | { readonly constant: unknown };

interface Template {
  readonly compiled: CompiledQuery;
  readonly slots: readonly Slot[];
}

/**
 * The template cache of a statement, keyed by the handle's adapter (one per dialect): a database
 * and its transactions share it. getExecutor() is marked internal in Kysely ~0.28 (pinned). A
 * handle with plugins gets no cache: plugins may rewrite the query per call, and `withPlugin`
 * keeps the adapter, so a template compiled through one would be reused for the other.
 */
function cacheKey(db: Db): object | undefined {
  const executor = db.getExecutor();
  return executor.plugins.length > 0 ? undefined : executor.adapter;
}

/** Row counts above this are compiled per call: the cache of a multi-row insert stays bounded. */
const MAX_CACHED_ROW_COUNT = 64;

// stand-ins used only while compiling (a call's own values are only ever bound, never compiled)
const placeholder = (name: string) => `\u0000${name}\u0000`;

function compileTemplate(compilable: Compilable<unknown>, names: readonly string[]): Template {
  const compiled = compilable.compile();
  // a placeholder inside the SQL text (an identifier, a literal) could not be bound per call
  if (compiled.sql.includes('\u0000')) throw new Error('a precompiled statement may only bind values');
  const byPlaceholder = new Map(names.map((name) => [placeholder(name), name]));
  const slots = compiled.parameters.map((value): Slot => {
    const name = typeof value === 'string' ? byPlaceholder.get(value) : undefined;
    return name === undefined ? { constant: value } : { name };
  });
  for (const name of names)
    if (!slots.some((slot) => 'name' in slot && slot.name === name))
      throw new Error(`precompiled statement does not use ${name}`);
  return { compiled, slots };
}

/**
 * A statement whose shape never changes, compiled by Kysely once per dialect and afterwards run
 * with each call's values bound in their places. Kysely otherwise builds and compiles the SQL
 * on every call: in a login's dozen statements Kysely's own work took more main-thread time
 * than SQLite's (docs/performance.md). `build` gets a stand-in for each named value (typed
 * `never`, so it fits any column) and must use them only as values, never to choose the
 * statement's shape.
 */
export function precompiled<K extends string, R>(
  names: readonly K[],
  build: (db: Kysely<Database>, values: Readonly<Record<K, never>>) => Compilable<R>,
): (db: Db, values: Readonly<Record<K, BoundValue>>) => Promise<QueryResult<R>> {
  const statement = precompiledQuery(names, build);
  return async (db, values) => db.executeQuery<R>(statement(db, values));
}

/**
 * The statement `precompiled` runs, compiled the same way, for a caller that runs it itself: on a
 * connection of its own, without Kysely (db/connection.ts, DatabaseHandle.lookups).
 */
export function precompiledQuery<K extends string, R>(
  names: readonly K[],
  build: (db: Kysely<Database>, values: Readonly<Record<K, never>>) => Compilable<R>,
): (db: Db, values: Readonly<Record<K, BoundValue>>) => CompiledQuery<R> {
  const stand = Object.fromEntries(names.map((name) => [name, placeholder(name)])) as Record<K, never>;
  const templates = new WeakMap<object, Template>();
  return (db, values) => {
    const key = cacheKey(db);
    let template = key && templates.get(key);
    if (!template) {
      template = compileTemplate(build(db as Kysely<Database>, stand), names);
      if (key) templates.set(key, template);
    }
    const parameters = template.slots.map((slot) =>
      'name' in slot ? values[slot.name as K] : slot.constant,
    );
    return { ...template.compiled, parameters } as CompiledQuery<R>;
  };
}

/** An insert of one row with exactly these columns, compiled once per dialect (see `precompiled`). */
export function precompiledInsert<
  T extends keyof Database & string,
  C extends keyof Insertable<Database[T]> & string,
>(table: T, columns: readonly C[]): (db: Db, row: Row<T, C>) => Promise<QueryResult<unknown>> {
  const insert = precompiled(columns, (db, values) =>
    // the row's columns are the given ones, each bound as a value
    db.insertInto(table).values(values as never),
  );
  // the row is typed by the table's columns (checked at the call); its values are bound as they are
  return (db, row) => insert(db, row as Readonly<Record<C, BoundValue>>);
}

/**
 * A multi-row insert of these columns, compiled once per dialect and row count, binding the rows'
 * values row by row in column order (the order Kysely gives its parameters, checked once).
 */
export function precompiledInsertRows<
  T extends keyof Database & string,
  C extends keyof Insertable<Database[T]> & string,
>(table: T, columns: readonly C[]): (db: Db, rows: readonly Row<T, C>[]) => Promise<void> {
  const templates = new WeakMap<object, Map<number, CompiledQuery>>();
  const compile = (db: Db, count: number): CompiledQuery => {
    const rows = Array.from({ length: count }, (_, row) =>
      Object.fromEntries(columns.map((column) => [column, placeholder(`${row}.${column}`)])),
    );
    const compiled = db
      .insertInto(table)
      .values(rows as never)
      .compile();
    const expected = rows.flatMap((row) => columns.map((column) => row[column]));
    if (
      compiled.sql.includes('\u0000') ||
      compiled.parameters.length !== expected.length ||
      compiled.parameters.some((value, i) => value !== expected[i])
    )
      throw new Error('a precompiled insert must bind its rows in column order');
    return compiled;
  };
  return async (db, rows) => {
    if (rows.length === 0) return;
    const key = rows.length <= MAX_CACHED_ROW_COUNT ? cacheKey(db) : undefined;
    let byCount = key && templates.get(key);
    if (key && !byCount) {
      byCount = new Map();
      templates.set(key, byCount);
    }
    let compiled = byCount?.get(rows.length);
    if (!compiled) {
      compiled = compile(db, rows.length);
      byCount?.set(rows.length, compiled);
    }
    // one array filled in place: the audit trail binds 64 rows of 14 columns per statement
    const parameters: unknown[] = new Array(rows.length * columns.length);
    let next = 0;
    for (const row of rows) for (const column of columns) parameters[next++] = row[column];
    await db.executeQuery({ ...compiled, parameters });
  };
}
