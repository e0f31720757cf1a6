import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ZodError } from 'zod';
import { findUp } from '../paths';
import { checkedConfigSchema, type Config } from './schema';

/** One setting that is missing or wrong: its dotted key and what is wrong with it. */
export interface ConfigProblem {
  key: string;
  message: string;
  /** What to set, e.g. "KEYLATCH_SIP__PBX=sip:HOST:PORT"; the key's variable name when absent. */
  hint?: string;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
  /** Each problem on its own, so the CLI can print one line per setting. */
  readonly problems: ConfigProblem[];

  constructor(message: string, problems: ConfigProblem[] = []) {
    super(message);
    this.problems = problems;
  }
}

export const DEFAULT_CONFIG_FILE = findUp(path.join('config', 'default.yaml'));
const ENV_PREFIX = 'KEYLATCH_';

type Tree = Record<string, unknown>;

function isTree(v: unknown): v is Tree {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function deepMerge(base: Tree, over: Tree): Tree {
  const out: Tree = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] = isTree(b) && isTree(v) ? deepMerge(b, v) : v;
  }
  return out;
}

const camel = (snake: string): string => snake.toLowerCase().replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
const snake = (camelCase: string): string => camelCase.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();

/** The environment variable that sets a dotted key: sip.advertisedAddress -> KEYLATCH_SIP__ADVERTISED_ADDRESS. */
export const envName = (key: string): string => ENV_PREFIX + key.split('.').map(snake).join('__');

/** Environment values are YAML scalars, so `true`, `42` and `null` arrive typed. */
export function envOverrides(env: NodeJS.ProcessEnv): Tree {
  const out: Tree = {};
  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith(ENV_PREFIX) || raw === undefined) continue;
    const keys = name.slice(ENV_PREFIX.length).split('__').map(camel);
    let node = out;
    keys.slice(0, -1).forEach((k) => {
      if (!isTree(node[k])) node[k] = {};
      node = node[k] as Tree;
    });
    node[keys[keys.length - 1] as string] = parseYaml(raw) as unknown;
  }
  return out;
}

function problemsOf(err: ZodError): ConfigProblem[] {
  return err.issues.map((i) => ({ key: i.path.join('.') || '(root)', message: i.message }));
}

/** One line per problem, naming the key and the environment variable that sets it. */
export function problemLines(problems: ConfigProblem[]): string[] {
  return problems.map((p) => {
    const set = p.hint ?? (p.key === '(root)' ? null : envName(p.key));
    return `invalid configuration: ${p.key}: ${p.message}${set ? ` (set ${set})` : ''}`;
  });
}

/** The one-line form, e.g. for a thrown error's message: "invalid configuration: a: x; b: y". */
export function describeProblems(problems: ConfigProblem[]): string {
  return `invalid configuration: ${problems.map((p) => `${p.key}: ${p.message}`).join('; ')}`;
}

export function loadConfig(opts: { file?: string; env?: NodeJS.ProcessEnv; overrides?: Tree } = {}): Config {
  const readYaml = (file: string): Tree => {
    const parsed: unknown = parseYaml(readFileSync(file, 'utf8'));
    if (parsed !== null && !isTree(parsed)) throw new ConfigError(`${file}: top level must be a mapping`);
    return parsed ?? {};
  };
  let tree = readYaml(DEFAULT_CONFIG_FILE);
  if (opts.file) tree = deepMerge(tree, readYaml(opts.file));
  tree = deepMerge(tree, envOverrides(opts.env ?? process.env));
  if (opts.overrides) tree = deepMerge(tree, opts.overrides);
  const result = checkedConfigSchema.safeParse(tree);
  if (!result.success) {
    const problems = problemsOf(result.error);
    throw new ConfigError(describeProblems(problems), problems);
  }
  return result.data;
}
