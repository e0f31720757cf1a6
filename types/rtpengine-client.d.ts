declare module 'rtpengine-client' {
  type Dest = { port: number; host: string };
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  type Reply = Record<string, any>;
  export class Client {
    constructor(opts: { localPort?: number; localAddress?: string; timeout?: number });
    ping(dest: Dest): Promise<Reply>;
    offer(dest: Dest, opts: Record<string, unknown>): Promise<Reply>;
    answer(dest: Dest, opts: Record<string, unknown>): Promise<Reply>;
    query(dest: Dest, opts: Record<string, unknown>): Promise<Reply>;
    delete(dest: Dest, opts: Record<string, unknown>): Promise<Reply>;
    list(dest: Dest, opts: Record<string, unknown>): Promise<Reply>;
    close(): void;
  }
}
