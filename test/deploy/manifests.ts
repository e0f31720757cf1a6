/**
 * Loads deploy/kubernetes the way `kubectl apply -k` sees it and checks each object against the
 * Kubernetes API schemas, with no cluster: kubernetes-models carries validators compiled from the
 * official OpenAPI spec (types, required fields, enums, formats) and TypeScript interfaces
 * generated from the same spec. Its validators let unknown fields through, as the API server
 * does by default; a misspelt field (`hostnetwork`) is silently dropped there, so the interfaces
 * catch those through TypeScript's excess-property check on one object literal per manifest.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { parseAllDocuments, parse as parseYaml } from 'yaml';

export const ROOT = path.resolve(__dirname, '..', '..');
export const KUBE_DIR = path.join(ROOT, 'deploy', 'kubernetes');

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [field: string]: unknown;
}

/** One object with the file it came from, for messages. */
export interface Manifest {
  file: string;
  obj: KubeObject;
}

/** The YAML documents of one file; a syntax error, or a document that is no object, throws. */
export function loadFile(file: string): Manifest[] {
  const docs = parseAllDocuments(readFileSync(file, 'utf8'));
  const out: Manifest[] = [];
  for (const doc of docs) {
    if (doc.errors.length) throw new Error(`${file}: ${doc.errors.map((e) => e.message).join('; ')}`);
    const obj: unknown = doc.toJS();
    if (obj === null) continue;
    if (typeof obj !== 'object' || Array.isArray(obj)) throw new Error(`${file}: a document is not a mapping`);
    out.push({ file: path.relative(ROOT, file), obj: obj as KubeObject });
  }
  return out;
}

export interface Kustomization {
  namespace?: string;
  resources: string[];
}

export function loadKustomization(dir = KUBE_DIR): Kustomization {
  return parseYaml(readFileSync(path.join(dir, 'kustomization.yaml'), 'utf8')) as Kustomization;
}

/** What `kubectl apply -k DIR` applies: the listed resources, with the kustomization's namespace on namespaced objects. */
export function loadKustomized(dir = KUBE_DIR): Manifest[] {
  const k = loadKustomization(dir);
  return k.resources.flatMap((r) =>
    loadFile(path.join(dir, r)).map((m) =>
      k.namespace && m.obj.kind !== 'Namespace' ? { ...m, obj: { ...m.obj, metadata: { ...m.obj.metadata, namespace: k.namespace } } } : m,
    ),
  );
}

/** "apps/v1" + "DaemonSet" -> "kubernetes-models/apps/v1/DaemonSet"; the core group is just "v1". */
function modelModule(apiVersion: string, kind: string): string {
  return `kubernetes-models/${apiVersion}/${kind}`;
}

/** The schema's complaints about one object (empty when it is valid); an unknown apiVersion/kind is one. */
export function schemaErrors(obj: KubeObject): string[] {
  const mod = modelModule(obj.apiVersion, obj.kind);
  if (!/^[a-z0-9.]*\/?v\d+[a-z0-9]*\/[A-Z][A-Za-z]+$/.test(`${obj.apiVersion}/${obj.kind}`) || !existsSync(path.join(ROOT, 'node_modules', `${mod}.js`))) {
    return [`no such Kubernetes type: apiVersion ${obj.apiVersion}, kind ${obj.kind}`];
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const Model = (require(mod) as Record<string, new (data: unknown) => { validate(): void }>)[obj.kind];
  if (!Model) return [`${mod} exports no ${obj.kind}`];
  try {
    new Model(obj).validate();
    return [];
  } catch (err) {
    const details = (err as { details?: Array<{ instancePath: string; message?: string }> }).details;
    return details ? details.map((d) => `${d.instancePath || '/'} ${d.message ?? 'is invalid'}`) : [(err as Error).message];
  }
}

/**
 * Fields the Kubernetes API does not know, per object label: each object becomes
 * `const x: IKind = <its JSON>` in one in-memory TypeScript file, type-checked against the
 * kubernetes-models interfaces. Also reports wrong types the schema check may word differently.
 */
export function unknownFieldErrors(objects: Array<{ label: string; obj: KubeObject }>): Map<string, string[]> {
  const virtual = path.join(ROOT, 'test', 'deploy', '__manifests__.ts');
  const lines: string[] = [];
  const owner: string[] = [];
  const add = (line: string, label: string): void => {
    for (const l of line.split('\n')) {
      lines.push(l);
      owner.push(label);
    }
  };
  objects.forEach(({ label, obj }, i) => {
    add(`import type { I${obj.kind} as T${i} } from '${modelModule(obj.apiVersion, obj.kind)}';`, label);
    add(`export const m${i}: T${i} = ${JSON.stringify(obj, null, 1)};`, label);
  });
  const source = lines.join('\n');
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.CommonJS,
    moduleResolution: ts.ModuleResolutionKind.Node10,
    types: [],
    lib: ['lib.es2022.d.ts'],
    skipLibCheck: true,
  };
  const host = ts.createCompilerHost(options);
  const { getSourceFile, fileExists, readFile } = host;
  host.getSourceFile = (name, lang, ...rest) => (path.resolve(name) === virtual ? ts.createSourceFile(name, source, lang) : getSourceFile.call(host, name, lang, ...rest));
  host.fileExists = (name) => path.resolve(name) === virtual || fileExists.call(host, name);
  host.readFile = (name) => (path.resolve(name) === virtual ? source : readFile.call(host, name));
  const program = ts.createProgram([virtual], options, host);
  const file = program.getSourceFile(virtual)!;
  const out = new Map<string, string[]>(objects.map(({ label }) => [label, []]));
  for (const d of [...program.getSyntacticDiagnostics(file), ...program.getSemanticDiagnostics(file)]) {
    const line = d.start === undefined ? 0 : file.getLineAndCharacterOfPosition(d.start).line;
    out.get(owner[line] ?? objects[0]!.label)!.push(ts.flattenDiagnosticMessageText(d.messageText, ' '));
  }
  return out;
}

// ---- the pod spec, read as the kubelet would ----

export interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: {
    fieldRef?: { fieldPath: string };
    secretKeyRef?: { name: string; key: string };
    configMapKeyRef?: { name: string; key: string };
  };
}

export interface Probe {
  httpGet?: { host?: string; port: number | string; path?: string };
  tcpSocket?: { host?: string; port: number | string };
  exec?: { command: string[] };
}

export interface Container {
  name: string;
  image: string;
  args?: string[];
  command?: string[];
  env?: EnvVar[];
  ports?: Array<{ name?: string; containerPort: number; protocol?: string }>;
  startupProbe?: Probe;
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  volumeMounts?: Array<{ name: string; mountPath: string; subPath?: string }>;
  restartPolicy?: string;
  securityContext?: { runAsUser?: number; runAsGroup?: number };
}

export interface Volume {
  name: string;
  configMap?: { name: string; items?: Array<{ key: string; path: string }> };
  secret?: { secretName: string; items?: Array<{ key: string; path: string }> };
  emptyDir?: unknown;
}

export interface PodSpec {
  securityContext?: { runAsUser?: number; runAsGroup?: number; fsGroup?: number };
  hostNetwork?: boolean;
  dnsPolicy?: string;
  nodeSelector?: Record<string, string>;
  tolerations?: Array<{ key?: string; operator?: string; effect?: string }>;
  initContainers?: Container[];
  containers: Container[];
  volumes?: Volume[];
}

export interface Workload {
  name: string;
  kind: string;
  selector: Record<string, string>;
  labels: Record<string, string>;
  pod: PodSpec;
  spec: Record<string, unknown>;
}

/** DaemonSets, StatefulSets and Deployments, with their pod templates. */
export function workloads(manifests: Manifest[]): Workload[] {
  return manifests
    .filter((m) => ['DaemonSet', 'StatefulSet', 'Deployment'].includes(m.obj.kind))
    .map((m) => {
      const spec = m.obj.spec as { selector: { matchLabels: Record<string, string> }; template: { metadata: { labels: Record<string, string> }; spec: PodSpec } };
      return { name: m.obj.metadata.name, kind: m.obj.kind, selector: spec.selector.matchLabels, labels: spec.template.metadata.labels, pod: spec.template.spec, spec: spec as unknown as Record<string, unknown> };
    });
}

/** Every container of a pod, init (and native sidecar) containers first. */
export const allContainers = (pod: PodSpec): Container[] => [...(pod.initContainers ?? []), ...pod.containers];

/** The data of a Secret or ConfigMap, base64 `data` decoded and `stringData` merged over it as the API server does. */
export function objectData(obj: KubeObject): Record<string, string> {
  const data = Object.fromEntries(Object.entries((obj.data as Record<string, string> | undefined) ?? {}).map(([k, v]) => [k, obj.kind === 'Secret' ? Buffer.from(v, 'base64').toString('utf8') : v]));
  return { ...data, ...((obj.stringData as Record<string, string> | undefined) ?? {}) };
}

/** Expands $(VAR) from what is defined so far; $$(VAR) stays literal; an undefined $(VAR) stays as written (Kubernetes' rules). */
export function expand(s: string, vars: Record<string, string>): string {
  return s.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (all, name: string | undefined) => (name === undefined ? '$' : (vars[name] ?? all)));
}

/**
 * A container's environment as its process sees it: literal values with $(VAR) expanded in
 * order, fieldRefs from `fields`, secretKeyRef/configMapKeyRef from the given objects. A reference
 * to something missing throws, as the kubelet refuses to start such a container.
 */
export function resolveEnv(c: Container, fields: Record<string, string>, objects: KubeObject[]): Record<string, string> {
  const env: Record<string, string> = {};
  const lookup = (kind: string, ref: { name: string; key: string }): string => {
    const o = objects.find((x) => x.kind === kind && x.metadata.name === ref.name);
    const v = o ? objectData(o)[ref.key] : undefined;
    if (v === undefined) throw new Error(`${c.name}: env refers to ${kind} ${ref.name} key ${ref.key}, which does not exist`);
    return v;
  };
  for (const e of c.env ?? []) {
    if (e.value !== undefined) env[e.name] = expand(e.value, env);
    else if (e.valueFrom?.fieldRef) {
      const v = fields[e.valueFrom.fieldRef.fieldPath];
      if (v === undefined) throw new Error(`${c.name}: no test value for fieldRef ${e.valueFrom.fieldRef.fieldPath}`);
      env[e.name] = v;
    } else if (e.valueFrom?.secretKeyRef) env[e.name] = lookup('Secret', e.valueFrom.secretKeyRef);
    else if (e.valueFrom?.configMapKeyRef) env[e.name] = lookup('ConfigMap', e.valueFrom.configMapKeyRef);
    else throw new Error(`${c.name}: env ${e.name} has neither a value nor a reference this test knows`);
  }
  return env;
}

/** The file a container sees at `file`, from a ConfigMap or Secret volume mounted over it; null when none is. */
export function mountedFile(c: Container, pod: PodSpec, file: string, objects: KubeObject[]): string | null {
  for (const m of c.volumeMounts ?? []) {
    const vol = pod.volumes?.find((v) => v.name === m.name);
    const inMount = m.subPath ? (file === m.mountPath ? m.subPath : null) : file.startsWith(`${m.mountPath}/`) ? file.slice(m.mountPath.length + 1) : null;
    if (!vol || inMount === null) continue;
    const src = vol.configMap ? { kind: 'ConfigMap', name: vol.configMap.name, items: vol.configMap.items } : vol.secret ? { kind: 'Secret', name: vol.secret.secretName, items: vol.secret.items } : null;
    if (!src) continue;
    const key = src.items ? src.items.find((i) => i.path === inMount)?.key : inMount;
    const o = objects.find((x) => x.kind === src.kind && x.metadata.name === src.name);
    const v = key !== undefined && o ? objectData(o)[key] : undefined;
    if (v !== undefined) return v;
  }
  return null;
}

/** "127.0.0.1:9465" for an httpGet/tcpSocket probe with a numeric port. */
export function probeTarget(p: Probe | undefined): string | null {
  const t = p?.httpGet ?? p?.tcpSocket;
  return t ? `${t.host ?? '(pod IP)'}:${t.port}` : null;
}

/** The value after `--flag` in an argument list. */
export function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i === -1 ? undefined : args[i + 1];
}
