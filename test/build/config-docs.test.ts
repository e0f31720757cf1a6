/** docs/configuration.md is generated from the schema and config/default.yaml, and cannot drift from them. */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { envOverrides, loadConfig } from '../../src/config/load';
import { configSchema } from '../../src/config/schema';
import { CONFIG_DOC, renderConfigDocs } from '../../scripts/config-docs';

/** Every leaf of a loaded configuration, as dotted keys. */
function leaves(tree: Record<string, unknown>, prefix = ''): Array<[string, unknown]> {
  return Object.entries(tree).flatMap(([k, v]) =>
    v !== null && typeof v === 'object' && !Array.isArray(v) ? leaves(v as Record<string, unknown>, `${prefix}${k}.`) : [[`${prefix}${k}`, v] as [string, unknown]]);
}

describe('docs/configuration.md', () => {
  it('is what npm run docs:config writes now (run it after changing the schema or default.yaml)', () => {
    expect(readFileSync(CONFIG_DOC, 'utf8')).toBe(renderConfigDocs());
  });

  it('has one row per setting, with a variable that really sets that key and its default', () => {
    const doc = renderConfigDocs();
    const rows = doc.split('\n').filter((l) => l.startsWith('| `'));
    const config = loadConfig({ env: {} }) as unknown as Record<string, unknown>;
    // A section that is null by default (e.g. sip.pbxDrachtio) is a heading, its keys rows under it.
    const offSections = leaves(config).filter(([key, v]) => v === null && doc.includes(`\n## \`${key}\`\n`)).map(([key]) => key);
    const all = leaves(config).filter(([key]) => !offSections.includes(key));
    const underOff = rows.filter((r) => offSections.some((k) => r.startsWith(`| \`${k}.`)));
    expect(rows.length - underOff.length).toBe(all.length);
    for (const [key, value] of all) {
      const row = rows.find((r) => r.startsWith(`| \`${key}\` |`));
      expect({ key, row }).toEqual({ key, row: expect.any(String) });
      const [, , env, , def] = row!.split(/ \| |^\| /);
      expect({ key, def }).toEqual({ key, def: `\`${value === null ? 'null' : typeof value === 'string' ? value : JSON.stringify(value)}\`` });
      // The variable, set, lands on exactly this key.
      expect(leaves(envOverrides({ [env!.replace(/`/g, '')]: 'x' })).map(([k]) => k)).toEqual([key]);
    }
    for (const row of underOff) {
      const [, key, env] = row.split(/ \| |^\| /).map((c) => c.replace(/`/g, ''));
      expect(leaves(envOverrides({ [env!]: 'x' })).map(([k]) => k)).toEqual([key]);
    }
  });

  it('walks whatever the schema holds: a new section and key appear with type, limits, default and comment', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'keylatch-docs-'));
    try {
      const yamlFile = path.join(dir, 'default.yaml');
      writeFileSync(yamlFile, `${readFileSync(path.join(__dirname, '..', '..', 'config', 'default.yaml'), 'utf8')}\nwidgets:\n  # How many widgets to spin | at once.\n  spinCount: 4\n  mode: fast\n`);
      const schema = configSchema.extend({ widgets: z.object({ spinCount: z.number().int().min(2).max(8), mode: z.enum(['fast', 'slow']), label: z.string().nullable().default(null) }) });
      const doc = renderConfigDocs(schema, yamlFile);
      expect(doc).toContain('## `widgets`');
      expect(doc).toContain('| `widgets.spinCount` | `KEYLATCH_WIDGETS__SPIN_COUNT` | integer, 2..8 | `4` | How many widgets to spin \\| at once. |');
      expect(doc).toContain('| `widgets.mode` | `KEYLATCH_WIDGETS__MODE` | `fast` or `slow` | `fast` |  |');
      expect(doc).toContain('| `widgets.label` | `KEYLATCH_WIDGETS__LABEL` | string, or null | `null` |  |');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
