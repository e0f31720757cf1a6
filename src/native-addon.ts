import { findUp } from './paths';

/** The one native addon (native/fastpath.c and native/mixer.c), built by `npm run build:native`. */
export const NATIVE_ADDON = 'build/Release/keylatch_fastpath.node';

/** One entry per function the TypeScript side calls: a Record, so that the compiler makes every caller list all of them. */
export type NativeFunctions<T> = Record<keyof T & string, true>;

/** The names in `required` that `addon` does not export as functions. */
export function missingFunctions(addon: object, required: readonly string[]): string[] {
  return required.filter((name) => typeof (addon as Record<string, unknown>)[name] !== 'function');
}

/**
 * The native addon, checked against the functions its TypeScript caller uses. The addon is
 * a build product that git does not track: after a merge or checkout that changes native/,
 * build/Release can hold an addon older than the TypeScript running with it. Unchecked, the
 * first call to a function it lacks throws inside a packet handler, which counts it as one
 * dropped packet and carries on: a build without ssrc() once left every key-policy NAT
 * handover unanswered while everything else worked (test/nat/real-nat.test.ts). Refusing
 * to load names the problem at once instead.
 */
export function loadNativeAddon<T extends object>(caller: string, functions: NativeFunctions<T>): T {
  const file = findUp(NATIVE_ADDON);
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- a native addon has no ES module form
  const addon = require(file) as T;
  const missing = missingFunctions(addon, Object.keys(functions));
  if (missing.length > 0) {
    throw new Error(`${file} is older than ${caller}: it lacks ${missing.join(', ')}. Rebuild it: npm run build:native`);
  }
  return addon;
}
