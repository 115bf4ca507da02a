import net from 'node:net';

export interface PostgresProxy {
  /** `url` with its host and port moved onto the proxy. */
  via(url: string): string;
  /**
   * Lets the next COMMIT that follows a statement containing `statementText` reach the server and
   * be done there, then cuts that connection before the answer gets back: a lost acknowledgement.
   * Settles once the cut is made. With `thenDown`, every connection is cut and new ones are
   * refused from then on, until `restore()`: the database gone right after the commit.
   */
  loseCommitAck(statementText: string, options?: { thenDown?: boolean }): Promise<void>;
  /** The server goes away: every connection is cut and new ones are refused. */
  down(): void;
  /** The server stops answering (a hung host, a cut network): bytes go nowhere, connects never complete. */
  hang(): void;
  /** The connection that sends a statement containing `statementText` stops answering from it on; others go on. */
  hangAt(statementText: string): void;
  /** Ends `hang` or the `thenDown` of `loseCommitAck`; connections that hung are cut (they are lost). */
  restore(): void;
  close(): Promise<void>;
}

const QUERY_MESSAGE = 0x51; // 'Q': the simple query protocol, which pg uses for BEGIN/COMMIT

function isCommit(chunk: Buffer): boolean {
  return chunk[0] === QUERY_MESSAGE && /^commit\b/i.test(chunk.subarray(5).toString('latin1'));
}

/** A TCP proxy on loopback in front of PostgreSQL, for faults only a network can make. */
export async function startPostgresProxy(targetUrl: string): Promise<PostgresProxy> {
  const target = new URL(targetUrl);
  const sockets = new Set<net.Socket>();
  let down = false;
  let hung = false;
  let hangingAt: string | undefined;
  let plan: { text: string; thenDown: boolean; cut: () => void } | undefined;

  const goDown = () => {
    down = true;
    for (const s of sockets) s.destroy();
  };

  const server = net.createServer((client) => {
    if (down) {
      client.destroy();
      return;
    }
    if (hung) {
      sockets.add(client);
      client.on('error', () => client.destroy()).on('close', () => sockets.delete(client));
      return;
    }
    const upstream = net.connect(Number(target.port || 5432), target.hostname);
    sockets.add(client).add(upstream);
    let sawStatement = false;
    let losing = false;
    let silent = false;
    client.on('data', (chunk: Buffer) => {
      if (hangingAt && chunk.toString('latin1').includes(hangingAt)) silent = true;
      if (hung || silent) return;
      if (plan && chunk.toString('latin1').includes(plan.text)) sawStatement = true;
      if (plan && sawStatement && isCommit(chunk)) {
        const { thenDown, cut } = plan;
        plan = undefined;
        losing = true;
        upstream.once('data', () => {
          client.destroy();
          upstream.destroy();
          if (thenDown) goDown();
          cut();
        });
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (!losing && !hung && !silent) client.write(chunk);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    via(url) {
      const moved = new URL(url);
      moved.hostname = '127.0.0.1';
      moved.port = String(port);
      return moved.toString();
    },
    loseCommitAck(text, options = {}) {
      return new Promise<void>((cut) => {
        plan = { text, thenDown: options.thenDown ?? false, cut };
      });
    },
    down: goDown,
    hang() {
      hung = true;
    },
    hangAt(statementText) {
      hangingAt = statementText;
    },
    restore() {
      if (hung) for (const s of sockets) s.destroy();
      down = false;
      hung = false;
      hangingAt = undefined;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
