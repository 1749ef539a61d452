// @ts-check
// Where the Node and Python packages must agree (docs/node.md and docs/python.md say so):
// observers are added and removable, aggregate's groupBy keeps C++'s defaults for the fields it
// leaves out, metadata values are written alike. The Python side is
// bindings/python/tests/test_binding_parity.py.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { BudgetManager, ManualClock, InvalidArgumentError, OverflowError, BudgetExceededError, PricingEngine, guardStream, toNanos } from 'libbudget';
import { storeKinds, freshUrl, T0, usd, findStatus, waitFor } from './helpers.mjs';

/** Lets queued callbacks arrive (they are delivered on the JS thread after the operation). */
const settle = () => new Promise((r) => setTimeout(r, 30));

for (const kind of storeKinds()) {
  describe(`store=${kind}`, () => {
    /** @param {Partial<import('libbudget').BudgetManagerOptions>} [o] */
    function make(o = {}) {
      return new BudgetManager({ store: freshUrl(kind), clock: new ManualClock(T0), ...o });
    }

    test('onAlert adds a callback (as in C++ and Python) and returns a function that removes it', async () => {
      const m = make({ limits: [{ scope: 'user:*', window: 'day', amount: '10', alerts: [20, 40, 60, 80] }] });
      /** @type {string[]} */
      const calls = [];
      const removeFirst = m.onAlert((a) => calls.push(`first ${a.thresholdPct}`));
      assert.equal(typeof removeFirst, 'function');
      m.onAlert((a) => calls.push(`second ${a.thresholdPct}`));
      await m.record('user:obs', '2');  // 20%: both, in registration order
      assert.ok(await waitFor(() => calls.length >= 2));
      await settle();
      assert.deepEqual(calls, ['first 20', 'second 20']);
      removeFirst();
      removeFirst();  // a no-op the second time
      await m.record('user:obs', '2');  // 40%
      assert.ok(await waitFor(() => calls.length >= 3));
      await settle();
      assert.deepEqual(calls.slice(2), ['second 40']);
      m.onAlert(null);  // removes every alert callback
      await m.record('user:obs', '2');  // 60%: nobody
      await settle();
      assert.equal(calls.length, 3);
      /** @param {import('libbudget').Alert} a */
      const cb = (a) => calls.push(`twice ${a.thresholdPct}`);
      m.onAlert(cb);
      m.onAlert(cb);  // the same function registered twice is called twice
      await m.record('user:obs', '2');  // 80%
      assert.ok(await waitFor(() => calls.length >= 5));
      await settle();
      assert.deepEqual(calls.slice(3), ['twice 80', 'twice 80']);
      assert.equal(findStatus(await m.status('user:obs'), 'day').spent, usd('8'));
      m.close();
    });

    test('onDenial adds a callback too; the constructor option is one more registration', async () => {
      /** @type {string[]} */
      const seen = [];
      const m = make({ limits: [{ scope: 'user:*', window: 'day', amount: '1' }], onDenial: (d) => seen.push(`ctor ${d.scope}`) });
      const removeA = m.onDenial((d) => seen.push(`a ${d.scope}`));
      m.onDenial((_d, subject) => seen.push(`b ${subject.join(',')}`));
      assert.equal((await m.reserve('user:den', '5')).allowed, false);
      assert.ok(await waitFor(() => seen.length >= 3));
      await settle();
      assert.deepEqual(seen, ['ctor user:den', 'a user:den', 'b global,user:den']);
      removeA();
      assert.equal((await m.check('user:den', '5')).allowed, false);
      assert.ok(await waitFor(() => seen.length >= 5));
      await settle();
      assert.deepEqual(seen.slice(3), ['ctor user:den', 'b global,user:den']);
      m.onDenial(null);
      assert.equal((await m.check('user:den', '5')).allowed, false);
      await settle();
      assert.equal(seen.length, 5);
      m.close();
    });

    test('a callback that throws does not keep the others from running', async () => {
      const m = make({ limits: [{ scope: 'user:*', window: 'day', amount: '1', alerts: [50] }] });
      /** @type {number[]} */
      const got = [];
      /** @type {string[]} */
      const warnings = [];
      /** @param {Error} w */
      const onWarning = (w) => warnings.push(w.message);
      process.on('warning', onWarning);
      try {
        m.onAlert(() => { throw new Error('boom'); });
        m.onAlert((a) => got.push(a.thresholdPct));
        assert.equal((await m.record('user:boom', '0.6')).charged, usd('0.6'));
        assert.ok(await waitFor(() => got.length >= 1 && warnings.length >= 1));
        assert.deepEqual(got, [50]);
        assert.match(warnings[0], /boom/);
      } finally {
        process.off('warning', onWarning);
        m.close();
      }
    });

    test('observers of a closed manager: adding throws, removing is a no-op', () => {
      const m = make();
      const remove = m.onAlert(() => {});
      m.close();
      remove();
      m.onAlert(null);
      m.onDenial(null);
      assert.throws(() => m.onAlert(() => {}), InvalidArgumentError);
      assert.throws(() => m.onDenial(() => {}), InvalidArgumentError);
      const m2 = make();
      assert.throws(() => m2.onAlert(/** @type {any} */ ('x')), InvalidArgumentError);
      m2.close();
    });

    test('a number finer than a nano is refused by every money argument, naming it, and changes nothing (as in Python)', async () => {
      const m = make({ limits: [{ scope: 'user:*', window: 'day', amount: '10' }, { scope: 'tenant:fl', window: 'total', amount: '5' }] });
      const d = await m.reserve('user:fl', '1', { requestId: 'fl-1' });
      assert.ok(d.allowed);
      const r = d.reservation;
      const state = async () => JSON.stringify(
        [(await m.events()).length, await m.status('global'), await m.status('user:fl'), await m.status('tenant:fl'), await m.limits()],
        (_k, v) => (typeof v === 'bigint' ? v.toString() : v));
      const before = await state();
      for (const bad of [1e-10, 0.1 + 0.2]) {
        const named = (/** @type {any} */ e) => e instanceof InvalidArgumentError && e.message.includes(`invalid money amount '${String(bad)}'`);
        /** @type {[string, () => unknown][]} */
        const calls = [
          ['reserve', () => m.reserve('user:fl', bad)],
          ['reserveOrThrow', () => m.reserveOrThrow('user:fl', bad)],
          ['check', () => m.check('user:fl', bad)],
          ['checkOrThrow', () => m.checkOrThrow('user:fl', bad)],
          ['consume', () => m.consume(r, bad)],
          ['commit', () => m.commit(r, bad)],
          ['commit {cost}', () => m.commit(r, { cost: bad })],
          ['record', () => m.record('user:fl', bad)],
          ['grant', () => m.grant('tenant:fl', bad)],
          ['adjust', () => m.adjust('user:fl', bad)],
          ['setLimit', () => m.setLimit({ scope: 'user:*', window: 'week', amount: bad })],
        ];
        for (const [name, call] of calls) {
          await assert.rejects(async () => call(), named, name);
          assert.equal(await state(), before, name);
        }
        assert.throws(() => make({ minGrowth: bad }), named);
        assert.throws(() => make({ persistEvery: bad }), named);
        const p = new PricingEngine();
        p.setPrice('m-1', { provider: 'openai', input: '0.000001', output: '0.000002' });
        assert.throws(() => p.addMarkup({ percent: '10', fixed: bad }), named);
        assert.equal(p.cost('m-1', { inputTokens: 1000 }), usd('0.001'));  // no markup was added
      }
      assert.equal((await m.commit(r, '0.5')).charged, usd('0.5'));  // the hold was left as it was
      m.close();
    });

    test("aggregate: a groupBy that leaves `scope` out groups by scope (C++'s and Python's default)", async () => {
      const m = make();
      await m.record(['tenant:g', 'user:g'], { cost: '0.25', model: 'm-2' });  // money, recorded under a model
      await m.record(['tenant:g', 'user:g'], '0.75');
      const rows = await m.aggregate({}, { model: true });
      const by = new Map(rows.map((r) => [`${r.scope}|${r.model}`, r.spent]));
      assert.equal(by.get('user:g|m-2'), usd('0.25'));
      assert.equal(by.get('user:g|'), usd('0.75'));
      assert.ok(rows.every((r) => r.scope !== ''), 'every row names its scope');
      const modelOnly = await m.aggregate({}, { scope: false, model: true });
      assert.ok(modelOnly.every((r) => r.scope === ''));
      assert.equal(modelOnly.find((r) => r.model === 'm-2')?.spent, usd('0.25'));
      m.close();
    });
  });
}

test('metadata values are written as Python writes them (booleans as true/false)', async () => {
  const m = new BudgetManager({ store: 'memory' });
  await m.record('user:md', '1', { requestId: 'md-1', metadata: { s: 'text', retry: true, cached: false, n: 2, x: 1.5 } });
  const [e] = await m.events({ requestId: 'md-1' });
  assert.deepEqual(JSON.parse(e.metadata), { s: 'text', retry: 'true', cached: 'false', n: '2', x: '1.5' });
  for (const bad of [null, { a: 1 }, [1, 2]]) {
    await assert.rejects(m.record('user:md', '1', { metadata: /** @type {any} */ ({ k: bad }) }), InvalidArgumentError);
  }
  assert.equal((await m.events()).length, 1);
  m.close();
});

// A number is read through String(x), exactly, as Python reads a float through repr: at most 9
// fractional digits, else an InvalidArgumentError naming the number as JS prints it.
test('numbers: exact through String(x); finer than a nano or out of range, a typed error naming it', () => {
  /** @type {[number, bigint][]} */
  const exact = [[0.1, 100_000_000n], [1.23456789, 1_234_567_890n], [1e-9, 1n], [-1e-9, -1n], [1.5e-7, 150n],
    [-0, 0n], [2, 2_000_000_000n], [9.2e9, 9_200_000_000_000_000_000n], [123456789.12345679, 123_456_789_123_456_790n]];
  for (const [v, nanos] of exact) assert.equal(toNanos(v), nanos, String(v));
  for (const v of [1e-10, 0.1 + 0.2, 2.5e-10, -1e-10, 1.0000000001, 0.123456789012, 5e-324]) {
    assert.throws(() => toNanos(v), (/** @type {any} */ e) => e instanceof InvalidArgumentError &&
      e.message === `amount: invalid money amount '${String(v)}': more than 9 fractional digits (money is exact to the nano)`, String(v));
  }
  for (const v of [9.3e9, -9.3e9, 1e21, Number.MAX_VALUE]) {
    assert.throws(() => toNanos(v), (/** @type {any} */ e) => e instanceof OverflowError &&
      e.message === `amount: money amount out of range: ${String(v)}`, String(v));
  }
  for (const v of [NaN, Infinity, -Infinity]) assert.throws(() => toNanos(v), InvalidArgumentError);
});

test('buffer: exact, at most 4 decimals, as Python reads it; consume needs an amount', async () => {
  const m = new BudgetManager({ store: 'memory' });
  assert.equal((await m.reserve('user:f', '1', { buffer: '1.5' })).estimate, usd('1.5'));
  assert.equal((await m.reserve('user:f', '1', { buffer: 1.2 })).estimate, usd('1.2'));
  for (const bad of [1.23456, '1.23456', 'abc', Infinity, true]) {
    await assert.rejects(m.reserve('user:f', '1', { buffer: /** @type {any} */ (bad) }), InvalidArgumentError);
  }
  assert.throws(() => new BudgetManager({ store: 'memory', growthStep: 0.12345 }), InvalidArgumentError);
  new BudgetManager({ store: 'memory', growthStep: 200, buffer: '1.2' }).close();
  const d = await m.reserve('user:cn', '1');
  assert.ok(d.allowed);
  await assert.rejects(m.consume(d.reservation, /** @type {any} */ (undefined)), InvalidArgumentError);
  assert.equal((await m.consume(d.reservation, 0, 5)).verdict, 'continue');
  m.close();
});

test('stream guards hold and meter tokens, as the Python guards do', async () => {
  const pricing = new PricingEngine();
  pricing.setPrice('m-1', { provider: 'openai', input: '0.000001', output: '0.000001' });
  const m = new BudgetManager({ store: 'memory', pricing,
    limits: [{ scope: 'user:*', window: 'minute', amount: 200, metric: 'tokens' }] });
  const params = { model: 'm-1', messages: [{ role: 'user', content: 'hi' }], max_tokens: 500 };
  let called = false;
  // An explicit money estimate still holds the request's tokens: 500 > 200 is refused before the call.
  await assert.rejects(
    guardStream(m, 'openai-chat', { subject: 'user:t', estimate: '0.01' }, params, () => {
      called = true;
      return (async function* () {})();
    }),
    (/** @type {any} */ e) => e instanceof BudgetExceededError && e.denial.metric === 'tokens');
  assert.equal(called, false);
  // Tokens are metered: a stream whose output outgrows its hold is stopped by the tokens limit.
  async function* chunks() {
    for (let i = 0; i < 300; i++) {
      yield { id: 'c', object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: 'lorem ipsum dolor sit amet ' } }] };
    }
  }
  const s = await guardStream(m, 'openai-chat', { subject: 'user:t' }, { ...params, max_tokens: 100 }, () => chunks());
  let n = 0;
  await assert.rejects(async () => { for await (const _ of s) n++; },
    (/** @type {any} */ e) => e instanceof BudgetExceededError && e.denial.metric === 'tokens');
  assert.equal(s.outcome, 'stopped');
  assert.ok(n > 0 && n < 300, `stopped after ${n} chunks`);
  assert.equal(findStatus(await m.status('user:t'), 'minute', 'tokens').held, 0n);
  m.close();
});
