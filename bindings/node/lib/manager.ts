// BudgetManager: hold before a call, meter a stream, charge after it.
import { BudgetError, BudgetExceededError, InvalidArgumentError, StoreUnavailableError } from './errors';
import { countAt, F64, I64, native, putUsage, type NativeClockHandle, type NativeManagerHandle } from './native';
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
  LineItem,
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

/**
 * The error of a denial in the raising conveniences and the stream guards: a fail-closed
 * store outage (`reason: 'store_unavailable'`) is a StoreUnavailableError (as in the Python
 * binding: an outage is not an exhausted budget, nor a 402/429), anything else a
 * BudgetExceededError.
 * @internal
 */
export function denialError(denial: Denial, requestId?: string, message?: string): BudgetError {
  if (denial.reason === 'store_unavailable') return new StoreUnavailableError(denial.message || 'the budget store is unavailable');
  return new BudgetExceededError(denial, requestId, message);
}

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
  /** May be async: a rejection becomes a process warning, like a throw. */
  onAlert?: (alert: Alert) => void;
  onDenial?: (denial: Denial, subject: string[]) => void;
}

type ReservationRef = Reservation | string;

// ---- inline execution -------------------------------------------------------------------
// With `offload` false (the memory store by default) each call runs synchronously in the
// addon and its outcome is wrapped here in an already-settled Promise (a thrown BudgetError
// becomes a rejection: the API is the same as with the thread pool). The addon passes the
// scalars through the scratch buffer and this layer builds the result objects (see
// src/manager.cpp, "Inline execution", for the slot layout).

/**
 * True when the options carry nothing but (maybe) a request id. Any other field, misspelt ones
 * included, goes the general way, which rejects an unknown field (a misspelt `requestId` must
 * not drop the idempotency key).
 */
function idOnly(o: RequestOptions): boolean {
  if (typeof o !== 'object' || Array.isArray(o)) return false;
  for (const k in o) if (k !== 'requestId') return false;
  return true;
}

/** Per-manager copies of addon state used by the inline results (see receipt_out in manager.cpp). */
interface InlineState {
  /** The price version last fetched. */
  pv: string;
  /** The interned line-item strings. */
  strs: string[];
}

/** `global` followed by the scopes given (the subject when the addon found it simple). */
function withGlobal(subject: SubjectInput): string[] {
  if (typeof subject === 'string') return ['global', subject];
  const n = subject.length;
  const a = new Array<string>(n + 1);
  a[0] = 'global';
  for (let i = 0; i < n; i++) a[i + 1] = subject[i];
  return a;
}

/** R: `Reservation` for a reserve (an allowed reserve always carries one), `null` for a check. */
function decisionOut<R extends Reservation | null>(
  n: NativeManagerHandle,
  out: unknown,
  subject: SubjectInput,
  requestId: unknown,
  model?: string,
): Decision<R> {
  const f = F64[0];
  const estimate = I64[1];
  if ((f & 8) !== 0) {
    const held = I64[2];
    const heldTokens = countAt(3);
    const expiresAt = new Date(F64[5]);
    let id = requestId as string;
    let scopes: string[];
    let m = (f & 128) !== 0 ? (model as string) : '';
    if ((f & 112) !== 0) {
      const x = n.reservationExtras();
      id = x[0];
      scopes = x[1];
      m = x[2];
    } else {
      scopes = withGlobal(subject);
    }
    const reservation: Reservation = { requestId: id, subject: scopes, held, heldTokens, expiresAt, model: m, handle: out };
    return { allowed: true, replayed: (f & 2) !== 0, failOpen: (f & 4) !== 0, estimate, reservation: reservation as R, denial: null };
  }
  if ((f & 1) !== 0) {
    return { allowed: true, replayed: (f & 2) !== 0, failOpen: (f & 4) !== 0, estimate, reservation: null as R, denial: null };
  }
  return { allowed: false, replayed: (f & 2) !== 0, failOpen: false, estimate, reservation: null, denial: out as Denial };
}

function receiptOut(n: NativeManagerHandle, st: InlineState, requestId: string, givenModel?: string): Receipt {
  const f = F64[0];
  const charged = I64[1];
  const released = I64[2];
  const tokens = countAt(3);
  let model = '';
  let priceVersion = '';
  let overLimitScopes: string[] = [];
  let items: LineItem[] = [];
  if ((f & 16) !== 0) {
    [model, priceVersion, overLimitScopes, items] = n.receiptExtras();
    st.pv = priceVersion;
  } else {
    if ((f & 32) !== 0) model = givenModel as string;
    if ((f & 64) !== 0) priceVersion = st.pv;
    const k = F64[5];
    if (k > 0) {
      if ((f & 128) !== 0) for (const x of n.internedFrom(st.strs.length)) st.strs.push(x);
      const strs = st.strs;
      items = new Array<LineItem>(k);
      for (let i = 0, b = 6; i < k; i++, b += 4) {
        items[i] = { name: strs[F64[b + 2]], quantity: F64[b], unitPrice: strs[F64[b + 3]], amount: I64[b + 1] };
      }
    }
  }
  return {
    requestId,
    charged,
    released,
    tokens,
    overHold: (f & 1) !== 0,
    overLimit: (f & 2) !== 0,
    overLimitScopes,
    afterExpiry: (f & 4) !== 0,
    replayed: (f & 8) !== 0,
    model,
    priceVersion,
    items,
  };
}

/** The provider of the charge last accepted by pricedModel (read once, with the other fields). */
let pricedProvider: string | undefined;

/**
 * The model of a `{ model, usage }` estimate or charge whose usage this call put in the
 * scratch buffer (slots 0-10); undefined for any other shape (the addon then converts the
 * value itself, with its checks and errors). Every field is read before the slots are
 * written; call it last before the native call (no user code may run in between).
 */
function pricedModel(x: unknown): string | undefined {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) return undefined;
  const v = x as { cost?: unknown; tokens?: unknown; model?: unknown; usage?: unknown; provider?: unknown };
  const { model, cost, tokens, usage, provider } = v;
  if (typeof model !== 'string' || model === '' || cost != null || tokens != null || usage == null) return undefined;
  if (provider != null && typeof provider !== 'string') return undefined;
  if (!putUsage(usage)) return undefined;
  pricedProvider = provider ?? undefined;
  return model;
}

function handleOf(r: unknown): unknown {
  return r !== null && typeof r === 'object' ? (r as { handle?: unknown }).handle : undefined;
}

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

/**
 * The callbacks of each kind, in registration order (each wrapped by `safely`, so one that
 * throws does not keep the others from running). Replaced, never mutated: a callback that
 * removes itself or registers another during a delivery does not change that delivery.
 */
interface Observers {
  alert: ReadonlyArray<(...a: unknown[]) => void>;
  denial: ReadonlyArray<(...a: unknown[]) => void>;
}

// The native manager keeps the function it is given as a GC root (a thread-safe function). So
// it gets a relay that refers to the manager weakly; the callbacks themselves are kept on the
// manager, where the collector sees them: a callback that refers to its manager (a service
// observing it) is then a cycle the collector frees, not a manager and store kept for good.
function relay(m: BudgetManager, which: keyof Observers): (...a: unknown[]) => void {
  const ref = new WeakRef(m);
  return (...a: unknown[]) => {
    const fns = (ref.deref() as unknown as { observers: Observers } | undefined)?.observers[which];
    if (fns) for (const fn of fns) fn(...a);
  };
}

/** What `onAlert(null)` / `onDenial(null)` return: there is no registration to remove. */
function nothingToRemove(): void {}

/**
 * Report an exception thrown by a user callback without crashing the process; likewise the
 * rejection of a Promise it returns (an async callback), which would otherwise be unhandled.
 */
function safely<A extends unknown[]>(what: string, cb: (...a: A) => unknown): (...a: A) => void {
  const warn = (e: unknown) =>
    process.emitWarning(`libbudget: the ${what} callback threw: ${String((e as Error)?.stack ?? e)}`);
  return (...a: A) => {
    try {
      const r = cb(...a);
      if (r !== null && typeof r === 'object' && typeof (r as PromiseLike<unknown>).then === 'function') {
        (r as PromiseLike<unknown>).then(undefined, warn);
      }
    } catch (e) {
      warn(e);
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
  /** Store calls run inline (synchronously, answered through settled Promises). */
  private readonly inline: boolean;
  private readonly st: InlineState = { pv: '', strs: [] };
  /** The callbacks, held here where the garbage collector sees them (see relay). */
  private readonly observers: Observers = { alert: [], denial: [] };

  /** Opens the store synchronously (see `BudgetManager.open` for the async form). */
  constructor(options: BudgetManagerOptions = {}) {
    const { opts, pricing } = nativeOptions(options);
    this.native = new native.NativeManager(opts);
    this.pricing = pricing;
    this.inline = !this.native.info().offload;
    this.installCallbacks(options);
  }

  /** Opens the store on a worker thread. */
  static async open(options: BudgetManagerOptions = {}): Promise<BudgetManager> {
    const { opts, pricing } = nativeOptions(options);
    const handle = await native.openManager(opts);
    const m = Object.create(BudgetManager.prototype) as {
      native: NativeManagerHandle;
      pricing?: PricingEngine;
      inline: boolean;
      st: InlineState;
      observers: Observers;
    };
    m.native = handle;
    m.pricing = pricing;
    m.inline = !handle.info().offload;
    m.st = { pv: '', strs: [] };
    m.observers = { alert: [], denial: [] };
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
  reserve(subject: SubjectInput, estimate: EstimateInput, options?: RequestOptions): Promise<Decision<Reservation>> {
    if (!this.inline) return this.native.reserve(subject, estimate, options);
    try {
      const n = this.native;
      if (options === undefined || options === null) {
        const pm = pricedModel(estimate);
        return Promise.resolve(decisionOut<Reservation>(n, n.reserveI(subject, estimate, undefined, undefined, pm), subject, undefined, pm));
      }
      if (idOnly(options)) {
        const id = options.requestId;
        const pm = pricedModel(estimate);
        return Promise.resolve(decisionOut<Reservation>(n, n.reserveI(subject, estimate, id, undefined, pm), subject, id, pm));
      }
      const pm = pricedModel(estimate);
      return Promise.resolve(decisionOut<Reservation>(n, n.reserveI(subject, estimate, undefined, options, pm), subject, undefined, pm));
    } catch (e) {
      return Promise.reject(e);
    }
  }
  /** `reserve`, throwing BudgetExceededError on a denial (StoreUnavailableError on a fail-closed store outage). */
  async reserveOrThrow(subject: SubjectInput, estimate: EstimateInput, options?: RequestOptions): Promise<Reservation> {
    const d = await this.reserve(subject, estimate, options);
    if (!d.allowed) throw denialError(d.denial, options?.requestId);
    return d.reservation;
  }
  /** Adds incremental spend to a stream's hold; `verdict: 'stop'` when no scope can grow it. */
  consume(reservation: ReservationRef, amount: MoneyInput, tokens?: CountInput): Promise<ConsumeResult> {
    if (!this.inline) return this.native.consume(reservation, amount, tokens);
    try {
      const denial = this.native.consumeI(reservation, handleOf(reservation), amount, tokens) as Denial | null;
      const ok = F64[0] !== 0;
      return Promise.resolve({ verdict: ok ? 'continue' : 'stop', consumed: I64[1], held: I64[2], denial } as ConsumeResult);
    } catch (e) {
      return Promise.reject(e);
    }
  }
  /** The final charge: replaces the hold with the actual cost (recorded even above a limit). */
  commit(reservation: ReservationRef, actual: ChargeInput): Promise<Receipt> {
    if (!this.inline) return this.native.commit(reservation, actual);
    try {
      const n = this.native;
      const h = handleOf(reservation);
      const pm = pricedModel(actual);
      const out = pm === undefined ? n.commitI(reservation, h, actual) : n.commitI(reservation, h, actual, pm, pricedProvider);
      return Promise.resolve(receiptOut(n, this.st, out, pm));
    } catch (e) {
      return Promise.reject(e);
    }
  }
  /** Voids a hold (the call failed or was cancelled). */
  release(reservation: ReservationRef): Promise<Receipt> {
    if (!this.inline) return this.native.release(reservation);
    try {
      const n = this.native;
      return Promise.resolve(receiptOut(n, this.st, n.releaseI(reservation, handleOf(reservation))));
    } catch (e) {
      return Promise.reject(e);
    }
  }
  /** Settles holds whose TTL passed; resolves to how many. */
  expireHolds(): Promise<number> {
    return this.native.expireHolds();
  }

  // ---- check-then-charge ------------------------------------------------------------------
  /** Would `reserve` allow this now? Holds nothing. */
  check(subject: SubjectInput, estimate: EstimateInput): Promise<Decision<null>> {
    if (!this.inline) return this.native.check(subject, estimate);
    try {
      const n = this.native;
      const pm = pricedModel(estimate);
      return Promise.resolve(decisionOut<null>(n, n.checkI(subject, estimate, pm), subject, undefined));
    } catch (e) {
      return Promise.reject(e);
    }
  }
  /** `check`, throwing BudgetExceededError on a denial (StoreUnavailableError on a fail-closed store outage). */
  async checkOrThrow(subject: SubjectInput, estimate: EstimateInput): Promise<void> {
    const d = await this.check(subject, estimate);
    if (!d.allowed) throw denialError(d.denial);
  }
  /** Direct spend after the fact, in one call. */
  record(subject: SubjectInput, actual: ChargeInput, options?: RequestOptions): Promise<Receipt> {
    if (!this.inline) return this.native.record(subject, actual, options);
    try {
      const n = this.native;
      const simple = options === undefined || options === null || idOnly(options);
      const id = simple ? options?.requestId : undefined;
      const pm = pricedModel(actual);
      const out =
        pm === undefined
          ? n.recordI(subject, actual, id, simple ? undefined : options)
          : n.recordI(subject, actual, id, simple ? undefined : options, pm, pricedProvider);
      return Promise.resolve(receiptOut(n, this.st, out, pm));
    } catch (e) {
      return Promise.reject(e);
    }
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
  /**
   * Adds a callback, called on the JS thread once per limit, window and threshold crossing.
   * Registering again adds another (as in C++ and Python): each is called, in registration
   * order. Returns a function that removes this registration; `onAlert(null)` removes every
   * alert callback.
   */
  onAlert(callback: ((alert: Alert) => void) | null): () => void {
    return this.observe('alert', callback);
  }
  /**
   * Adds a callback, called on the JS thread for every denial (reserve, check, a stream's
   * Stop). Registering again adds another; returns a function that removes this registration;
   * `onDenial(null)` removes every denial callback.
   */
  onDenial(callback: ((denial: Denial, subject: string[]) => void) | null): () => void {
    return this.observe('denial', callback);
  }
  private observe(which: keyof Observers, callback: ((...a: never[]) => void) | null | undefined): () => void {
    const name = which === 'alert' ? 'onAlert' : 'onDenial';
    const setNative = (fn: ((...a: unknown[]) => void) | null) =>
      which === 'alert' ? this.native.onAlert(fn) : this.native.onDenial(fn);
    if (callback == null) {
      this.observers[which] = [];
      setNative(null);  // lets go of the thread-safe function (a no-op once closed)
      return nothingToRemove;
    }
    if (typeof callback !== 'function') throw new InvalidArgumentError(`${name} expects a function (or null to remove every callback)`);
    // (Re)installs the relay: throws when the manager is closed, before anything is added.
    setNative(relay(this, which));
    const entry = safely(which, callback as (...a: unknown[]) => unknown);
    this.observers[which] = [...this.observers[which], entry];
    const ref = new WeakRef(this);
    return () => {
      const m = ref.deref();
      if (!m) return;
      const before = m.observers[which];
      const left = before.filter((e) => e !== entry);
      if (left.length === before.length) return;  // removed already
      m.observers[which] = left;
      if (left.length === 0) (which === 'alert' ? m.native.onAlert(null) : m.native.onDenial(null));
    };
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
