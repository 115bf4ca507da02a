import fs from 'node:fs';
import path from 'node:path';

/** A directory only its owner may enter, also one made elsewhere with a wider mode (mkdir leaves that as it is). */
export function ownerOnlyDirectory(dir: string): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.chmodSync(dir, 0o700);
}

/**
 * A SQLite file readable by its owner alone (SQLite creates `-wal` and `-shm` with its mode): the
 * gateway's holds password hashes and every audit entry, the embedded FHIR server's the patients'
 * records, and DATA_DIR may be a directory made elsewhere (a volume, `./data`) with a wider mode
 * than the 0700 the gateway gives its own.
 */
export function ownerOnly(file: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.closeSync(fs.openSync(file, 'a', 0o600));
  fs.chmodSync(file, 0o600);
  for (const companion of [`${file}-wal`, `${file}-shm`])
    if (fs.existsSync(companion)) fs.chmodSync(companion, 0o600);
}
