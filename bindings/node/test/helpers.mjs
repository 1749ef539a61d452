// @ts-check
// Test helpers: the store list (env BUDGET_TEST_STORES, default "memory,sqlite"; "redis"
// needs BUDGET_TEST_REDIS_URL and FAILS without it), fresh store URLs, temp dirs.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';

export const REPO_ROOT = path.resolve(import.meta.dirname, '..', '..', '..');

/** @returns {string[]} */
export function storeKinds() {
  const env = process.env.BUDGET_TEST_STORES;
  return (env && env.trim() ? env : 'memory,sqlite').split(',').map((s) => s.trim()).filter(Boolean);
}

let tmp = /** @type {string | undefined} */ (undefined);
export function tempDir() {
  if (!tmp) {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'libbudget-node-'));
    process.on('exit', () => fs.rmSync(/** @type {string} */ (tmp), { recursive: true, force: true }));
  }
  return tmp;
}

export function uniqueName() {
  return `${process.pid}_${randomBytes(6).toString('hex')}`;
}

/** A fresh store URL of the given kind. @param {string} kind */
export function freshUrl(kind) {
  if (kind === 'memory') return 'memory';
  if (kind === 'sqlite') return `sqlite:${path.join(tempDir(), uniqueName() + '.db')}`;
  if (kind === 'redis') {
    const url = process.env.BUDGET_TEST_REDIS_URL;
    if (!url) throw new Error('BUDGET_TEST_STORES names redis but BUDGET_TEST_REDIS_URL is not set');
    return `${url}${url.includes('?') ? '&' : '?'}prefix=t${uniqueName()}`;
  }
  throw new Error(`unknown store kind ${kind}`);
}

/** 2026-03-10T12:00:00Z (a Tuesday) */
export const T0 = 1_773_144_000_000;

/** Nanos of a decimal amount. @param {string} s */
export function usd(s) {
  const [i, f = ''] = s.split('.');
  return BigInt(i) * 1_000_000_000n + BigInt((f + '000000000').slice(0, 9)) * (s.startsWith('-') ? -1n : 1n);
}

/**
 * @param {import('../dist/index.js').LimitStatus[]} v
 * @param {string} window
 * @param {string} [metric]
 */
export function findStatus(v, window, metric = 'cost') {
  const s = v.find((x) => x.window === window && x.metric === metric);
  if (!s) throw new Error(`no status for ${window}/${metric}`);
  return s;
}

/** Polls `cond` every few ms until true or the deadline (then returns false). @param {() => boolean} cond */
export async function waitFor(cond, ms = 3000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 5));
  }
  return true;
}
