// Stream guards for provider SDK streams (openai-node, @anthropic-ai/sdk) — no dependency on
// the SDKs: any async iterable of the provider's parsed events works.
//
//   const stream = await guardOpenAIChatStream(manager, { subject: ['user:alice'] }, params,
//     (p, { signal }) => client.chat.completions.create(p, { signal }));
//   for await (const chunk of stream) { ... }   // throws BudgetExceededError on Stop
//   stream.receipt                              // after the end
//
// Reserve before the call (a denial throws BudgetExceededError; the call is not made), ask
// for usage in the stream, consume per chunk (the priced running estimate), abort the
// stream the moment the answer is Stop, commit with the provider's usage at the end. On an
// error, `break` or abort: release when nothing was streamed, else commit the estimate so
// far marked incomplete (those tokens were generated and the provider bills them).
import { BudgetError, InvalidArgumentError } from './errors';
import { denialError, type BudgetManager } from './manager';
import type { PricingEngine } from './pricing';
import { estimateTokens, StreamUsage, type ApiFormat } from './providers';
import type { MoneyInput, Receipt, RequestOptions, Reservation, ServiceTier, SubjectInput, Usage } from './types';

export interface GuardOptions extends RequestOptions {
  subject: SubjectInput;
  /** The model to price (default: params.model). */
  model?: string;
  /** Money to hold (default: the priced estimate of the prompt + max output tokens). */
  estimate?: MoneyInput;
  /** Input tokens to assume (default: estimated from the request's messages). */
  inputTokens?: number;
  /** Output tokens to hold for (default: params.max_tokens / max_completion_tokens, else the model's maximum, else 4096). */
  maxOutputTokens?: number;
  /** Consume at most every N events (default 1: every event that adds cost). */
  consumeEvery?: number;
}

/** What the SDKs' stream objects offer (openai `Stream`, Anthropic `Stream` / `MessageStream`). */
export interface AbortableStream<T> extends AsyncIterable<T> {
  controller?: AbortController;
  abort?: () => void;
}

export type StreamCall<P, T> = (params: P, init: { signal: AbortSignal }) => PromiseLike<AsyncIterable<T>> | AsyncIterable<T>;

export type GuardOutcome = 'pending' | 'completed' | 'stopped' | 'cancelled' | 'failed';

// A stream dropped before it was settled — never read (an error in the caller's code between
// the call and the loop), or read part-way through an iterator that was then dropped without
// return() — is settled when the collector frees it, rather than holding its budget until the
// TTL: its call is aborted; what it streamed is committed as the estimate marked incomplete
// (those tokens are billed by the provider), else the hold is released. A stream being read
// is not collectable (its pending read keeps it alive), so this never races the loop. The held
// value must not refer to the stream (that would keep it alive).
interface Dropped {
  manager: BudgetManager;
  reservation: Reservation;
  controller: AbortController;
  accumulator: StreamUsage;
  model: string;
  provider: string;
}
const dropped = new FinalizationRegistry<Dropped>((d) => {
  if (!d.controller.signal.aborted) d.controller.abort();
  // A store down: the TTL ends the hold (no caller to tell).
  if (d.accumulator.events === 0) {
    d.manager.release(d.reservation).catch(() => undefined);
    return;
  }
  const usage = d.accumulator.usage;
  d.manager.commit(d.reservation, {
    model: d.model,
    usage: d.accumulator.hasFinalUsage ? usage : { ...usage, complete: false },
    provider: d.provider || undefined,
  }).catch(() => undefined);
});

/** An async iterable over the provider's events, metered against the budget. Iterate once. */
export class GuardedStream<T> implements AsyncIterable<T> {
  /** The hold (request id = idempotency key). */
  readonly reservation: Reservation;
  /** The abort controller whose signal was passed to the SDK call. */
  readonly controller: AbortController;
  /** Set when the stream was settled (committed or released). */
  receipt: Receipt | null = null;
  outcome: GuardOutcome = 'pending';
  private readonly accumulator: StreamUsage;
  private consumedNanos = 0n;
  private consumedTokens = 0;
  private sinceConsume = 0;
  private iterated = false;

  /** @internal */
  constructor(
    private readonly manager: BudgetManager,
    private readonly pricing: PricingEngine,
    private readonly model: string,
    reservation: Reservation,
    controller: AbortController,
    private readonly source: AbortableStream<T>,
    format: ApiFormat,
    inputTokens: number,
    private readonly consumeEvery: number,
    private readonly provider: string,
  ) {
    this.reservation = reservation;
    this.controller = controller;
    this.accumulator = new StreamUsage(format, { inputTokensEstimate: inputTokens });
    dropped.register(this, { manager, reservation, controller, accumulator: this.accumulator, model, provider }, this);
  }

  /** The usage so far: the provider's numbers once seen, else the running estimate. */
  get usage(): Usage {
    return this.accumulator.usage;
  }

  /**
   * Stops the provider stream; the guard then settles as cancelled (commits what was streamed,
   * else releases the hold), at once when the stream was never read.
   */
  abort(): void {
    this.abortSource();
    void this.settleUnread();
  }

  /**
   * A stream that will not be read (aborted, or its iterator closed before the first read):
   * closes the call and releases the hold now rather than at its TTL.
   */
  private settleUnread(): Promise<void> {
    if (this.iterated) return Promise.resolve();
    this.iterated = true;
    this.outcome = 'cancelled';
    this.abortSource();
    // A release that fails (the store is down) leaves the hold to its TTL; no caller to tell.
    return this.settle().catch(() => undefined);
  }

  private abortSource(): void {
    if (!this.controller.signal.aborted) this.controller.abort();
    try {
      this.source.controller?.abort();
    } catch {
      /* already aborted */
    }
    try {
      if (typeof this.source.abort === 'function') this.source.abort();
    } catch {
      /* already aborted */
    }
  }

  /**
   * Aborted through `abort()` or `controller.abort()` (or by a Stop). Checked by the loop itself:
   * openai-node ends its iterator silently on an abort, Anthropic's MessageStream may yield one
   * more event, and a generic source may ignore the signal.
   */
  private aborted(): boolean {
    return this.controller.signal.aborted;
  }

  private cost(usage: Usage): bigint {
    return this.pricing.cost(this.model, usage);
  }

  private async meter(force: boolean): Promise<void> {
    this.sinceConsume++;
    if (!force && this.sinceConsume < this.consumeEvery) return;
    this.sinceConsume = 0;
    const usage = this.accumulator.usage;
    const running = this.cost(usage);
    // Tokens are metered too (as the Python guards do), so a `tokens` limit can stop a stream
    // whose output outgrows its hold; they were not, and only money grew the hold.
    const tokens = usage.inputTokens + usage.outputTokens;
    const delta = running - this.consumedNanos;
    const deltaTokens = tokens - this.consumedTokens;
    if (delta <= 0n && deltaTokens <= 0) return;
    const r = await this.manager.consume(this.reservation, delta > 0n ? delta : 0n, deltaTokens > 0 ? deltaTokens : 0);
    if (delta > 0n) this.consumedNanos = running;
    if (deltaTokens > 0) this.consumedTokens = tokens;
    if (r.verdict === 'stop') {
      this.outcome = 'stopped';
      this.abortSource();
      throw denialError(r.denial!, this.reservation.requestId, `stream stopped: ${r.denial!.message || 'budget exhausted'}`);
    }
  }

  private async settle(): Promise<void> {
    if (this.receipt) return;
    dropped.unregister(this);  // settled here; the finalizer must not settle it again
    const events = this.accumulator.events;
    let usage: Usage;
    try {
      usage = this.outcome === 'completed' ? this.accumulator.finish() : this.accumulator.usage;
    } catch {
      usage = this.accumulator.usage;  // truncated JSON at the end: keep the estimate
    }
    if (this.outcome !== 'completed' && !this.accumulator.hasFinalUsage) usage = { ...usage, complete: false };
    if (events === 0 && this.outcome !== 'completed') {
      this.receipt = await this.manager.release(this.reservation);
      return;
    }
    this.receipt = await this.manager.commit(this.reservation, {
      model: this.model,
      usage,
      provider: this.provider || undefined,
    });
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    // An async generator closed (return/throw) before its first next() never runs its body,
    // so its `finally` would not settle: the wrapper settles such a stream itself.
    const it = this.iterate();
    let started = false;
    return {
      next: (...a: [] | [unknown]) => {
        started = true;
        return it.next(...a);
      },
      return: async () => {
        if (!started) await this.settleUnread();
        return it.return(undefined);
      },
      throw: async (e?: unknown) => {
        if (!started) await this.settleUnread();
        return it.throw(e);
      },
    };
  }

  private async *iterate(): AsyncGenerator<T, void, unknown> {
    if (this.iterated) throw new InvalidArgumentError('a guarded stream can be iterated only once');
    this.iterated = true;
    try {
      for await (const event of this.source) {
        this.accumulator.feedEvent(event as object);  // received: counted (billed), not yielded
        if (this.aborted()) break;
        await this.meter(this.accumulator.hasFinalUsage);
        yield event;
      }
      if (this.outcome === 'pending') this.outcome = this.aborted() ? 'cancelled' : 'completed';
    } catch (e) {
      if (this.outcome === 'pending') this.outcome = this.aborted() ? 'cancelled' : 'failed';
      throw e;
    } finally {
      // Also reached by `break` / return(): the source iterator was closed by for-await.
      if (this.outcome === 'pending') this.outcome = 'cancelled';
      await this.settle();
    }
  }
}

function messagesText(params: Record<string, unknown>): string {
  const parts: unknown[] = [];
  for (const k of ['system', 'messages', 'input', 'instructions', 'tools']) if (params[k] !== undefined) parts.push(params[k]);
  return parts.length ? JSON.stringify(parts) : '';
}

/** Reserves, then makes the call; generic over the provider format. */
export async function guardStream<P extends { model?: string }, T>(
  manager: BudgetManager,
  format: ApiFormat,
  options: GuardOptions,
  params: P,
  call: StreamCall<P, T>,
): Promise<GuardedStream<T>> {
  const pricing = manager.pricing;
  if (!pricing) throw new InvalidArgumentError('stream guards need a BudgetManager created with a `pricing` engine');
  const model = options.model ?? params.model;
  if (typeof model !== 'string' || !model) throw new InvalidArgumentError('the request names no model');
  const p = params as unknown as Record<string, unknown>;
  const inputTokens = options.inputTokens ?? estimateTokens(messagesText(p));
  let maxOut = options.maxOutputTokens ??
    (p.max_completion_tokens ?? p.max_tokens ?? p.max_output_tokens) as number | undefined;
  // Every event is priced: a model that the engine cannot price (no entry, no fallback price)
  // throws UnknownModelError here, before any hold or call, also with an explicit estimate.
  pricing.cost(model, {});
  if (maxOut === undefined) {
    // A model priced by the fallback has no entry (and no maximum) to resolve.
    const max = pricing.knows(model) ? pricing.resolve(model).maxOutputTokens : 0;
    maxOut = max > 0 ? max : 4096;
  }
  // An OpenAI request for priority or flex processing is held at that tier's prices; "auto" and
  // "default" (the project's tier, known only from the response) at standard prices. The
  // commit is priced at the tier the response reports either way.
  const asked = p.service_tier;
  const serviceTier: ServiceTier | undefined =
    format.startsWith('openai') && (asked === 'priority' || asked === 'flex') ? asked : undefined;
  // An explicit money estimate holds the request's tokens too (as in Python): a `tokens` limit
  // is checked before the call; it held none, so only the commit counted them.
  const estimate = options.estimate !== undefined
    ? { cost: options.estimate, tokens: inputTokens + maxOut }
    : { model, usage: serviceTier ? { inputTokens, outputTokens: maxOut, serviceTier } : { inputTokens, outputTokens: maxOut } };
  const { subject, model: _m, estimate: _e, inputTokens: _i, maxOutputTokens: _o, consumeEvery, ...reqOpts } = options;
  const decision = await manager.reserve(subject, estimate, reqOpts);
  if (!decision.allowed) throw denialError(decision.denial, options.requestId);
  const reservation = decision.reservation;
  const controller = new AbortController();
  let source: AbortableStream<T>;
  try {
    source = (await call(params, { signal: controller.signal })) as AbortableStream<T>;
  } catch (e) {
    await manager.release(reservation).catch(() => undefined);
    throw e;
  }
  return new GuardedStream<T>(manager, pricing, model, reservation, controller, source, format, inputTokens,
    Math.max(1, consumeEvery ?? 1), options.provider ?? '');
}

/** OpenAI Chat Completions: forces `stream: true` and `stream_options.include_usage`. */
export function guardOpenAIChatStream<P extends { model: string; stream_options?: unknown }, T>(
  manager: BudgetManager,
  options: GuardOptions,
  params: P,
  call: StreamCall<P & { stream: true }, T>,
): Promise<GuardedStream<T>> {
  const so = (params.stream_options ?? {}) as Record<string, unknown>;
  const withUsage = { ...params, stream: true as const, stream_options: { ...so, include_usage: true } };
  return guardStream(manager, 'openai-chat', { provider: 'openai', ...options }, withUsage, call);
}

/** OpenAI Responses API streams (usage in response.completed / incomplete / failed). */
export function guardOpenAIResponsesStream<P extends { model: string }, T>(
  manager: BudgetManager,
  options: GuardOptions,
  params: P,
  call: StreamCall<P & { stream: true }, T>,
): Promise<GuardedStream<T>> {
  return guardStream(manager, 'openai-responses', { provider: 'openai', ...options }, { ...params, stream: true as const }, call);
}

/** Anthropic Messages streams (`messages.create({stream: true})` or `messages.stream()`). */
export function guardAnthropicStream<P extends { model: string }, T>(
  manager: BudgetManager,
  options: GuardOptions,
  params: P,
  call: StreamCall<P, T>,
): Promise<GuardedStream<T>> {
  return guardStream(manager, 'anthropic', { provider: 'anthropic', ...options }, params, call);
}


