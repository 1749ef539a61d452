// @ts-check
// The README's TypeScript example, verbatim between the markers below (the first test checks
// that it matches README.md, with the store URL as STORE), type-checked by
// `tsc -p tsconfig.test.json` (strict) and run by the second test.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BudgetManager, PricingEngine } from 'libbudget';
import { REPO_ROOT, freshUrl } from './helpers.mjs';

/** The README's TS block, without its import line. */
function readmeBlock() {
  const md = fs.readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
  const m = /```ts\n([\s\S]*?)```/.exec(md);
  assert.ok(m, 'README.md has a ```ts block');
  const lines = m[1].split('\n');
  assert.equal(lines[0], "import { BudgetManager, PricingEngine } from 'libbudget';");
  return lines.slice(1).join('\n').trim().replace("'sqlite:budget.db'", 'STORE');
}

/** The region between the markers in this file, dedented. */
function exampleHere() {
  const src = fs.readFileSync(new URL(import.meta.url), 'utf8');
  const begin = src.lastIndexOf('// README:begin\n') + '// README:begin\n'.length;
  const end = src.indexOf('  // README:end\n', begin);
  return src.slice(begin, end).split('\n').map((l) => l.replace(/^ {2}/, '')).join('\n').trim();
}

/**
 * Stand-ins for what the README leaves to the app.
 * @param {string} STORE
 * @param {AsyncIterable<string>} stream
 * @param {AbortController} controller
 * @param {(chunk: string) => string} costOf
 * @param {{ inputTokens: number, outputTokens: number }} usage
 */
async function readmeExample(STORE, stream, controller, costOf, usage) {
  // README:begin
  const budget = await BudgetManager.open({
    store: STORE,
    pricing: PricingEngine.bundled(),
    limits: [{ scope: 'user:*', window: 'day', amount: '1.00' },
             { scope: 'tenant:acme', window: 'total', amount: '250' }],
  });
  const d = await budget.reserve(['tenant:acme', 'user:alice'],
    { model: 'gpt-4o', usage: { inputTokens: 1200, outputTokens: 800 } });
  if (!d.allowed) throw new Error(d.denial.message);       // or answer 402 / 429
  for await (const chunk of stream) {
    const c = await budget.consume(d.reservation, costOf(chunk));   // bigint nanos or "0.0012"
    if (c.verdict === 'stop') { controller.abort(); break; }
  }
  const receipt = await budget.commit(d.reservation, { model: 'gpt-4o', usage });
  // README:end
  budget.close();
  return receipt;
}

test('the README example is the one in README.md', () => {
  assert.equal(exampleHere(), readmeBlock());
});

test('the README example runs: reserve, meter, commit the provider usage', async () => {
  async function* answer() { yield 'Hel'; yield 'lo'; }
  const receipt = await readmeExample(freshUrl('sqlite'), answer(), new AbortController(), () => '0.0012',
    { inputTokens: 1100, outputTokens: 700 });
  // gpt-4o in the bundled table: $2.50 / M input, $10 / M output.
  assert.equal(receipt.charged, 2_750_000n + 7_000_000n);
  assert.equal(receipt.overLimit, false);
});
