// Errors: one base class, one subclass per stable code (shared with C++, C and Python).
import type { Denial } from './types';

export type ErrorCode =
  | 'BUDGET_EXCEEDED'
  | 'STORE_UNAVAILABLE'
  | 'UNKNOWN_MODEL'
  | 'INVALID_ARGUMENT'
  | 'CONFLICT'
  | 'NOT_FOUND'
  | 'OVERFLOW'
  | 'INTERNAL';

/** Base class of every error libbudget throws or rejects with. `.code` is stable. */
export class BudgetError extends Error {
  readonly code: ErrorCode;
  constructor(message: string, code: ErrorCode = 'INTERNAL', options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/**
 * A budget refused the spend: thrown by the raising conveniences (`reserveOrThrow`,
 * `checkOrThrow`) and by the stream guards when a stream is stopped. A plain `reserve()`
 * returns the denial as a result instead.
 */
export class BudgetExceededError extends BudgetError {
  readonly denial: Denial;
  readonly requestId: string | undefined;
  /** The exhausted scope and window, e.g. `user:alice` / `day`. */
  readonly scope: string;
  readonly window: string;
  /** True for a hard cap (spend alone leaves no room: HTTP 402); false when a retry may succeed (HTTP 429). */
  readonly hard: boolean;
  readonly resetsAt: Date | null;
  constructor(denial: Denial, requestId?: string, message?: string) {
    super(message ?? (denial.message || `budget exceeded on ${denial.scope} (${denial.window})`), 'BUDGET_EXCEEDED');
    this.denial = denial;
    this.requestId = requestId;
    this.scope = denial.scope;
    this.window = denial.window;
    this.hard = denial.hard;
    this.resetsAt = denial.resetsAt;
  }
  /** Seconds until a retry may succeed (for a Retry-After header); null when unknown. */
  retryAfterSeconds(now: Date = new Date()): number | null {
    if (!this.resetsAt) return null;
    return Math.max(1, Math.ceil((this.resetsAt.getTime() - now.getTime()) / 1000));
  }
}

export class StoreUnavailableError extends BudgetError {
  constructor(message: string) { super(message, 'STORE_UNAVAILABLE'); }
}
export class UnknownModelError extends BudgetError {
  constructor(message: string) { super(message, 'UNKNOWN_MODEL'); }
}
export class InvalidArgumentError extends BudgetError {
  constructor(message: string) { super(message, 'INVALID_ARGUMENT'); }
}
/**
 * JSON text of a parsed object the caller passed instead of text; an object that JSON cannot
 * represent (a bigint, a cycle) is an InvalidArgumentError like malformed text, not a TypeError.
 */
export function jsonText(value: unknown, what: string): string {
  let s: string | undefined;
  try {
    s = JSON.stringify(value);
  } catch (e) {
    throw new InvalidArgumentError(`${what}: not representable as JSON (${(e as Error).message})`);
  }
  if (typeof s !== 'string') throw new InvalidArgumentError(`${what}: not representable as JSON`);
  return s;
}
export class ConflictError extends BudgetError {
  constructor(message: string) { super(message, 'CONFLICT'); }
}
export class NotFoundError extends BudgetError {
  constructor(message: string) { super(message, 'NOT_FOUND'); }
}
export class OverflowError extends BudgetError {
  constructor(message: string) { super(message, 'OVERFLOW'); }
}
export class InternalError extends BudgetError {
  constructor(message: string) { super(message, 'INTERNAL'); }
}

const byCode: Record<string, new (message: string) => BudgetError> = {
  STORE_UNAVAILABLE: StoreUnavailableError,
  UNKNOWN_MODEL: UnknownModelError,
  INVALID_ARGUMENT: InvalidArgumentError,
  CONFLICT: ConflictError,
  NOT_FOUND: NotFoundError,
  OVERFLOW: OverflowError,
  INTERNAL: InternalError,
};

/** Used by the native layer to create errors (registered at load time). */
export function makeError(code: string, message: string): BudgetError {
  const C = byCode[code];
  return C ? new C(message) : new BudgetError(message, 'INTERNAL');
}
