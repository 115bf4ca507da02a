import readline from 'node:readline';

/** Reads one line without echoing it on a terminal; reads a plain line from a pipe. */
export function readSecret(prompt: string): Promise<string> {
  const input = process.stdin;
  if (!input.isTTY) {
    return new Promise((resolve, reject) => {
      const rl = readline.createInterface({ input, terminal: false });
      let answered = false;
      rl.once('line', (line) => {
        // settle before close(): close() emits 'close' at once, and its handler would reject first
        answered = true;
        resolve(line);
        rl.close();
      });
      rl.once('close', () => {
        if (!answered) reject(new Error('No password given on standard input.'));
      });
    });
  }
  return new Promise((resolve) => {
    process.stdout.write(prompt);
    const rl = readline.createInterface({ input, output: process.stdout, terminal: true });
    // mute the echo: readline writes typed characters through _writeToOutput
    (rl as unknown as { _writeToOutput: (s: string) => void })._writeToOutput = () => {};
    rl.question('', (answer) => {
      rl.close();
      process.stdout.write('\n');
      resolve(answer);
    });
  });
}
