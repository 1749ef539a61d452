// Public value types. Money is always `bigint` nanos (1e-9 of the currency) on the way out;
// on the way in it is a `MoneyInput`: bigint nanos, a decimal string ("12.50"), or a finite
// number taken through its shortest decimal text (String(0.1) === "0.1", so 0.1 is 0.1).

/** bigint = nanos; string = exact decimal currency units ("0.000000150"); number = String(x). */
export type MoneyInput = bigint | string | number;
/** A whole count: a safe-integer number or a bigint. */
export type CountInput = number | bigint;
/** A scope string (`global`, `tenant:acme`, `user:*` for kind-wide limits). */
export type ScopeName = string;
/** The scopes a request is charged to; `global` is always added. */
export type SubjectInput = ScopeName | readonly ScopeName[];
export type Metric = 'cost' | 'tokens' | 'requests';
/** `minute` `hour` `day` `week` `month` `total` `rolling:<duration>` `custom:<start>/<end>` */
export type WindowName = string;

/**
 * The provider's processing tier for a call (OpenAI `service_tier`, Anthropic
 * `usage.service_tier`); it selects the tier's prices. As input, 'default' (OpenAI's name for
 * standard) is accepted too.
 */
export type ServiceTier = 'standard' | 'batch' | 'flex' | 'priority';

export interface UsageInput {
  inputTokens?: CountInput;
  cacheReadTokens?: CountInput;
  cacheWriteTokens?: CountInput;
  cacheWrite1hTokens?: CountInput;
  outputTokens?: CountInput;
  reasoningTokens?: CountInput;
  /** Part of inputTokens that is audio and not a cache read/write; priced at the audio input price. */
  audioInputTokens?: CountInput;
  /** Part of outputTokens that is audio (not reasoning); priced at the audio output price. */
  audioOutputTokens?: CountInput;
  images?: CountInput;
  audioMs?: CountInput;
  requests?: CountInput;
  complete?: boolean;
  /** The tier that served the call; priced at its prices (wins over CostOptions.tier). Default standard. */
  serviceTier?: ServiceTier | 'default';
}

/** Normalised usage; totals include their parts (inputTokens includes cache reads/writes and audio input; outputTokens reasoning and audio output). */
export interface Usage {
  inputTokens: number;
  cacheReadTokens: number;
  cacheWriteTokens: number;
  cacheWrite1hTokens: number;
  outputTokens: number;
  reasoningTokens: number;
  /** Part of inputTokens: audio, not a cache read or write (priced at the audio input price). */
  audioInputTokens: number;
  /** Part of outputTokens: audio, not reasoning (priced at the audio output price). */
  audioOutputTokens: number;
  images: number;
  audioMs: number;
  requests: number;
  /** false when the numbers are an estimate (e.g. a stream cut before its usage arrived). */
  complete: boolean;
  /** The tier that served the call (the provider's answer; 'standard' when it named none). */
  serviceTier: ServiceTier;
}

/** What to hold or check: money, or a model + expected usage that the pricing engine prices. */
export type EstimateInput =
  | MoneyInput
  | { cost?: MoneyInput; tokens?: CountInput; model?: string; usage?: UsageInput };

/** The actual charge at commit/record: money, or a model + actual usage. */
export type ChargeInput =
  | MoneyInput
  | { cost?: MoneyInput; tokens?: CountInput; model?: string; usage?: UsageInput; provider?: string };

export interface RequestOptions {
  /** The idempotency key; generated when absent. */
  requestId?: string;
  /** Hold = estimate x buffer (1.0 .. 100; 1.2 is "conservative"). */
  buffer?: number | string;
  ttlMs?: CountInput;
  provider?: string;
  /** Recorded in the ledger. Never put prompt text here. */
  metadata?: Record<string, string | number | boolean>;
  /** For grants and adjustments. */
  reason?: string;
}

export interface LimitSpec {
  scope: ScopeName;
  window: WindowName;
  /** Money for `cost` (default), a count for `tokens` and `requests`. */
  amount: MoneyInput;
  metric?: Metric;
  /** Alert thresholds in percent, e.g. [50, 80, 100]. */
  alerts?: number[];
}

export interface Limit {
  scope: string;
  window: string;
  metric: Metric;
  /** nanos for cost, a count for tokens/requests */
  amount: bigint;
  alerts: number[];
  key: string;
}

export interface Denial {
  reason: 'limit_exceeded' | 'store_unavailable' | 'not_held' | 'none';
  scope: string;
  window: string;
  metric: Metric;
  /** In the metric's unit: nanos for cost, else a count. */
  limit: bigint;
  spent: bigint;
  held: bigint;
  remaining: bigint;
  requested: bigint;
  resetsAt: Date | null;
  /** true: a hard cap (HTTP 402); false: held by in-flight requests or a rate limit (HTTP 429). */
  hard: boolean;
  message: string;
}

/** A hold. Pass it back to consume/commit/release (or use its requestId from another process). */
export interface Reservation {
  readonly requestId: string;
  readonly subject: string[];
  /** nanos held when reserved */
  readonly held: bigint;
  readonly heldTokens: number;
  readonly expiresAt: Date;
  readonly model: string;
  /** @internal native streaming state */
  readonly handle: unknown;
}

/**
 * The answer of `reserve` (`Decision<Reservation>`: an allowed decision carries its hold) or of
 * `check` (`Decision<null>`: nothing is held). Narrow on `allowed`: `if (!d.allowed) ...;` then
 * `d.reservation` is the `Reservation` (after `reserve`) and `d.denial` is null.
 */
export type Decision<R extends Reservation | null = Reservation | null> =
  | {
      allowed: true;
      replayed: boolean;
      failOpen: boolean;
      estimate: bigint;
      reservation: R;
      denial: null;
    }
  | {
      allowed: false;
      replayed: boolean;
      failOpen: false;
      estimate: bigint;
      reservation: null;
      denial: Denial;
    };

export interface ConsumeResult {
  verdict: 'continue' | 'stop';
  /** running total of the stream (nanos) */
  consumed: bigint;
  /** current hold (nanos) */
  held: bigint;
  denial: Denial | null;
}

export interface LineItem {
  name: string;
  quantity: number;
  /** exact decimal text, currency units per unit */
  unitPrice: string;
  amount: bigint;
}

export interface Receipt {
  requestId: string;
  charged: bigint;
  released: bigint;
  tokens: number;
  overHold: boolean;
  overLimit: boolean;
  overLimitScopes: string[];
  afterExpiry: boolean;
  replayed: boolean;
  model: string;
  priceVersion: string;
  items: LineItem[];
}

export interface LimitStatus {
  key: string;
  scope: string;
  window: string;
  metric: Metric;
  limit: bigint;
  granted: bigint;
  spent: bigint;
  held: bigint;
  remaining: bigint;
  windowStart: Date;
  resetsAt: Date | null;
}

export interface Alert {
  scope: string;
  window: string;
  limitKey: string;
  metric: Metric;
  thresholdPct: number;
  limit: bigint;
  spent: bigint;
  windowStart: Date;
  requestId: string;
}

export interface Amounts {
  cost: bigint;
  tokens: number;
  requests: number;
}

export type EventType = 'reserve' | 'consume' | 'commit' | 'release' | 'expire' | 'record' | 'grant' | 'adjust' | 'deny';

export interface LedgerEvent {
  seq: number;
  time: Date;
  type: EventType;
  requestId: string;
  subject: string[];
  model: string;
  provider: string;
  priceVersion: string;
  usage: Usage | null;
  spent: Amounts;
  held: Amounts;
  granted: Amounts;
  windows: string[];
  /** JSON object text */
  metadata: string;
  prevHash: string;
  hash: string;
}

export interface LedgerQuery {
  from?: Date | number;
  to?: Date | number;
  scope?: string;
  requestId?: string;
  type?: EventType;
  afterSeq?: CountInput;
  limit?: CountInput;
}

export interface AggregateRow {
  scope: string;
  model: string;
  day: string;
  spent: bigint;
  tokens: number;
  requests: number;
  events: number;
}

export interface VerifyReport {
  ok: boolean;
  events: number;
  windowsChecked: number;
  chainOk: boolean;
  problems: string[];
}
