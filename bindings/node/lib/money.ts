// Money helpers: exact conversions between decimal text and bigint nanos.
import { native } from './native';
import type { MoneyInput } from './types';

export const NANOS_PER_UNIT = 1_000_000_000n;

/** Exact nanos of an amount: 10n -> 10n, "12.50" -> 12_500_000_000n, 0.1 -> 100_000_000n. */
export function toNanos(amount: MoneyInput): bigint {
  return native.parseMoney(amount);
}

/** Decimal text with at least two fractional digits: 12_500_000_000n -> "12.50". */
export function formatMoney(amount: MoneyInput): string {
  return native.formatMoney(amount);
}
