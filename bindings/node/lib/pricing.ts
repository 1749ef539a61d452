// PricingEngine: exact costs from price tables (synchronous: pure computation).
import { jsonText } from './errors';
import { F64, I64, native, putUsage, tierCode, type NativePricingHandle } from './native';
import type { CountInput, LineItem, MoneyInput, ServiceTier, UsageInput } from './types';

/** The common shapes of cost(): plain counts and options (see NativePricing::CostF). */
function fastArgs(u: UsageInput, o: CostOptions | undefined): boolean {
  // Every user value is read before the first slot is written (see putUsage).
  let t = NaN;
  let a = NaN;
  let k = NaN;
  if (o !== undefined && o !== null) {
    if (typeof o !== 'object' || Array.isArray(o)) return false;
    const { tier, at, applyMarkup } = o;
    t = tierCode(tier);
    if (t < 0) return false;
    if (at !== undefined && at !== null) {
      if (typeof at === 'number' && Number.isSafeInteger(at)) a = at;
      else if (at instanceof Date && Number.isFinite(at.getTime())) a = at.getTime();
      else return false;
    }
    if (applyMarkup !== undefined && applyMarkup !== null) {
      if (typeof applyMarkup !== 'boolean') return false;
      k = applyMarkup ? 1 : 0;
    }
  }
  if (!putUsage(u)) return false;
  F64[11] = t;
  F64[12] = a;
  F64[13] = k;
  return true;
}

export type { ServiceTier } from './types';

export interface CostOptions {
  /** The tier to price at when the usage names none (its serviceTier absent or standard). */
  tier?: ServiceTier | 'default';
  /** Time of use (rules in force then); default now. */
  at?: Date | number;
  applyMarkup?: boolean;
}

/** Prices in currency units per unit, as exact decimal text ("0.0000025", "2.5e-6"). */
export interface ModelPrice {
  provider?: string;
  input?: string | number;
  output?: string | number;
  cacheRead?: string | number;
  cacheWrite?: string | number;
  cacheWrite1h?: string | number;
  reasoning?: string | number;
  perRequest?: string | number;
  perImage?: string | number;
  perAudioSecond?: string | number;
  maxOutputTokens?: CountInput;
  /** More prices in the compact syntax, e.g. "in@200000=6e-6 out/batch=5e-6". */
  extra?: string;
}

export interface MarkupRule {
  scope?: 'all' | 'provider' | 'pattern' | 'model';
  match?: string;
  /** decimal percent: "20" = +20%, "-12.5" */
  percent?: string | number;
  /** added per billable request */
  fixed?: MoneyInput;
  effectiveFrom?: Date | number;
}

export interface LoadReport {
  tableVersion: string;
  loaded: number;
  skipped: number;
  unpriceable: { model: string; reason: string }[];
}

export interface ResolvedModel {
  name: string;
  provider: string;
  mode: string;
  maxOutputTokens: number;
}

export interface PriceQuote {
  cost: bigint;
  items: LineItem[];
  model: string;
  provider: string;
  priceVersion: string;
}

/**
 * Exact prices per model (LiteLLM JSON, the compact format, the bundled table, overrides,
 * markups). Thread-safe in C++; every method here is synchronous.
 */
export class PricingEngine {
  /** @internal */
  readonly native: NativePricingHandle;

  /** An empty engine; `PricingEngine.bundled()` for the default table. */
  constructor() {
    this.native = new native.NativePricing(false);
  }
  /** A new engine loaded with the bundled default table. */
  static bundled(): PricingEngine {
    const e = Object.create(PricingEngine.prototype) as { native: NativePricingHandle };
    e.native = new native.NativePricing(true);
    return e as unknown as PricingEngine;
  }
  static bundledTableInfo(): { date: string; source: string; entries: number } {
    return native.NativePricing.bundledTableInfo();
  }
  /** Loads LiteLLM's model_prices_and_context_window.json (text or parsed object). */
  loadLitellm(json: string | object): LoadReport {
    return this.native.loadLitellm(typeof json === 'string' ? json : jsonText(json, 'price table'));
  }
  loadLitellmFile(path: string): LoadReport {
    return this.native.loadLitellmFile(path);
  }
  loadCompact(text: string): LoadReport {
    return this.native.loadCompact(text);
  }
  loadCompactFile(path: string): LoadReport {
    return this.native.loadCompactFile(path);
  }
  loadBundled(): LoadReport {
    return this.native.loadBundled();
  }
  toCompact(): string {
    return this.native.toCompact();
  }
  setPrice(model: string, price: ModelPrice, effectiveFrom?: Date | number): void {
    this.native.setPrice(model, price, effectiveFrom);
  }
  addAlias(alias: string, target: string): void {
    this.native.addAlias(alias, target);
  }
  addMarkup(rule: MarkupRule): void {
    this.native.addMarkup(rule);
  }
  /** Price used for names that resolve to nothing; null removes it. */
  setFallback(price: ModelPrice | null): void {
    this.native.setFallback(price);
  }
  /** Throws UnknownModelError. */
  resolve(model: string, at?: Date | number): ResolvedModel {
    return this.native.resolve(model, at);
  }
  knows(model: string): boolean {
    return this.native.knows(model);
  }
  /** Exact cost in nanos (rounded up per line item). */
  cost(model: string, usage: UsageInput, options?: CostOptions): bigint {
    if (typeof model === 'string' && fastArgs(usage, options)) {
      this.native.costF(model);
      return I64[0];
    }
    return this.native.cost(model, usage, options);
  }
  quote(model: string, usage: UsageInput, options?: CostOptions): PriceQuote {
    return this.native.quote(model, usage, options);
  }
  /** Pre-flight cost of `inputTokens` in and `maxOutputTokens` out (default: the model's maximum). */
  estimate(model: string, inputTokens: CountInput, maxOutputTokens?: CountInput, options?: CostOptions): bigint {
    return this.native.estimate(model, inputTokens, maxOutputTokens, options);
  }
  priceVersion(at?: Date | number): string {
    return this.native.priceVersion(at);
  }
  get size(): number {
    return this.native.size();
  }
}
