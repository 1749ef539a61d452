// @ts-check
// Bad input -> a typed error and no state change.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  BudgetManager, ManualClock, PricingEngine, InvalidArgumentError, OverflowError, UnknownModelError, NotFoundError,
  BudgetError, usageFromResponse, StreamUsage, toNanos,
} from 'libbudget';
import { storeKinds, freshUrl, T0 } from './helpers.mjs';

/** @type {any} */
const any = undefined;

for (const kind of storeKinds()) {
  describe(`store=${kind}`, () => {
    test('long and non-ASCII scopes and request ids survive the trip (string buffers, subject reuse)', async () => {
      const m = new BudgetManager({ store: freshUrl(kind), clock: new ManualClock(T0) });
      // ids of 200-256 UTF-8 bytes with 2- and 4-byte characters across every byte offset
      for (const [unit, bytes] of [['é', 2], ['😀', 4], ['a', 1]]) {
        for (let len = 246; len <= 256; len++) {
          const n = Math.floor(len / /** @type {number} */ (bytes));
          const id = 'z'.repeat(len - n * /** @type {number} */ (bytes)) + String(unit).repeat(n);
          const scope = `user:${id}`;
          const rid = id;  // also len bytes
          const d = await m.reserve(['tenant:t', scope], 5n, { requestId: rid });
          assert.deepEqual(d.reservation?.subject, ['global', 'tenant:t', scope]);
          assert.equal(d.reservation?.requestId, rid);
          const again = await m.reserve(['tenant:t', scope], 5n);  // same subject again, a generated id
          assert.deepEqual(again.reservation?.subject, ['global', 'tenant:t', scope]);
          const rc = await m.commit(/** @type {any} */ (d.reservation), 3n);
          assert.equal(rc.requestId, rid);
          const ev = await m.events({ requestId: rid });
          assert.deepEqual(ev[0].subject, ['global', 'tenant:t', scope]);
        }
      }
      // A subject that changes in one scope only, and one with `global` and duplicates.
      assert.deepEqual((await m.reserve(['tenant:t', 'user:a'], 1n)).reservation?.subject, ['global', 'tenant:t', 'user:a']);
      assert.deepEqual((await m.reserve(['tenant:t', 'user:b'], 1n)).reservation?.subject, ['global', 'tenant:t', 'user:b']);
      assert.deepEqual((await m.reserve(['user:b', 'global', 'user:b'], 1n)).reservation?.subject, ['global', 'user:b']);
      assert.deepEqual((await m.reserve('user:c', 1n)).reservation?.subject, ['global', 'user:c']);
      assert.deepEqual((await m.reserve('global', 1n)).reservation?.subject, ['global']);
      assert.deepEqual((await m.reserve([], 1n)).reservation?.subject, ['global']);
      await assert.rejects(m.reserve(['tenant:t', 'user:b', 'bad'], 1n), InvalidArgumentError);
      assert.deepEqual((await m.reserve(['tenant:t', 'user:b'], 1n)).reservation?.subject, ['global', 'tenant:t', 'user:b'],
        'a rejected subject leaves nothing behind');
      m.close();
    });

    test('bad arguments reject with typed errors and change nothing', async () => {
      const pricing = new PricingEngine();
      pricing.setPrice('m-1', { input: '0.000001', output: '0.000002' });
      const m = new BudgetManager({
        store: freshUrl(kind), clock: new ManualClock(T0), pricing,
        limits: [{ scope: 'user:*', window: 'day', amount: '10' }],
      });
      await m.record('user:x', '1', { requestId: 'seed' });
      const d = await m.reserve('user:x', '1', { requestId: 'held' });
      const res = /** @type {import('libbudget').Reservation} */ (d.reservation);
      const before = { status: await m.status('user:x'), events: (await m.events()).length, limits: await m.limits() };

      /** @type {[string, () => Promise<unknown>, Function][]} */
      const cases = [
        ['NaN amount', () => m.reserve('user:x', NaN), InvalidArgumentError],
        ['Infinity amount', () => m.reserve('user:x', Infinity), InvalidArgumentError],
        ['-Infinity amount', () => m.record('user:x', -Infinity), InvalidArgumentError],
        ['negative string', () => m.reserve('user:x', '-1'), InvalidArgumentError],
        ['negative number', () => m.record('user:x', -0.5), InvalidArgumentError],
        ['negative bigint', () => m.reserve('user:x', -1n), InvalidArgumentError],
        ['huge bigint', () => m.reserve('user:x', 2n ** 70n), OverflowError],
        ['huge decimal', () => m.record('user:x', '99999999999999999999'), OverflowError],
        ['huge number', () => m.record('user:x', 1e30), OverflowError],
        ['exponent string', () => m.reserve('user:x', '1e5'), InvalidArgumentError],
        ['sub-nano decimal', () => m.reserve('user:x', '0.0000000001'), InvalidArgumentError],
        ['sub-nano number', () => m.record('user:x', 1e-12), InvalidArgumentError],
        ['garbage string', () => m.reserve('user:x', 'ten dollars'), InvalidArgumentError],
        ['boolean amount', () => m.reserve('user:x', /** @type {any} */ (true)), InvalidArgumentError],
        ['null amount', () => m.reserve('user:x', /** @type {any} */ (null)), InvalidArgumentError],
        ['undefined amount', () => m.record('user:x', any), InvalidArgumentError],
        ['symbol amount', () => m.reserve('user:x', /** @type {any} */ (Symbol('x'))), InvalidArgumentError],
        ['array amount', () => m.reserve('user:x', /** @type {any} */ ([1])), InvalidArgumentError],
        ['number subject', () => m.reserve(/** @type {any} */ (42), '1'), InvalidArgumentError],
        ['scope without id', () => m.reserve('user:', '1'), InvalidArgumentError],
        ['scope without kind', () => m.reserve('alice', '1'), InvalidArgumentError],
        ['control char in id', () => m.reserve(['user:a\u0000b'], '1'), InvalidArgumentError],
        ['non-string scope', () => m.reserve(/** @type {any} */ ([7]), '1'), InvalidArgumentError],
        ['requestId number', () => m.reserve('user:x', '1', /** @type {any} */ ({ requestId: 5 })), InvalidArgumentError],
        ['buffer below 1', () => m.reserve('user:x', '1', { buffer: 0.5 }), InvalidArgumentError],
        ['buffer NaN', () => m.reserve('user:x', '1', { buffer: NaN }), InvalidArgumentError],
        ['ttl negative', () => m.reserve('user:x', '1', { ttlMs: -1 }), InvalidArgumentError],
        ['ttl fractional', () => m.reserve('user:x', '1', { ttlMs: 1.5 }), InvalidArgumentError],
        ['metadata object value', () => m.record('user:x', '1', /** @type {any} */ ({ metadata: { a: {} } })), InvalidArgumentError],
        ['options not object', () => m.record('user:x', '1', /** @type {any} */ ('opts')), InvalidArgumentError],
        ['usage negative', () => m.reserve('user:x', { model: 'm-1', usage: { inputTokens: -1 } }), InvalidArgumentError],
        ['usage fractional', () => m.reserve('user:x', { model: 'm-1', usage: { inputTokens: 1.5 } }), InvalidArgumentError],
        ['usage NaN', () => m.record('user:x', { model: 'm-1', usage: { outputTokens: NaN } }), InvalidArgumentError],
        ['usage part > total', () => m.record('user:x', { model: 'm-1', usage: { inputTokens: 5, cacheReadTokens: 10 } }), InvalidArgumentError],
        ['usage huge bigint', () => m.record('user:x', { model: 'm-1', usage: { inputTokens: 2n ** 64n } }), OverflowError],
        ['usage without model', () => m.record('user:x', { usage: { inputTokens: 5 } }), InvalidArgumentError],
        // a provider's raw usage (or a misspelt field) must not price as zero tokens
        ['usage raw openai', () => m.record('user:x', /** @type {any} */ ({ model: 'm-1', usage: { prompt_tokens: 900, completion_tokens: 90 } })), InvalidArgumentError],
        ['usage one misspelt', () => m.reserve('user:x', /** @type {any} */ ({ model: 'm-1', usage: { inputTokens: 5, output_tokens: 500 } })), InvalidArgumentError],
        ['usage misspelt commit', () => m.commit(res, /** @type {any} */ ({ model: 'm-1', usage: { inputTokens: 5, outputToken: 500 } })), InvalidArgumentError],
        ['unknown model', () => m.reserve('user:x', { model: 'nope-9', usage: { inputTokens: 5 } }), UnknownModelError],
        ['tokens negative', () => m.reserve('user:x', { cost: '1', tokens: -3 }), InvalidArgumentError],
        ['commit unknown id', () => m.commit('no-such-request', '1'), NotFoundError],
        ['commit NaN', () => m.commit(res, NaN), InvalidArgumentError],
        ['commit wrong handle', () => m.commit(/** @type {any} */ ({ foo: 1 }), '1'), InvalidArgumentError],
        // an object with no amount field is zero: one with only misspelt ones must not charge zero
        ['commit misspelt charge', () => m.commit(res, /** @type {any} */ ({ amount: '1' })), InvalidArgumentError],
        // no charge at all is refused, not a silent zero that releases the whole hold
        ['commit empty charge', () => m.commit(res, {}), InvalidArgumentError],
        ['commit provider only', () => m.commit(res, { provider: 'openai' }), InvalidArgumentError],
        ['commit model only', () => m.commit(res, { model: 'm-1' }), InvalidArgumentError],
        ['record misspelt charge', () => m.record('user:x', /** @type {any} */ ({ costs: '1' })), InvalidArgumentError],
        ['reserve misspelt estimate', () => m.reserve('user:x', /** @type {any} */ ({ price: '1' })), InvalidArgumentError],
        // a misspelt request id would silently drop the idempotency key (a retry charges twice)
        ['record misspelt requestId', () => m.record('user:x', '1', /** @type {any} */ ({ requestID: 'seed2' })), InvalidArgumentError],
        ['reserve misspelt requestId', () => m.reserve('user:x', '1', /** @type {any} */ ({ request_id: 'r2' })), InvalidArgumentError],
        ['reserve misspelt option', () => m.reserve('user:x', '1', /** @type {any} */ ({ requestId: 'r3', ttl: 5 })), InvalidArgumentError],
        // an empty key (an absent header read as '') would silently become a fresh id
        ['reserve empty requestId', () => m.reserve('user:x', '1', { requestId: '' }), InvalidArgumentError],
        ['reserve empty requestId with options', () => m.reserve('user:x', '1', { requestId: '', ttlMs: 5000 }), InvalidArgumentError],
        ['record empty requestId', () => m.record('user:x', '1', { requestId: '' }), InvalidArgumentError],
        ['grant empty requestId', () => m.grant('user:x', '1', { requestId: '' }), InvalidArgumentError],
        ['grant misspelt option', () => m.grant('user:x', '1', /** @type {any} */ ({ reson: 'x' })), InvalidArgumentError],
        ['check misspelt estimate', () => m.check('user:x', /** @type {any} */ ({ Cost: '1' })), InvalidArgumentError],
        ['consume negative', () => m.consume(res, '-0.01'), InvalidArgumentError],
        ['consume tokens NaN', () => m.consume(res, '0.01', NaN), InvalidArgumentError],
        ['release empty id', () => m.release(''), InvalidArgumentError],
        ['grant zero', () => m.grant('user:x', 0), InvalidArgumentError],
        ['grant bad scope', () => m.grant('not a scope', 1), InvalidArgumentError],
        ['adjust zero', () => m.adjust('user:x', '0'), InvalidArgumentError],
        ['limit bad window', () => m.setLimit({ scope: 'user:*', window: 'fortnight', amount: 1 }), InvalidArgumentError],
        ['limit fractional count', () => m.setLimit({ scope: 'user:*', window: 'day', amount: 1.5, metric: 'tokens' }), InvalidArgumentError],
        ['limit bad metric', () => m.setLimit({ scope: 'user:*', window: 'day', amount: 1, metric: /** @type {any} */ ('dollars') }), InvalidArgumentError],
        ['limit negative', () => m.setLimit({ scope: 'user:*', window: 'day', amount: '-5' }), InvalidArgumentError],
        ['limit not object', () => m.setLimit(/** @type {any} */ (null)), InvalidArgumentError],
        ['status bad scope', () => m.status('::'), InvalidArgumentError],
        ['events bad type', () => m.events({ type: /** @type {any} */ ('explode') }), InvalidArgumentError],
        // A misspelt ledger query field (Python's since/until, requestID, scopes) must not silently
        // widen the query: an invoice export of one tenant over a month would get every event.
        ['events misspelt query', () => m.events(/** @type {any} */ ({ requestID: 'r1' })), InvalidArgumentError],
        ['exportCsv python names', () => m.exportCsv(/** @type {any} */ ({ since: 0, until: 1, scope: 'user:x' })), InvalidArgumentError],
        ['exportJsonl misspelt scope', () => m.exportJsonl(/** @type {any} */ ({ scopes: 'user:x' })), InvalidArgumentError],
        ['aggregate misspelt query', () => m.aggregate(/** @type {any} */ ({ form: 0 })), InvalidArgumentError],
        ['aggregate misspelt groupBy', () => m.aggregate({}, /** @type {any} */ ({ models: true })), InvalidArgumentError],
      ];
      for (const [name, call, cls] of cases) {
        const p = call();
        assert.ok(p instanceof Promise, `${name}: returns a Promise (never throws synchronously)`);
        await assert.rejects(p, (/** @type {any} */ e) => {
          assert.ok(e instanceof cls, `${name}: expected ${cls.name}, got ${e?.constructor?.name}: ${e?.message}`);
          assert.ok(e instanceof BudgetError);
          assert.equal(typeof e.code, 'string');
          return true;
        }, name);
      }
      const after = { status: await m.status('user:x'), events: (await m.events()).length, limits: await m.limits() };
      assert.deepEqual(after, before, 'no state change');
      m.close();
    });
  });
}

test('bad options of the constructor throw typed errors', () => {
  assert.throws(() => new BudgetManager(/** @type {any} */ ({ store: 42 })), InvalidArgumentError);
  assert.throws(() => new BudgetManager({ store: 'bogus://x' }), BudgetError);
  assert.throws(() => new BudgetManager({ store: 'memory', limits: /** @type {any} */ ('x') }), InvalidArgumentError);
  assert.throws(() => new BudgetManager({ store: 'memory', buffer: 0.9 }), InvalidArgumentError);
  assert.throws(() => new BudgetManager({ store: 'memory', pricing: /** @type {any} */ ({}) }), InvalidArgumentError);
  assert.throws(() => new BudgetManager({ store: 'memory', defaultTtlMs: NaN }), InvalidArgumentError);
  assert.throws(() => new BudgetManager(/** @type {any} */ ('memory')), InvalidArgumentError);
});

test('a misspelt option or limit field is an error, not a manager without that setting', async () => {
  /** @type {any[]} */
  const typos = [
    { store: 'memory', limit: [{ scope: 'user:*', window: 'day', amount: '1' }] },  // limits
    { store: 'memory', failopen: true },
    { store: 'memory', storeOptions: { timeout: 100 } },  // timeoutMs
    { store: 'memory', limits: [{ scope: 'user:*', window: 'minute', amount: 60, metrics: 'requests' }] },  // metric
    { store: 'memory', limits: [{ scope: 'user:*', window: 'day', amount: '10', alert: [50] }] },  // alerts
  ];
  for (const o of typos) {
    assert.throws(() => new BudgetManager(o), (/** @type {any} */ e) => e instanceof InvalidArgumentError && /unknown/.test(e.message),
      JSON.stringify(o));
    await assert.rejects(BudgetManager.open(o), InvalidArgumentError);
  }
  const m = new BudgetManager({ store: 'memory' });
  await assert.rejects(m.setLimit(/** @type {any} */ ({ scope: 'user:*', window: 'day', amount: '1', metrics: 'tokens' })),
    InvalidArgumentError);
  assert.deepEqual(await m.limits(), []);
  // a Limit read back (it carries `key`) may be set again as it is
  const a = new BudgetManager({ store: 'memory', limits: [{ scope: 'user:*', window: 'day', amount: '1', alerts: [50] }] });
  for (const l of await a.limits()) await m.setLimit(l);
  assert.deepEqual(await m.limits(), await a.limits());
  a.close();
  m.close();
});

test('sync computations throw typed errors on bad input', () => {
  const p = new PricingEngine();
  p.setPrice('m-1', { input: '0.000001', output: '0.000002' });
  assert.throws(() => p.cost('m-1', { inputTokens: -1 }), InvalidArgumentError);
  assert.throws(() => p.cost('zzz', { inputTokens: 1 }), UnknownModelError);
  assert.throws(() => p.cost('m-1', /** @type {any} */ ({ prompt_tokens: 1000 })), InvalidArgumentError);
  assert.throws(() => p.cost('m-1', /** @type {any} */ ({ inputTokens: 10, output_tokens: 1000 }), { tier: 'batch' }), InvalidArgumentError);
  assert.equal(p.cost('m-1', { inputTokens: 10, outputTokens: undefined, complete: true }), 10_000n);
  assert.throws(() => p.setPrice('m-2', { input: 'cheap' }), InvalidArgumentError);
  assert.throws(() => p.setPrice('m-2', { input: NaN }), InvalidArgumentError);
  const size = p.size;
  assert.throws(() => p.loadLitellm('{"gpt-x": {"input_cost_per_token": '), InvalidArgumentError);
  assert.equal(p.size, size, 'the previous table stays');
  assert.throws(() => usageFromResponse('openai-chat', '{"usage": {"prompt_tokens": '), InvalidArgumentError);
  assert.throws(() => usageFromResponse('openai-chat', '{"usage": {"prompt_tokens": -4}}'), InvalidArgumentError);
  assert.throws(() => usageFromResponse(/** @type {any} */ ('carrier-pigeon'), '{}'), InvalidArgumentError);
  // parsed objects that JSON cannot represent: typed errors too (a TypeError before)
  /** @type {any} */
  const cyclic = { usage: {} };
  cyclic.usage.self = cyclic;
  assert.throws(() => usageFromResponse('openai-chat', { usage: { prompt_tokens: 1n } }), InvalidArgumentError);
  assert.throws(() => usageFromResponse('openai-chat', cyclic), InvalidArgumentError);
  assert.throws(() => new StreamUsage('openai-chat').feedEvent(cyclic), InvalidArgumentError);
  assert.throws(() => p.loadLitellm({ 'gpt-x': { input_cost_per_token: 1n } }), InvalidArgumentError);
  assert.equal(p.size, size, 'the previous table stays');
  assert.throws(() => new StreamUsage(/** @type {any} */ ('nope')), InvalidArgumentError);
  assert.throws(() => toNanos(/** @type {any} */ ({})), InvalidArgumentError);
  assert.throws(() => toNanos(2n ** 63n), OverflowError);
  assert.equal(toNanos(2n ** 63n - 1n), 2n ** 63n - 1n);
});
