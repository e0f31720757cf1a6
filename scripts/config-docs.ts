/**
 * npm run docs:config — writes docs/configuration.md from the zod schema (src/config/schema.ts:
 * every key, its type and limits) and config/default.yaml (its default and the comment above
 * it). Walks the schema, so a key added there appears here with no change to this script.
 * test/build/config-docs.test.ts fails when the checked-in file differs from what this writes.
 *
 * Comment rule (how the yaml library attaches them): a key's comment is the one right above it;
 * for the first key of a section the comment above it is the section's own. The comment above
 * the file's first key is the file's header.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { isMap, parseDocument, type Pair, type YAMLMap } from 'yaml';
import { z } from 'zod';
import { DEFAULT_CONFIG_FILE, envName } from '../src/config/load';
import { configSchema } from '../src/config/schema';

export const CONFIG_DOC = path.join(__dirname, '..', 'docs', 'configuration.md');

interface Leaf {
  key: string;
  type: string;
  defaultValue: unknown;
  comment: string;
}

interface Section {
  key: string;
  comment: string;
  /** The whole section may be null (off), as it is by default; its keys apply once it is set. */
  nullable: boolean;
  leaves: Leaf[];
}

/** Peels wrappers that do not change what a user writes: refinements, defaults, nullable. */
function unwrap(t: z.ZodTypeAny): { inner: z.ZodTypeAny; nullable: boolean; schemaDefault: unknown } {
  let nullable = false;
  let schemaDefault: unknown = undefined;
  for (;;) {
    if (t instanceof z.ZodEffects) t = t.innerType();
    else if (t instanceof z.ZodDefault) {
      schemaDefault = t._def.defaultValue();
      t = t._def.innerType;
    } else if (t instanceof z.ZodNullable || t instanceof z.ZodOptional) {
      nullable = true;
      t = t.unwrap();
    } else return { inner: t, nullable, schemaDefault };
  }
}

/** A short human form of a leaf's type and limits, e.g. "integer, 1..65535". */
function describeType(t: z.ZodTypeAny): string {
  const { inner, nullable } = unwrap(t);
  const base = describeInner(inner, t);
  return nullable ? `${base}, or null` : base;
}

function describeInner(t: z.ZodTypeAny, outer: z.ZodTypeAny): string {
  if (t instanceof z.ZodNumber) {
    const c = t._def.checks;
    const int = c.some((x) => x.kind === 'int');
    const min = c.find((x) => x.kind === 'min');
    const max = c.find((x) => x.kind === 'max');
    const lo = min && 'value' in min ? `${min.inclusive ? '>=' : '>'} ${min.value}` : '';
    const hi = max && 'value' in max ? `${max.inclusive ? '<=' : '<'} ${max.value}` : '';
    const bothInclusive = min && max && 'value' in min && 'value' in max && min.inclusive && max.inclusive;
    const range = bothInclusive ? `${(min as { value: number }).value}..${(max as { value: number }).value}` : [lo, hi].filter(Boolean).join(', ');
    return [int ? 'integer' : 'number', range].filter(Boolean).join(', ');
  }
  if (t instanceof z.ZodBoolean) return 'true or false';
  if (t instanceof z.ZodEnum) return (t.options as string[]).map((o) => `\`${o}\``).join(' or ');
  if (t instanceof z.ZodLiteral) return `\`${String(t.value)}\``;
  if (t instanceof z.ZodUnion) return (t.options as z.ZodTypeAny[]).map((o) => describeInner(unwrap(o).inner, o)).join(', or ');
  if (t instanceof z.ZodArray) return `list of ${describeInner(unwrap(t.element).inner, t.element)}`;
  // A list of records (media.relays): name each field and its type.
  if (t instanceof z.ZodObject) {
    const fields = Object.entries(t.shape as Record<string, z.ZodTypeAny>).map(([k, v]) => `${k}: ${describeType(v)}`);
    return `{${fields.join('; ')}}`;
  }
  if (t instanceof z.ZodString) {
    const parts: string[] = [];
    for (const c of t._def.checks) {
      if (c.kind === 'regex') parts.push(c.message ?? `matching ${c.regex}`);
      else if (c.kind === 'min' && c.value === 1) parts.push('not empty');
      else if (c.kind === 'url') parts.push('a URL');
    }
    // A refinement's message says what the string must be (e.g. "must be an IPv4 or IPv6 address").
    const refined = refinementMessage(outer);
    return ['string', ...parts, ...(refined ? [refined] : [])].join(', ');
  }
  return t._def.typeName ?? 'value';
}

/** The message of a leaf's refine(), found by running it on a value it must reject. */
function refinementMessage(t: z.ZodTypeAny): string | null {
  let cur = t;
  while (cur instanceof z.ZodDefault || cur instanceof z.ZodNullable || cur instanceof z.ZodOptional) cur = cur instanceof z.ZodDefault ? cur._def.innerType : cur.unwrap();
  if (!(cur instanceof z.ZodEffects)) return null;
  const r = cur.safeParse('\u0000');
  return r.success ? null : (r.error.issues[0]?.message ?? null);
}

function commentOf(pair: Pair, index: number, parentComment: string | null): string {
  const key = pair.key as { commentBefore?: string | null } | null;
  const value = pair.value as { comment?: string | null } | null;
  const before = key?.commentBefore ?? (index === 0 ? parentComment : null);
  return [before, value?.comment].filter((c): c is string => !!c).map(clean).join(' ');
}

const clean = (c: string): string => c.split('\n').map((l) => l.trim()).join(' ').trim();

/** Per dotted key: the YAML default and comment; per section: its comment. */
function readDefaults(yamlFile: string): { header: string; keys: Map<string, { value: unknown; comment: string }> } {
  const doc = parseDocument(readFileSync(yamlFile, 'utf8'));
  const keys = new Map<string, { value: unknown; comment: string }>();
  let header = '';
  const walk = (map: YAMLMap, prefix: string, mapComment: string | null): void => {
    map.items.forEach((pair, i) => {
      const k = `${prefix}${String((pair.key as { value: unknown }).value)}`;
      let comment = commentOf(pair, i, mapComment);
      if (!prefix && i === 0) {
        header = comment;
        comment = '';
      }
      const value = pair.value as unknown;
      if (isMap(value)) {
        // The comment above a section's first key lands on the section: it belongs to that key.
        const first = value.commentBefore ? clean(value.commentBefore) : null;
        keys.set(k, { value: undefined, comment });
        walk(value, `${k}.`, first);
      } else keys.set(k, { value: (value as { toJSON?: () => unknown } | null)?.toJSON?.() ?? null, comment });
    });
  };
  if (isMap(doc.contents)) walk(doc.contents, '', null);
  return { header, keys };
}

/** Every leaf of the schema, grouped by section (its parent object), in schema order. */
function walkSchema(schema: z.ZodTypeAny, yamlFile: string): Section[] {
  const { keys } = readDefaults(yamlFile);
  const sections: Section[] = [];
  const visit = (t: z.ZodTypeAny, key: string): void => {
    const { inner, nullable, schemaDefault } = unwrap(t);
    if (inner instanceof z.ZodObject) {
      const section: Section = { key, comment: keys.get(key)?.comment ?? '', nullable, leaves: [] };
      sections.push(section);
      for (const [k, child] of Object.entries(inner.shape as Record<string, z.ZodTypeAny>)) {
        const childKey = key ? `${key}.${k}` : k;
        if (unwrap(child).inner instanceof z.ZodObject) visit(child, childKey);
        else {
          const y = keys.get(childKey);
          const fallback = unwrap(child).schemaDefault;
          section.leaves.push({ key: childKey, type: describeType(child), defaultValue: y ? y.value : fallback === undefined && nullable ? NEEDED_WHEN_SET : fallback, comment: y?.comment ?? '' });
        }
      }
      return;
    }
    sections.push({ key, comment: '', nullable: false, leaves: [{ key, type: describeType(t), defaultValue: schemaDefault, comment: keys.get(key)?.comment ?? '' }] });
  };
  visit(schema, '');
  return sections.filter((s) => s.leaves.length > 0);
}

/** Table-cell text: pipes escaped, and <admin> shown as text rather than taken for HTML. */
const NEEDED_WHEN_SET = Symbol('needed when the section is set');

const cell = (s: string): string => s.replace(/\|/g, '\\|').replace(/</g, '&lt;');
const show = (v: unknown): string =>
  v === NEEDED_WHEN_SET ? '(required when set)' : v === undefined ? '(required)' : `\`${v === null ? 'null' : typeof v === 'string' ? v : JSON.stringify(v)}\``;

/** The reference for a schema and its defaults file (keylatch's own unless told otherwise). */
export function renderConfigDocs(schema: z.ZodTypeAny = configSchema, yamlFile: string = DEFAULT_CONFIG_FILE): string {
  const { header } = readDefaults(yamlFile);
  const out = [
    '# Configuration reference',
    '',
    '<!-- Generated by `npm run docs:config` from src/config/schema.ts and config/default.yaml; do not edit by hand. -->',
    '',
    'keylatch reads `config/default.yaml`, then the file given with `--config FILE`, then `KEYLATCH_*`',
    'environment variables, then command-line flags; each layer overrides the one before. Values',
    'in the environment are YAML scalars (`true`, `42`, `null`). Everything is validated at start-up;',
    'a wrong value stops keylatch with one line per setting, naming the key and its variable.',
    '',
  ];
  if (header) out.push(`From config/default.yaml: ${header}`, '');
  for (const s of walkSchema(schema, yamlFile)) {
    out.push(`## \`${s.key}\``, '');
    if (s.comment) out.push(cell(s.comment), '');
    if (s.nullable) out.push(`Default \`null\` (off). Set, it is a mapping with these keys (in the environment: \`${envName(s.key)}__<KEY>\`):`, '');
    out.push('| key | environment variable | type | default | what it does |', '|---|---|---|---|---|');
    for (const l of s.leaves) out.push(`| \`${l.key}\` | \`${envName(l.key)}\` | ${cell(l.type)} | ${show(l.defaultValue).replace(/\|/g, '\\|')} | ${cell(l.comment)} |`);
    out.push('');
  }
  return out.join('\n');
}

if (require.main === module) {
  const text = renderConfigDocs();
  if (process.argv.includes('--check')) {
    const same = readFileSync(CONFIG_DOC, 'utf8') === text;
    if (!same) console.error(`${path.relative(process.cwd(), CONFIG_DOC)} is out of date: run npm run docs:config`);
    process.exit(same ? 0 : 1);
  }
  writeFileSync(CONFIG_DOC, text);
  console.log(`wrote ${path.relative(process.cwd(), CONFIG_DOC)}`);
}
