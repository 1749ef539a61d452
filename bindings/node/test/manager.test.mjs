// @ts-check
// The Promise API over every configured store: lifecycle, denials, idempotency, status,
// corrections, windows, expiry, alerts on the JS thread, ledger.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  BudgetManager, ManualClock, PricingEngine, BudgetExceededError, BudgetError, ConflictError, NotFoundError,
  InvalidArgumentError, toNanos, formatMoney,
} from 'libbudget';
import { storeKinds, freshUrl, T0, usd, findStatus, waitFor } from './helpers.mjs';

for (const kind of storeKinds()) {
  describe(`store=${kind}`, () => {
    /** @param {Partial<import('libbudget').BudgetManagerOptions>} [o] */
    function make(o = {}) {
      const clock = new ManualClock(T0);
      const m = new BudgetManager({ store: freshUrl(kind), clock, ...o });
      return { m, clock };
    }

    test('reserve, commit, status: the hold is replaced by the actual cost', async () => {
      const { m } = make({ limits: [{ scope: 'user:*', window: 'day', amount: '10.00' }] });
      const d = await m.reserve(['tenant:acme', 'user:alice'], '2.50', { requestId: 'r1' });
      assert.equal(d.allowed, true);
      assert.ok(d.reservation);
      assert.equal(d.reservation.requestId, 'r1');
      assert.deepEqual(d.reservation.subject, ['global', 'tenant:acme', 'user:alice']);
      assert.equal(d.reservation.held, usd('2.50'));
      let st = findStatus(await m.status('user:alice'), 'day');
      assert.equal(st.held, usd('2.50'));
      assert.equal(st.limit, usd('10'));
      const rc = await m.commit(d.reservation, '1.25');
      assert.equal(rc.charged, usd('1.25'));
      assert.equal(rc.released, usd('1.25'));
      assert.equal(rc.overLimit, false);
      st = findStatus(await m.status('user:alice'), 'day');
      assert.equal(st.spent, usd('1.25'));
      assert.equal(st.held, 0n);
      assert.equal(st.remaining, usd('8.75'));
      assert.ok(st.resetsAt instanceof Date);
      assert.equal(st.resetsAt?.toISOString(), '2026-03-11T00:00:00.000Z');
      m.close();
    });

    test('a request id given beside other options is the reservation\'s request id', async () => {
      const pricing = new PricingEngine();
      pricing.setPrice('m-1', { input: '0.000001', output: '0.000002' });
      const { m } = make({ pricing });
      /** @type {[import('libbudget').EstimateInput, import('libbudget').RequestOptions][]} */
      const cases = [
        ['1', { requestId: 'o-buffer', buffer: 1.2 }],
        ['1', { requestId: 'o-ttl', ttlMs: 60_000 }],
        ['1', { requestId: 'o-meta', metadata: { k: 'v' } }],
        [{ model: 'm-1', usage: { inputTokens: 10 } }, { requestId: 'o-priced', provider: 'acme' }],
      ];
      for (const [estimate, options] of cases) {
        const d = await m.reserve(['user:a'], estimate, options);
        assert.equal(d.reservation?.requestId, options.requestId);
        const rc = await m.commit(/** @type {string} */ (d.reservation?.requestId), '0.5');  // by id, as another process would
        assert.equal(rc.requestId, options.requestId);
        assert.equal(rc.charged, usd('0.5'));
      }
      m.close();
    });

    test('a denial is a result, not a throw; hard cap vs held headroom', async () => {
      const { m } = make({ limits: [{ scope: 'user:bob', window: 'day', amount: '1.00' }] });
      const a = await m.reserve('user:bob', '0.80');
      assert.equal(a.allowed, true);
      // Room is taken by an in-flight hold: soft (429).
      const b = await m.reserve('user:bob', '0.50');
      assert.equal(b.allowed, false);
      assert.ok(b.denial);
      assert.equal(b.denial.scope, 'user:bob');
      assert.equal(b.denial.window, 'day');
      assert.equal(b.denial.hard, false);
      assert.equal(b.denial.limit, usd('1'));
      assert.equal(b.denial.held, usd('0.80'));
      assert.equal(b.denial.requested, usd('0.50'));
      assert.equal(b.reservation, null);
      await m.commit(/** @type {any} */ (a.reservation), '0.90');
      // Spend alone leaves no room: hard (402).
      const c = await m.reserve('user:bob', '0.50');
      assert.equal(c.allowed, false);
      assert.equal(c.denial?.hard, true);
      // The raising convenience.
      await assert.rejects(m.reserveOrThrow('user:bob', '0.50'), (e) => {
        assert.ok(e instanceof BudgetExceededError);
        assert.ok(e instanceof BudgetError);
        assert.equal(e.code, 'BUDGET_EXCEEDED');
        assert.equal(e.hard, true);
        assert.equal(e.scope, 'user:bob');
        return true;
      });
      await assert.rejects(m.checkOrThrow('user:bob', '0.50'), BudgetExceededError);
      m.close();
    });

    test('idempotency: same request id returns the first result; a different amount conflicts', async () => {
      const { m } = make({ limits: [{ scope: 'user:carol', window: 'total', amount: '100' }] });
      const a = await m.reserve('user:carol', '1.00', { requestId: 'same' });
      const b = await m.reserve('user:carol', '1.00', { requestId: 'same' });
      assert.equal(b.replayed, true);
      assert.equal(findStatus(await m.status('user:carol'), 'total').held, usd('1.00'));
      const r1 = await m.commit('same', '0.40');
      const r2 = await m.commit(/** @type {any} */ (a.reservation), '0.40');
      assert.equal(r2.replayed, true);
      assert.equal(r1.charged, r2.charged);
      await assert.rejects(m.commit('same', '0.50'), ConflictError);
      await assert.rejects(m.commit('no-such-id', '0.50'), NotFoundError);
      m.close();
    });

    test('release voids the hold; check holds nothing; record charges directly', async () => {
      const { m } = make({ limits: [{ scope: 'user:*', window: 'day', amount: '5' }] });
      const d = await m.reserve('user:dan', '3');
      const rel = await m.release(/** @type {any} */ (d.reservation));
      assert.equal(rel.charged, 0n);
      assert.equal(rel.released, usd('3'));
      const chk = await m.check('user:dan', '4.99');
      assert.equal(chk.allowed, true);
      assert.equal(chk.reservation, null);
      const chk2 = await m.check('user:dan', '5.01');
      assert.equal(chk2.allowed, false);
      const rc = await m.record('user:dan', 4.5, { requestId: 'rec1' });
      assert.equal(rc.charged, usd('4.5'));
      const st = findStatus(await m.status('user:dan'), 'day');
      assert.equal(st.spent, usd('4.5'));
      assert.equal(st.held, 0n);
      m.close();
    });

    test('consume grows the hold and answers stop when no scope can grow it', async () => {
      const { m } = make({ limits: [{ scope: 'user:eve', window: 'day', amount: '1.00' }] });
      const d = await m.reserve('user:eve', '0.10');
      const res = /** @type {import('libbudget').Reservation} */ (d.reservation);
      let r = await m.consume(res, '0.05');
      assert.equal(r.verdict, 'continue');
      assert.equal(r.consumed, usd('0.05'));
      r = await m.consume(res, '0.30');
      assert.equal(r.verdict, 'continue');
      assert.ok(r.held >= usd('0.35'));
      r = await m.consume(res, '0.80');
      assert.equal(r.verdict, 'stop');
      assert.equal(r.denial?.scope, 'user:eve');
      const rc = await m.commit(res, '1.15');
      assert.equal(rc.overLimit, true);
      assert.deepEqual(rc.overLimitScopes, ['user:eve']);
      assert.equal(findStatus(await m.status('user:eve'), 'day').spent, usd('1.15'));
      m.close();
    });

    test('consume by request id (another process holds the Reservation object)', async () => {
      const { m } = make();
      const d = await m.reserve('user:frank', '1', { requestId: 'stream-1' });
      assert.ok(d.allowed);
      const r = await m.consume('stream-1', '0.25', 10);
      assert.equal(r.verdict, 'continue');
      const rc = await m.commit('stream-1', { cost: '0.30', tokens: 12 });
      assert.equal(rc.charged, usd('0.30'));
      assert.equal(rc.tokens, 12);
      m.close();
    });

    test('grant raises a total limit; adjust corrects spend; limits CRUD', async () => {
      const { m } = make({ limits: [{ scope: 'tenant:acme', window: 'total', amount: '10' }] });
      await m.record('tenant:acme', '9');
      assert.equal((await m.check('tenant:acme', '2')).allowed, false);
      await m.grant('tenant:acme', '5', { reason: 'top-up', requestId: 'g1' });
      const st = findStatus(await m.status('tenant:acme'), 'total');
      assert.equal(st.limit, usd('15'));
      assert.equal(st.granted, usd('5'));
      assert.equal((await m.check('tenant:acme', '2')).allowed, true);
      await m.adjust('tenant:acme', '-1.5', { reason: 'refund' });
      assert.equal(findStatus(await m.status('tenant:acme'), 'total').spent, usd('7.5'));
      await m.setLimit({ scope: 'user:*', window: 'rolling:1h', amount: 100, metric: 'requests', alerts: [50] });
      const limits = await m.limits();
      const rl = limits.find((l) => l.metric === 'requests');
      assert.ok(rl);
      assert.equal(rl.window, 'rolling:1h');
      assert.equal(rl.amount, 100n);
      assert.deepEqual(rl.alerts, [50]);
      assert.equal(await m.removeLimit('user:*', 'requests', 'rolling:1h'), true);
      assert.equal(await m.removeLimit('user:*', 'requests', 'rolling:1h'), false);
      m.close();
    });

    test('token and request limits (rate limits) deny softly', async () => {
      const { m } = make({ limits: [{ scope: 'key:k1', window: 'minute', amount: 2, metric: 'requests' }] });
      assert.equal((await m.reserve('key:k1', { cost: '0.01', tokens: 10 })).allowed, true);
      assert.equal((await m.reserve('key:k1', '0.01')).allowed, true);
      const d = await m.reserve('key:k1', '0.01');
      assert.equal(d.allowed, false);
      assert.equal(d.denial?.metric, 'requests');
      assert.equal(d.denial?.window, 'minute');
      assert.ok(d.denial?.resetsAt instanceof Date);
      m.close();
    });

    test('calendar windows follow an IANA time zone (a 23-hour DST day in Paris)', async () => {
      const { m, clock } = make({ timeZone: 'Europe/Paris', limits: [{ scope: 'user:*', window: 'day', amount: '1' }] });
      clock.set(Date.UTC(2026, 2, 29, 0, 0));  // 01:00 in Paris
      await m.record('user:paris', '1');
      const d = await m.check('user:paris', '0.01');
      assert.equal(d.allowed, false);
      assert.equal(d.denial?.resetsAt?.toISOString(), '2026-03-29T22:00:00.000Z');
      m.close();
      assert.throws(() => new BudgetManager({ store: 'memory', timeZone: 'Mars/Olympus' }), BudgetError);
    });

    test('calendar windows reset with the (manual) clock; holds expire after their TTL', async () => {
      const { m, clock } = make({ limits: [{ scope: 'user:gina', window: 'day', amount: '1' }] });
      await m.record('user:gina', '1');
      assert.equal((await m.check('user:gina', '0.01')).allowed, false);
      clock.advance(24 * 3600 * 1000);
      assert.equal((await m.check('user:gina', '0.01')).allowed, true);
      const d = await m.reserve('user:gina', '0.5', { ttlMs: 1000 });
      assert.ok(d.allowed);
      await m.consume(/** @type {any} */ (d.reservation), '0.2');
      clock.advance(5000);
      assert.equal(await m.expireHolds(), 1);
      const st = findStatus(await m.status('user:gina'), 'day');
      assert.equal(st.held, 0n);
      assert.ok(st.spent >= 0n);
      m.close();
    });

    test('alerts and denials are delivered on the JS thread', async () => {
      /** @type {import('libbudget').Alert[]} */
      const alerts = [];
      /** @type {string[][]} */
      const denied = [];
      const { m } = make({
        limits: [{ scope: 'user:hal', window: 'day', amount: '10', alerts: [50, 80, 100] }],
        onAlert: (a) => alerts.push(a),
        onDenial: (_d, subject) => denied.push(subject),
      });
      await m.record('user:hal', '6');
      await m.record('user:hal', '3');
      await m.reserve('user:hal', '5');
      await waitFor(() => alerts.length >= 2 && denied.length >= 1);
      await new Promise((r) => setTimeout(r, 20));  // nothing more arrives
      assert.deepEqual(alerts.map((a) => a.thresholdPct).sort((x, y) => x - y), [50, 80]);
      assert.equal(alerts[0].scope, 'user:hal');
      assert.equal(alerts[0].limit, usd('10'));
      assert.equal(denied.length, 1);
      assert.deepEqual(denied[0], ['global', 'user:hal']);
      m.close();
    });

    test('a stream refused by a limit (Stop) is reported to onDenial once', async () => {
      /** @type {[string, string[]][]} */
      const denied = [];
      const { m } = make({
        limits: [{ scope: 'user:*', window: 'day', amount: '1' }],
        onDenial: (d, subject) => denied.push([d.scope, subject]),
      });
      const d = await m.reserve(['tenant:t', 'user:st'], '0.5');
      assert.ok(d.allowed);
      assert.equal((await m.consume(d.reservation, '0.4')).verdict, 'continue');
      const refused = await m.consume(d.reservation, '0.7');  // 1.1 > 1: cannot grow
      assert.equal(refused.verdict, 'stop');
      assert.equal(refused.denial?.reason, 'limit_exceeded');
      assert.equal((await m.consume(d.reservation, '0.1')).verdict, 'stop');  // still stopped: not again
      await m.commit(d.reservation, '1.1');
      assert.equal((await m.consume(d.reservation, '0.1')).verdict, 'stop');  // settled: no budget denial
      // A hold committed while its stream ran: Stop, reason not_held (no limit refused it).
      const other = (await m.reserve('user:st3', '0.1')).reservation;
      assert.ok(other);
      await m.commit(other, '0.05');
      const settled = await m.consume(other, '0.01');
      assert.equal(settled.verdict, 'stop');
      assert.equal(settled.denial?.reason, 'not_held');
      assert.equal(settled.denial?.scope, '');
      await m.reserve('user:st2', '0.5', { requestId: 'st-2' });
      assert.equal((await m.consume('st-2', '2')).verdict, 'stop');  // by request id
      await waitFor(() => denied.length >= 2);
      await new Promise((r) => setTimeout(r, 20));  // nothing more arrives
      assert.deepEqual(denied, [['user:st', ['global', 'tenant:t', 'user:st']], ['user:st2', ['global', 'user:st2']]]);
      m.close();
    });

    test('callbacks removed (null) or added: operations still succeed; every registered callback is called', async () => {
      const { m } = make({ limits: [{ scope: 'user:*', window: 'day', amount: '10', alerts: [20, 40, 60] }] });
      /** @type {string[]} */
      const calls = [];
      m.onAlert((a) => calls.push(`first ${a.thresholdPct}`));
      m.onAlert(null);
      m.onDenial(() => calls.push('first denial'));
      m.onDenial(null);
      const rc = await m.record('user:a', '2', { requestId: 'cross-20' });  // crosses 20% with no callback
      assert.equal(rc.charged, usd('2'));
      const d = await m.reserve('user:a', '50');  // denied with no callback
      assert.equal(d.allowed, false);
      m.onAlert((a) => calls.push(`second ${a.thresholdPct}`));
      m.onAlert((a) => calls.push(`third ${a.thresholdPct}`));
      m.onDenial(() => calls.push('second denial'));
      await m.record('user:a', '2');  // crosses 40%
      assert.equal((await m.reserve('user:a', '50')).allowed, false);
      assert.ok(await waitFor(() => calls.length >= 3));
      await new Promise((r) => setTimeout(r, 20));  // nothing more arrives
      assert.deepEqual(calls.sort(), ['second 40', 'second denial', 'third 40']);  // added, not replaced
      assert.equal(findStatus(await m.status('user:a'), 'day').spent, usd('4'));
      m.close();
    });

    test('close() with operations in flight that cross thresholds and are denied: they all succeed', async () => {
      const { m } = make({ offload: true, limits: [{ scope: 'user:*', window: 'day', amount: '1', alerts: [10, 20, 30, 40, 50, 60, 70, 80, 90] }],
        onAlert: () => {}, onDenial: () => {} });
      /** @type {Promise<string>[]} */
      const ps = [];
      for (let i = 0; i < 100; i++) ps.push(m.record('user:a', '0.01').then(() => 'ok', (e) => `${e.name}: ${e.message}`));
      for (let i = 0; i < 20; i++) ps.push(m.reserve('user:a', '5').then((d) => (d.allowed ? 'allowed?' : 'ok'), (e) => `${e.name}: ${e.message}`));
      m.close();  // in-flight calls finish; their callbacks are dropped
      const out = await Promise.all(ps);
      assert.deepEqual(out.filter((x) => x !== 'ok'), []);
    });

    test('ledger: events, JSONL/CSV export, aggregate, verify', async () => {
      const pricing = new PricingEngine();
      pricing.setPrice('m-1', { provider: 'acme', input: '0.000001', output: '0.000002' });
      const { m } = make({ pricing });
      const d = await m.reserve('user:ivy', { model: 'm-1', usage: { inputTokens: 1000, outputTokens: 500 } },
        { requestId: 'L1', metadata: { route: 'chat', attempt: 1 } });
      assert.equal(d.estimate, usd('0.002'));
      const rc = await m.commit('L1', { model: 'm-1', usage: { inputTokens: 1000, outputTokens: 250 }, provider: 'acme' });
      assert.equal(rc.charged, usd('0.0015'));
      assert.equal(rc.items.length >= 2, true);
      assert.equal(rc.items[0].unitPrice.length > 0, true);
      const ev = await m.events({ requestId: 'L1' });
      assert.deepEqual(ev.map((e) => e.type), ['reserve', 'commit']);
      assert.equal(ev[1].spent.cost, usd('0.0015'));
      assert.equal(ev[1].usage?.outputTokens, 250);
      assert.ok(ev[1].hash.length === 64 && ev[1].prevHash === ev[0].hash);
      assert.match(ev[0].metadata, /route/);
      const jsonl = await m.exportJsonl({ scope: 'user:ivy' });
      assert.equal(jsonl.trim().split('\n').length, 2);
      const csv = await m.exportCsv();
      assert.ok(csv.split('\n').length >= 3);
      const agg = await m.aggregate({}, { model: true });
      assert.equal(agg.find((r) => r.model === 'm-1')?.spent, usd('0.0015'));
      const v = await m.verify();
      assert.equal(v.ok, true, v.problems.join('; '));
      assert.match(m.metricsText(), /# TYPE/);
      m.close();
    });

    test('BudgetManager.open() opens the store off the main thread; close() rejects later calls', async () => {
      const m = await BudgetManager.open({ store: freshUrl(kind), limits: [{ scope: 'global', window: 'month', amount: 100 }] });
      assert.equal((await m.reserve([], '1')).allowed, true);
      m.close();
      await assert.rejects(m.reserve([], '1'), InvalidArgumentError);
    });
  });
}

test('money helpers are exact', () => {
  assert.equal(toNanos('12.50'), 12_500_000_000n);
  assert.equal(toNanos(0.1), 100_000_000n);
  assert.equal(toNanos(1e-7), 100n);
  assert.equal(toNanos(150n), 150n);
  assert.equal(formatMoney(12_500_000_000n), '12.50');
  assert.equal(formatMoney(150n), '0.00000015');
  assert.equal(formatMoney('-3'), '-3.00');
});

test('memory store: inline execution (the default) and offload: true answer alike, errors included', async () => {
  const usage = { inputTokens: 1000, outputTokens: 100 };
  /** @param {boolean | undefined} offload */
  async function scenario(offload) {
    const pricing = new PricingEngine();
    pricing.setPrice('m-1', { provider: 'acme', input: '0.000001', output: '0.000002' });
    pricing.addAlias('m-alias', 'm-1');
    const clock = new ManualClock(T0);
    const m = new BudgetManager({
      store: 'memory', clock, pricing, ...(offload === undefined ? {} : { offload }),
      limits: [{ scope: 'user:*', window: 'day', amount: '1.00' }, { scope: 'key:*', window: 'minute', amount: 100, metric: 'tokens' }],
    });
    /** @type {Record<string, unknown>} */
    const out = {};
    /** @param {Promise<unknown>} p */
    const settle = (p) => p.then((v) => ({ ok: v }), (e) => ({ err: e.constructor.name, code: e.code, message: e.message }));
    const a = await m.reserve(['tenant:a', 'user:a'], '0.30', { requestId: 'a1' });
    out.a = a;
    const b = await m.reserve('user:a', { model: 'm-1', usage });  // a generated id, a priced model
    out.b = b;
    out.bId = /** @type {any} */ (b.reservation).requestId.length > 0;
    out.c = await m.reserve(['user:a', 'global', 'user:a', 'key:k'], { cost: '0.01', tokens: 5 },
      { requestId: 'a3', metadata: { k: 'v' }, ttlMs: 1000 });  // subject normalised, full options
    out.denied = await m.reserve('user:a', '5.00', { requestId: 'a4' });
    out.check = await m.check(['user:a'], '0.01');
    out.checkDenied = await m.check('user:a', '9');
    out.consume = await m.consume(/** @type {any} */ (a.reservation), '0.05', 10);
    out.consumeById = await m.consume('a1', '0.01');
    out.stop = await m.consume(/** @type {any} */ (a.reservation), '3.00');
    out.commit = await m.commit(/** @type {any} */ (a.reservation), { model: 'm-1', usage, provider: 'acme' });
    out.replay = await m.commit('a1', { model: 'm-1', usage, provider: 'acme' });
    out.release = await m.release(/** @type {any} */ (b.reservation));
    out.releaseById = await m.release('a3');
    out.record = await m.record(['user:b'], '2.00', { requestId: 'b1' });
    out.recordPlain = await m.record('user:c', 1n);
    out.recordPriced = await m.record('user:d', { model: 'm-1', usage: { inputTokens: 10n, outputTokens: 3, complete: false }, provider: 'p' });
    out.checkPriced = await m.check('user:d', { model: 'm-1', usage: { inputTokens: 10, outputTokens: 3 } });
    out.pricedCost = await m.reserve('user:e', { model: 'm-1', usage, cost: '0.5' }, { requestId: 'e1' });
    out.pricedTokens = await m.reserve('key:k2', { model: 'm-1', usage, tokens: 7 }, { requestId: 'e2' });
    out.pricedAlias = await m.commit('e1', { model: 'm-alias', usage: { ...usage, reasoningTokens: 10, outputTokens: 20 } });
    out.reserveAlias = await m.reserve('user:f', { model: 'm-alias', usage });
    const receipts = [];
    for (let i = 0; i < 3; i++) {
      receipts.push(await m.record('user:f', { model: 'm-1', usage: { inputTokens: 100 + i, outputTokens: 10, images: i } }));
      pricing.setPrice('m-1', { provider: 'acme', input: `0.00000${i + 2}`, output: '0.000002', perImage: '0.01' });
      clock.advance(1000);
      receipts.push(await m.record('user:f', { model: 'm-1', usage: { inputTokens: 100 + i, outputTokens: 10, images: i } }));
    }
    out.receipts = receipts;
    out.errors = await Promise.all([
      settle(m.commit('nope', '1')),
      settle(m.commit(/** @type {any} */ ({ foo: 1 }), '1')),
      settle(m.reserve(/** @type {any} */ (42), '1')),
      settle(m.reserve('user:a', NaN)),
      settle(m.reserve('user:a', '1', /** @type {any} */ ({ requestId: 7 }))),
      settle(m.reserve('user:a', '1', /** @type {any} */ ([]))),
      settle(m.reserve(['bad scope'], '1')),
      settle(m.consume('a1', -1n)),
      settle(m.record('user:a', '1', { requestId: 'a1' })),
      settle(m.commit(/** @type {any} */ (a.reservation), '0.40')),
      settle(m.reserve('user:a', { model: 'm-1', usage: { inputTokens: -1 } })),
      settle(m.reserve('user:a', { model: 'm-1', usage: { inputTokens: 5, cacheReadTokens: 6 } })),
      settle(m.reserve('user:a', { model: '', usage })),
      settle(m.reserve('user:a', { model: 'nope', usage })),
      settle(m.reserve('user:a', /** @type {any} */ ({ model: 'm-1', usage: { inputTokens: '5' } }))),
      settle(m.commit('e2', /** @type {any} */ ({ model: 'm-1', usage, provider: 5 }))),
      settle(m.record('user:a', /** @type {any} */ ({ model: 'm-1', usage: [] }))),
      settle(m.check('user:a', /** @type {any} */ ({ model: 7, usage }))),
    ]);
    out.status = await m.status('user:a');
    m.close();
    out.closed = await settle(m.reserve('user:a', '1'));
    // Handles are per manager and generated request ids are random: compare the rest.
    return JSON.parse(JSON.stringify(out, (k, v) =>
      k === 'handle' ? 'handle' : typeof v === 'bigint' ? `${v}n` : k === 'requestId' && v !== 'a1' && v !== 'a3' && v !== 'a4' && v !== 'b1' ? 'id' : v));
  }
  const inline = await scenario(undefined);
  const offloaded = await scenario(true);
  assert.deepEqual(inline, offloaded);
  assert.equal(inline.a.reservation.handle, 'handle');
  assert.deepEqual(inline.c.reservation.subject, ['global', 'user:a', 'key:k']);
  assert.equal(inline.b.reservation.model, 'm-1');
  assert.equal(inline.pricedAlias.model, 'm-1');
  assert.equal(inline.reserveAlias.reservation.model, 'm-1');
  assert.equal(new Set(inline.receipts.map((/** @type {any} */ r) => r.priceVersion)).size, 4, 'the price version follows the table');
  assert.ok(inline.receipts.every((/** @type {any} */ r) => r.items.length >= 2 && r.model === 'm-1'));
  assert.ok(inline.commit.items.length > 0);
  assert.equal(inline.stop.verdict, 'stop');
  assert.equal(inline.denied.allowed, false);
  assert.equal(inline.record.overLimit, true);
  assert.equal(inline.errors[0].err, 'NotFoundError');
  assert.equal(inline.errors[2].err, 'InvalidArgumentError');
  assert.equal(inline.closed.err, 'InvalidArgumentError');
});

test('memory store inline: getters that call back into libbudget do not disturb a call', async () => {
  const pricing = new PricingEngine();
  pricing.setPrice('m-1', { input: '0.000001', output: '0.000002' });
  const m = new BudgetManager({ store: 'memory', pricing });
  const plain = { inputTokens: 1000, outputTokens: 100 };
  const price = pricing.cost('m-1', plain);
  let calls = 0;
  const noisy = () => {  // writes every scratch slot the calls under test use
    calls++;
    pricing.cost('m-1', { inputTokens: 999_999, cacheReadTokens: 7, outputTokens: 999_999, requests: 9 }, { at: 0, tier: 'batch' });
    void m.check('user:zz', { model: 'm-1', usage: { inputTokens: 123_456, outputTokens: 1 } });
  };
  const usage = {
    get inputTokens() { noisy(); return 1000; },
    get outputTokens() { noisy(); return 100; },
    get complete() { noisy(); return true; },
  };
  const subject = ['tenant:a'];
  Object.defineProperty(subject, 1, { get() { noisy(); return 'user:a'; }, enumerable: true });
  const d = await m.reserve(subject, { model: 'm-1', usage }, { requestId: 'g1' });
  assert.equal(d.estimate, price);
  assert.deepEqual(d.reservation?.subject, ['global', 'tenant:a', 'user:a']);
  assert.equal(d.reservation?.model, 'm-1');
  const charge = { model: 'm-1', get usage() { noisy(); return usage; }, get provider() { noisy(); return 'p'; } };
  const rc = await m.commit(/** @type {any} */ (d.reservation), charge);
  assert.equal(rc.charged, price);
  assert.equal(rc.model, 'm-1');
  await m.reserve('user:b', 5n, { requestId: 'g2' });
  const byId = { get handle() { noisy(); return undefined; }, get requestId() { noisy(); return 'g2'; } };
  const rc2 = await m.commit(/** @type {any} */ (byId), { model: 'm-1', usage });
  assert.equal(rc2.charged, price);
  assert.equal(rc2.requestId, 'g2');
  const rc3 = await m.record(subject, { model: 'm-1', usage, provider: 'p' }, { requestId: 'g3' });
  assert.equal(rc3.charged, price);
  const opts = { get at() { noisy(); return undefined; }, get tier() { noisy(); return 'standard'; } };
  assert.equal(pricing.cost('m-1', usage, /** @type {any} */ (opts)), price);
  assert.ok(calls > 10);
  m.close();
});

test('memory store inline: a getter may call the same manager while its arguments are read', async () => {
  const m = new BudgetManager({ store: 'memory' });
  // Getters may run more than once (the TS layer reads some values before the addon does);
  // every call, nested or not, must still get its own right answer.
  /** @type {[string[], Promise<import('libbudget').Decision>][]} */
  const nested = [];
  const call = (/** @type {string[]} */ s, /** @type {string[]} */ want) => nested.push([want, m.reserve(s, 1n)]);
  const subject = ['tenant:n'];
  Object.defineProperty(subject, 1, {
    enumerable: true,
    get() {
      call(['user:x', 'user:x', 'global'], ['global', 'user:x']);  // a subject that is not "simple"
      call(['tenant:n', 'user:y'], ['global', 'tenant:n', 'user:y']);  // same length as the outer one
      return 'user:n';
    },
  });
  const estimate = { get cost() { call(['user:z'], ['global', 'user:z']); return 3n; } };
  const d = await m.reserve(subject, estimate, { requestId: 'outer' });
  assert.deepEqual(d.reservation?.subject, ['global', 'tenant:n', 'user:n']);
  assert.equal(d.reservation?.held, 3n);
  assert.ok(nested.length >= 3);
  for (const [want, p] of nested) assert.deepEqual((await p).reservation?.subject, want);
  // The cache still answers right afterwards.
  assert.deepEqual((await m.reserve(['tenant:n', 'user:y'], 1n)).reservation?.subject, ['global', 'tenant:n', 'user:y']);
  assert.deepEqual((await m.reserve(['user:x', 'user:x'], 1n)).reservation?.subject, ['global', 'user:x']);
  const rc = await m.commit(/** @type {any} */ (d.reservation), 3n);
  assert.equal(rc.requestId, 'outer');
  m.close();
});

test('memory store inline: close() from a getter of an argument; the call completes, later calls reject', async () => {
  const m = new BudgetManager({ store: 'memory' });
  const subject = ['tenant:c'];
  Object.defineProperty(subject, 1, { enumerable: true, get() { m.close(); return 'user:c'; } });
  const d = await m.reserve(subject, 1n, { requestId: 'c1' });  // the addon reads the subject
  assert.equal(d.allowed, true);
  assert.deepEqual(d.reservation?.subject, ['global', 'tenant:c', 'user:c']);
  await assert.rejects(m.reserve('user:c', 1n), InvalidArgumentError);
  await assert.rejects(m.commit(/** @type {any} */ (d.reservation), 1n), InvalidArgumentError);
});

test('a store outage (fail-closed) raises StoreUnavailableError from the raising conveniences and the stream guards', {
  skip: storeKinds().includes('redis') ? false : 'needs redis (BUDGET_TEST_STORES)',
}, async () => {
  const { spawn } = await import('node:child_process');
  const net = await import('node:net');
  const { StoreUnavailableError, guardStream } = await import('libbudget');
  const port = await new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => { const p = /** @type {any} */ (s.address()).port; s.close(() => resolve(p)); });
  });
  const server = spawn(process.env.REDIS_SERVER || 'redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' });
  try {
    const pricing = new PricingEngine();
    pricing.setPrice('m-1', { input: '0.000001', output: '0.000002' });
    /** @type {BudgetManager | undefined} */
    let m;
    for (let i = 0; i < 100 && !m; i++) {
      try { m = new BudgetManager({ store: `redis://127.0.0.1:${port}/0`, storeOptions: { timeoutMs: 500 }, pricing }); } catch { await new Promise((r) => setTimeout(r, 50)); }
    }
    assert.ok(m, 'redis-server started');
    assert.equal((await m.reserve('user:a', '1')).allowed, true);
    server.kill('SIGKILL');
    await new Promise((r) => server.once('exit', r));
    const d = await m.reserve('user:a', '1');  // a plain reserve: a denial result, as before
    assert.equal(d.allowed, false);
    assert.equal(d.denial?.reason, 'store_unavailable');
    /** @param {unknown} e */
    const outage = (e) => e instanceof StoreUnavailableError && /** @type {any} */ (e).code === 'STORE_UNAVAILABLE';
    await assert.rejects(m.reserveOrThrow('user:a', '1', { requestId: 'o1' }), outage);
    await assert.rejects(m.checkOrThrow('user:a', '1'), outage);
    let called = false;
    await assert.rejects(guardStream(m, 'openai-chat', { subject: 'user:a' }, { model: 'm-1' }, () => { called = true; return (async function* () {})(); }), outage);
    assert.equal(called, false);
    m.close();
  } finally {
    server.kill('SIGKILL');
  }
});
