import type { Compilable, CompiledQuery, Kysely, QueryResult, Transaction } from 'kysely';
import type { Database } from './schema.js';

type Db = Kysely<Database> | Transaction<Database>;

/** Where a compiled statement's parameter comes from: a named value of the call, or a constant of the builder. */
type Slot = { readonly name: string } | { readonly constant: unknown };

interface Template {
  readonly compiled: CompiledQuery;
  readonly slots: readonly Slot[];
}

// a placeholder value no real argument can equal: NUL never appears in our values
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
 * on every call: a login's dozen statements spent more time there than in SQLite
 * (docs/performance.md). `build` gets a stand-in for each named value (typed `never`, so it
 * fits any column) and must use them only as values, never to choose the statement's shape.
 */
export function precompiled<K extends string, R>(
  names: readonly K[],
  build: (db: Kysely<Database>, values: Readonly<Record<K, never>>) => Compilable<R>,
): (db: Db, values: Readonly<Record<K, unknown>>) => Promise<QueryResult<R>> {
  const stand = Object.fromEntries(names.map((name) => [name, placeholder(name)])) as Record<K, never>;
  // one template per dialect: a database and its transactions share their adapter
  const templates = new WeakMap<object, Template>();
  return async (db, values) => {
    const adapter = db.getExecutor().adapter;
    let template = templates.get(adapter);
    if (!template) {
      template = compileTemplate(build(db as Kysely<Database>, stand), names);
      templates.set(adapter, template);
    }
    const parameters = template.slots.map((slot) =>
      'name' in slot ? values[slot.name as K] : slot.constant,
    );
    return db.executeQuery<R>({ ...template.compiled, parameters });
  };
}

/** An insert of one row with exactly these columns, compiled once per dialect (see `precompiled`). */
export function precompiledInsert<T extends keyof Database & string, C extends keyof Database[T] & string>(
  table: T,
  columns: readonly C[],
): (db: Db, row: Readonly<Record<C, unknown>>) => Promise<QueryResult<unknown>> {
  return precompiled(columns, (db, values) =>
    // the row's columns are the given ones, each bound as a value
    db.insertInto(table).values(values as never),
  );
}
