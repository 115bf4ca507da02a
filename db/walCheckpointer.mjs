// Checkpoints the SQLite write-ahead log on its own thread, so the request thread never waits for
// the checkpoint's fsync (about 10 ms here, every few dozen logins; it stalled every request
// behind it). Plain JavaScript on purpose: a worker file must load without a TypeScript loader.
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';

const db = new Database(workerData.file, { fileMustExist: true });
// a checkpoint reads and writes through the OS, not the page cache: keep the cache small
db.pragma('cache_size = -256');
// NORMAL: the checkpoint syncs the log before it writes the database and syncs the database after
db.pragma('synchronous = NORMAL');

// the failure last reported: one that repeats every half second is reported once, not logged twice a second
let reported;
const checkpoint = () => {
  try {
    // PASSIVE never waits for readers or writers: what it cannot copy now is copied next time
    db.pragma('wal_checkpoint(PASSIVE)');
    reported = undefined;
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    if (message !== reported) parentPort.postMessage({ error: message });
    reported = message;
  }
};
const timer = setInterval(checkpoint, workerData.intervalMs);

parentPort.on('message', (message) => {
  if (message !== 'close') return;
  clearInterval(timer);
  checkpoint();
  db.close();
  parentPort.close();
});
