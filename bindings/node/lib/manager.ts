// BudgetManager: hold before a call, meter a stream, charge after it.
import { BudgetExceededError } from './errors';
import { native, type NativeClockHandle, type NativeManagerHandle } from './native';
import { PricingEngine } from './pricing';
import type {
  AggregateRow,
  Alert,
  ChargeInput,
  ConsumeResult,
  CountInput,
  Decision,
  Denial,
  EstimateInput,
  LedgerEvent,
  LedgerQuery,
  Limit,
  LimitSpec,
  LimitStatus,
  Metric,
  MoneyInput,
  Receipt,
  RequestOptions,
  Reservation,
  ScopeName,
  SubjectInput,
  VerifyReport,
  WindowName,
} from './types';

/** A clock that only moves when told to (tests: window rollover, hold expiry). */
export class ManualClock {
  /** @internal */
  readonly native: NativeClockHandle;
  /** Starts at `start` (default 2026-01-01T00:00:00Z). */
  constructor(start?: Date | number) {
    this.native = new native.NativeClock(start);
  }
  now(): Date {
    return this.native.now();
  }
  set(time: Date | number): void {
    this.native.set(time);
  }
  advance(ms: number): Date {
    return this.native.advance(ms);
  }
}

export interface StoreOptions {
  timeoutMs?: number;
  /** Redis connections */
  poolSize?: number;
  /** Redis ledger stream cap */
  streamMaxlen?: number;
}

export interface BudgetManagerOptions {
  /** `memory`, `sqlite:<path>` (default `sqlite:budget.db`), `redis://[user:pass@]host:port/db` */
  store?: string;
  storeOptions?: StoreOptions;
  /** Applied (upserted) at construction. */
  limits?: LimitSpec[];
  currency?: string;
  /** Time zone of calendar windows: an IANA name ('Europe/Paris', daylight saving included). Default UTC. */
  timeZone?: string;
  /** Time zone of calendar windows as a fixed UTC offset (when no timeZone). */
  utcOffsetMinutes?: number;
  /** Hold time-to-live (default 10 minutes). */
  defaultTtlMs?: number;
  /** Hold = estimate x buffer (default 1.0). */
  buffer?: number | string;
  /** Streaming: grow a hold by this fraction of the initial hold (default 0.5). */
  growthStep?: number | string;
  minGrowth?: MoneyInput;
  /** Persist consumed spend every time it advanced by this much (bounds crash loss). */
  persistEvery?: MoneyInput;
  /** When the store is down: false = deny (default), true = allow (recorded). */
  failOpen?: boolean;
  /** Prices `{ model, usage }` estimates and charges. `'bundled'` = the default table. */
  pricing?: PricingEngine | 'bundled';
  clock?: ManualClock;
  /**
   * Run store calls on the libuv thread pool (default: true for SQLite and Redis, false for
   * the memory store, which never blocks and answers in about a microsecond).
   */
  offload?: boolean;
  onAlert?: (alert: Alert) => void;
  onDenial?: (denial: Denial, subject: string[]) => void;
}

type ReservationRef = Reservation | string;

function nativeOptions(options: BudgetManagerOptions): { opts: Record<string, unknown>; pricing?: PricingEngine } {
  if (options === null || typeof options !== 'object') {
    return { opts: options as unknown as Record<string, unknown> };
  }
  let pricing: PricingEngine | undefined;
  if (options.pricing === 'bundled') pricing = PricingEngine.bundled();
  else if (options.pricing !== undefined) pricing = options.pricing;
  const opts: Record<string, unknown> = { ...options, pricing };
  delete opts.onAlert;
  delete opts.onDenial;
  return { opts, pricing };
}

/** Report an exception thrown by a user callback without crashing the process. */
function safely<A extends unknown[]>(what: string, cb: (...a: A) => void): (...a: A) => void {
  return (...a: A) => {
    try {
      cb(...a);
    } catch (e) {
      process.emitWarning(`libbudget: the ${what} callback threw: ${String((e as Error)?.stack ?? e)}`);
    }
  };
}

/**
 * Enforces spend budgets over a store. Every call that touches the store returns a Promise
 * (run off the JS thread for SQLite and Redis); a denial from `reserve`/`check` is a result,
 * not an error. Safe to share: many concurrent Promises on one manager are fine.
 */
export class BudgetManager {
  /** @internal */
  readonly native: NativeManagerHandle;
  /** The pricing engine given in the options (used by the stream guards). */
  readonly pricing: PricingEngine | undefined;

  /** Opens the store synchronously (see `BudgetManager.open` for the async form). */
  constructor(options: BudgetManagerOptions = {}) {
    const { opts, pricing } = nativeOptions(options);
    this.native = new native.NativeManager(opts);
    this.pricing = pricing;
    this.installCallbacks(options);
  }

  /** Opens the store on a worker thread. */
  static async open(options: BudgetManagerOptions = {}): Promise<BudgetManager> {
    const { opts, pricing } = nativeOptions(options);
    const handle = await native.openManager(opts);
    const m = Object.create(BudgetManager.prototype) as { native: NativeManagerHandle; pricing?: PricingEngine };
    m.native = handle;
    m.pricing = pricing;
    (m as unknown as BudgetManager).installCallbacks(options);
    return m as unknown as BudgetManager;
  }

  private installCallbacks(options: BudgetManagerOptions): void {
    if (options && options.onAlert) this.onAlert(options.onAlert);
    if (options && options.onDenial) this.onDenial(options.onDenial);
  }

  get store(): string {
    return this.native.info().store;
  }
  get currency(): string {
    return this.native.info().currency;
  }

  // ---- the lifecycle ----------------------------------------------------------------------
  /** Atomically holds `estimate x buffer` on every scope of the subject, or nothing. */
  reserve(subject: SubjectInput, estimate: EstimateInput, options?: RequestOptions): Promise<Decision> {
    return this.native.reserve(subject, estimate, options);
  }
  /** `reserve`, throwing BudgetExceededError on a denial. */
  async reserveOrThrow(subject: SubjectInput, estimate: EstimateInput, options?: RequestOptions): Promise<Reservation> {
    const d = await this.native.reserve(subject, estimate, options);
    if (!d.allowed) throw new BudgetExceededError(d.denial, options?.requestId);
    return d.reservation;
  }
  /** Adds incremental spend to a stream's hold; `verdict: 'stop'` when no scope can grow it. */
  consume(reservation: ReservationRef, amount: MoneyInput, tokens?: CountInput): Promise<ConsumeResult> {
    return this.native.consume(reservation, amount, tokens);
  }
  /** The final charge: replaces the hold with the actual cost (recorded even above a limit). */
  commit(reservation: ReservationRef, actual: ChargeInput): Promise<Receipt> {
    return this.native.commit(reservation, actual);
  }
  /** Voids a hold (the call failed or was cancelled). */
  release(reservation: ReservationRef): Promise<Receipt> {
    return this.native.release(reservation);
  }
  /** Settles holds whose TTL passed; resolves to how many. */
  expireHolds(): Promise<number> {
    return this.native.expireHolds();
  }

  // ---- check-then-charge ------------------------------------------------------------------
  /** Would `reserve` allow this now? Holds nothing. */
  check(subject: SubjectInput, estimate: EstimateInput): Promise<Decision> {
    return this.native.check(subject, estimate);
  }
  /** `check`, throwing BudgetExceededError on a denial. */
  async checkOrThrow(subject: SubjectInput, estimate: EstimateInput): Promise<void> {
    const d = await this.native.check(subject, estimate);
    if (!d.allowed) throw new BudgetExceededError(d.denial);
  }
  /** Direct spend after the fact, in one call. */
  record(subject: SubjectInput, actual: ChargeInput, options?: RequestOptions): Promise<Receipt> {
    return this.native.record(subject, actual, options);
  }

  // ---- corrections ------------------------------------------------------------------------
  /** Raises the `total` limits of a scope (a top-up, a credit). */
  grant(scope: ScopeName, amount: MoneyInput, options?: RequestOptions): Promise<void> {
    return this.native.grant(scope, amount, options);
  }
  /** Adds (or, negative, removes) spend on every scope of a subject. */
  adjust(subject: SubjectInput, delta: MoneyInput, options?: RequestOptions): Promise<void> {
    return this.native.adjust(subject, delta, options);
  }

  // ---- limits and reads -------------------------------------------------------------------
  status(scope: ScopeName = 'global'): Promise<LimitStatus[]> {
    return this.native.status(scope);
  }
  setLimit(limit: LimitSpec): Promise<void> {
    return this.native.setLimit(limit);
  }
  removeLimit(scope: ScopeName, metric: Metric, window: WindowName): Promise<boolean> {
    return this.native.removeLimit(scope, metric, window);
  }
  limits(): Promise<Limit[]> {
    return this.native.limits();
  }

  // ---- ledger -----------------------------------------------------------------------------
  events(query?: LedgerQuery): Promise<LedgerEvent[]> {
    return this.native.events(query);
  }
  exportJsonl(query?: LedgerQuery): Promise<string> {
    return this.native.exportJsonl(query);
  }
  exportCsv(query?: LedgerQuery): Promise<string> {
    return this.native.exportCsv(query);
  }
  aggregate(query?: LedgerQuery, groupBy?: { scope?: boolean; model?: boolean; day?: boolean }): Promise<AggregateRow[]> {
    return this.native.aggregate(query, groupBy ?? { scope: true });
  }
  /** Recomputes balances from the ledger and checks the hash chain. */
  verify(): Promise<VerifyReport> {
    return this.native.verify();
  }

  // ---- observers and misc -----------------------------------------------------------------
  /** Called on the JS thread, once per window per threshold crossing. `null` removes it. */
  onAlert(callback: ((alert: Alert) => void) | null): void {
    this.native.onAlert(callback ? safely('alert', callback) : null);
  }
  /** Called on the JS thread for every denial. `null` removes it. */
  onDenial(callback: ((denial: Denial, subject: string[]) => void) | null): void {
    this.native.onDenial(callback ? safely('denial', callback) : null);
  }
  /** Prometheus text exposition of the manager's counters. */
  metricsText(): string {
    return this.native.metricsText();
  }
  now(): Date {
    return this.native.now();
  }
  /** Releases the store (in-flight calls finish first). Later calls reject. */
  close(): void {
    this.native.close();
  }
}
