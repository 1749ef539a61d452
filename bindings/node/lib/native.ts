// The native addon (build/Release/budget.node), loaded once. Internal: the public API is
// the TypeScript layer (index.ts).
import * as path from 'node:path';

/* eslint-disable @typescript-eslint/no-explicit-any */
export interface NativeAddon {
  setErrorFactory(factory: (code: string, message: string) => Error): void;
  parseMoney(v: unknown): bigint;
  formatMoney(v: unknown): string;
  parseScope(v: unknown): string;
  parseWindow(v: unknown): string;
  estimateTokens(text: unknown): number;
  /** Benchmark baseline: feeds `text` n times to a C++ StreamUsage; elapsed ns. */
  benchFeedEvent(format: string, text: string, n: number): number;
  usageFromResponse(format: string, body: unknown): any;
  /** The service tier names the core accepts ('default' included) and their codes. */
  serviceTiers: Record<string, number>;
  version: string;
  napiVersion: number;
  withRedis: boolean;
  /** The scratch buffer of the synchronous fast paths (see src/common.hpp, EnvData). */
  scratch: ArrayBuffer;
  NativeManager: new (options: unknown) => NativeManagerHandle;
  openManager(options: unknown): Promise<NativeManagerHandle>;
  NativeClock: new (start?: unknown) => NativeClockHandle;
  NativePricing: (new (bundled: boolean) => NativePricingHandle) & {
    bundledTableInfo(): { date: string; source: string; entries: number };
  };
  NativeStreamUsage: new (format: string, inputTokensEstimate?: unknown) => NativeStreamUsageHandle;
}

export interface NativeManagerHandle {
  reserve(subject: unknown, estimate: unknown, options?: unknown): Promise<any>;
  check(subject: unknown, estimate: unknown): Promise<any>;
  consume(res: unknown, amount: unknown, tokens?: unknown): Promise<any>;
  commit(res: unknown, charge: unknown): Promise<any>;
  release(res: unknown): Promise<any>;
  record(subject: unknown, charge: unknown, options?: unknown): Promise<any>;
  grant(scope: unknown, amount: unknown, options?: unknown): Promise<void>;
  adjust(subject: unknown, delta: unknown, options?: unknown): Promise<void>;
  status(scope?: unknown): Promise<any[]>;
  setLimit(limit: unknown): Promise<void>;
  removeLimit(scope: unknown, metric: unknown, window: unknown): Promise<boolean>;
  limits(): Promise<any[]>;
  expireHolds(): Promise<number>;
  events(query?: unknown): Promise<any[]>;
  exportJsonl(query?: unknown): Promise<string>;
  exportCsv(query?: unknown): Promise<string>;
  aggregate(query?: unknown, groupBy?: unknown): Promise<any[]>;
  verify(): Promise<any>;
  metricsText(): string;
  now(): Date;
  info(): { store: string; currency: string; offload: boolean; failOpen: boolean; defaultTtlMs: number };
  onAlert(cb: ((a: any) => void) | null): void;
  onDenial(cb: ((d: any, subject: string[]) => void) | null): void;
  close(): void;
  benchLoop(subject: unknown, estimate: unknown, n: number, prefix?: string, charge?: unknown): number;
  // Inline execution (offload false): synchronous, scalars in the scratch buffer.
  // `model` set: the estimate / charge is { model, usage (in scratch slots 0-10), provider }.
  reserveI(subject: unknown, estimate: unknown, requestId: unknown, options: unknown, model?: string): unknown;
  checkI(subject: unknown, estimate: unknown, model?: string): unknown;
  consumeI(res: unknown, handle: unknown, amount: unknown, tokens: unknown): any;
  commitI(res: unknown, handle: unknown, charge: unknown, model?: string, provider?: unknown): string;
  releaseI(res: unknown, handle: unknown): string;
  recordI(subject: unknown, charge: unknown, requestId: unknown, options: unknown, model?: string, provider?: unknown): string;
  reservationExtras(): [string, string[], string];
  receiptExtras(): [string, string, string[], any[]];
  internedFrom(from: number): string[];
}

export interface NativeClockHandle {
  now(): Date;
  set(t: unknown): void;
  advance(ms: unknown): Date;
}

export interface NativePricingHandle {
  loadLitellm(json: string): any;
  loadLitellmFile(path: string): any;
  loadCompact(text: string): any;
  loadCompactFile(path: string): any;
  loadBundled(): any;
  toCompact(): string;
  setPrice(model: unknown, price: unknown, effectiveFrom?: unknown): void;
  addAlias(alias: unknown, target: unknown): void;
  addMarkup(rule: unknown): void;
  setFallback(price: unknown): void;
  resolve(model: unknown, at?: unknown): any;
  knows(model: unknown): boolean;
  cost(model: unknown, usage: unknown, options?: unknown): bigint;
  /** cost() fast path: the usage in scratch slots 0-10, the options in 11-13, the cost in slot 0. */
  costF(model: string): void;
  quote(model: unknown, usage: unknown, options?: unknown): any;
  estimate(model: unknown, inputTokens: unknown, maxOutputTokens?: unknown, options?: unknown): bigint;
  priceVersion(at?: unknown): string;
  size(): number;
  /** Benchmark baseline: n cost(model, usage) calls in C++; elapsed ns. */
  benchCost(model: string, usage: unknown, n: number): number;
}

export interface NativeStreamUsageHandle {
  feed(bytes: unknown): void;
  feedEvent(json: unknown): void;
  finish(): any;
  usage(): any;
  hasFinalUsage(): boolean;
  estimatedOutputTokens(): number;
  events(): number;
}

function load(): NativeAddon {
  const root = path.join(__dirname, '..');
  const candidates = [
    process.env.LIBBUDGET_NATIVE,
    path.join(root, 'build', 'Release', 'budget.node'),
    path.join(root, 'build', 'Debug', 'budget.node'),
  ].filter((p): p is string => typeof p === 'string' && p.length > 0);
  let lastError: unknown;
  for (const p of candidates) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      return require(p) as NativeAddon;
    } catch (e) {
      lastError = e;
      if ((e as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw e;
    }
  }
  throw new Error(
    `libbudget: the native addon is not built (looked in ${candidates.join(', ')}). ` +
      `Run \`npm run build\` in the package directory. Cause: ${String(lastError)}`,
  );
}

export const native: NativeAddon = load();
/** Views of the scratch buffer: 8-byte slots read as doubles (flags, counts, ms) or int64 nanos. */
export const F64 = new Float64Array(native.scratch);
export const I64 = new BigInt64Array(native.scratch);
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
/** Service tier name -> code (budget::ServiceTier), as the core names them; no prototype. */
export const TIERS: Readonly<Record<string, number>> = Object.freeze(Object.assign(Object.create(null), native.serviceTiers));

/** A service tier's code for the scratch buffer: NaN = absent, -1 = needs the general path. */
export function tierCode(x: unknown): number {
  if (x === undefined || x === null) return NaN;
  if (typeof x !== 'string') return -1;
  const t = TIERS[x];
  return t === undefined ? -1 : t;
}

/** A usage count for the scratch buffer: NaN = absent, -1 = needs the general path. */
function num(x: unknown): number {
  if (x === undefined || x === null) return NaN;
  if (typeof x === 'number') return Number.isSafeInteger(x) && x >= 0 ? x : -1;
  if (typeof x === 'bigint') return x >= 0n && x <= MAX_SAFE ? Number(x) : -1;
  return -1;
}

/**
 * Puts a usage object in scratch slots 0-10 (the counts in the field order of budget::Usage,
 * then `complete`, then the service tier's code; NaN = absent) when every count is absent or a
 * non-negative safe integer (number or bigint), `complete` absent or boolean, `serviceTier`
 * absent or a tier name, and no other field; false otherwise (the
 * general path then validates it and throws the precise error). See usage_from_scratch in src/convert.cpp.
 * The audio input / output tokens go to slots 14 and 15 (slots 11-13 carry cost()'s options).
 * All fields are read before the first slot is written: a getter that calls back into
 * libbudget cannot clobber a slot already written.
 */
export function putUsage(u: unknown): boolean {
  if (typeof u !== 'object' || u === null || Array.isArray(u)) return false;
  const v = u as Record<string, unknown>;
  const c = v.complete;
  const a10 = tierCode(v.serviceTier);
  const a0 = num(v.inputTokens);
  const a1 = num(v.cacheReadTokens);
  const a2 = num(v.cacheWriteTokens);
  const a3 = num(v.cacheWrite1hTokens);
  const a4 = num(v.outputTokens);
  const a5 = num(v.reasoningTokens);
  const a6 = num(v.images);
  const a7 = num(v.audioMs);
  const a8 = num(v.requests);
  const a11 = num(v.audioInputTokens);
  const a12 = num(v.audioOutputTokens);
  if (a0 < 0 || a1 < 0 || a2 < 0 || a3 < 0 || a4 < 0 || a5 < 0 || a6 < 0 || a7 < 0 || a8 < 0 || a10 < 0 || a11 < 0 || a12 < 0) return false;
  let a9: number;
  if (c === undefined || c === null) a9 = NaN;
  else if (typeof c === 'boolean') a9 = c ? 1 : 0;
  else return false;
  // Any other field (a misspelt one, a provider's raw { prompt_tokens }), or a known one set to
  // null/undefined: the general path, which rejects unknown fields.
  let keys = 0;
  for (const _ in v) keys++;
  // eslint-disable-next-line no-self-compare
  const known = +(a0 === a0) + +(a1 === a1) + +(a2 === a2) + +(a3 === a3) + +(a4 === a4) + +(a5 === a5) + +(a6 === a6) + +(a7 === a7) + +(a8 === a8) + +(a9 === a9) + +(a10 === a10) + +(a11 === a11) + +(a12 === a12);
  if (keys !== known) return false;
  F64[0] = a0;
  F64[1] = a1;
  F64[2] = a2;
  F64[3] = a3;
  F64[4] = a4;
  F64[5] = a5;
  F64[6] = a6;
  F64[7] = a7;
  F64[8] = a8;
  F64[9] = a9;
  F64[10] = a10;
  F64[14] = a11;
  F64[15] = a12;
  return true;
}

/** A count slot pair: the number when safe, else the exact bigint of the next slot. */
export function countAt(i: number): number {
  const x = F64[i];
  // eslint-disable-next-line no-self-compare
  return (x === x ? x : I64[i + 1]) as number;
}
