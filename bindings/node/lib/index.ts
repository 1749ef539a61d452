// libbudget — real-time AI spend budgets for Node.js.
import { makeError } from './errors';
import { native } from './native';

native.setErrorFactory(makeError);

export * from './errors';
export * from './types';
export { toNanos, formatMoney, NANOS_PER_UNIT } from './money';
export { BudgetManager, ManualClock, type BudgetManagerOptions, type StoreOptions } from './manager';
export {
  PricingEngine,
  type CostOptions,
  type LoadReport,
  type MarkupRule,
  type ModelPrice,
  type PriceQuote,
  type ResolvedModel,
} from './pricing';
export { estimateTokens, usageFromResponse, StreamUsage, type ApiFormat } from './providers';
export {
  GuardedStream,
  guardStream,
  guardOpenAIChatStream,
  guardOpenAIResponsesStream,
  guardAnthropicStream,
  type AbortableStream,
  type GuardOptions,
  type GuardOutcome,
  type StreamCall,
} from './guards';

/** The libbudget core version compiled into the addon. */
export const version: string = native.version;
/** The Node-API version the addon is built for. */
export const napiVersion: number = native.napiVersion;
/** Whether the addon was built with the Redis store. */
export const withRedis: boolean = native.withRedis;
