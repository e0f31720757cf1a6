import pino from 'pino';

export type Logger = pino.Logger;

export function createLogger(level: string = process.env.KEYLATCH_LOG__LEVEL ?? 'info'): Logger {
  return pino({ level, base: { app: 'keylatch' } });
}

/** For library use and tests: a logger that writes nothing. */
export const silentLogger: Logger = pino({ level: 'silent' });
