// @ts-check
// Many concurrent Promises on one manager: no overspend, exactly-once by request id.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { BudgetManager, ManualClock } from 'libbudget';
import { storeKinds, freshUrl, T0, usd, findStatus } from './helpers.mjs';

for (const kind of storeKinds()) {
  describe(`store=${kind}`, () => {
    test('200 concurrent reserves against a $10 limit: exactly 100 holds of $0.10', async () => {
      const m = new BudgetManager({ store: freshUrl(kind), clock: new ManualClock(T0),
        limits: [{ scope: 'user:z', window: 'day', amount: '10' }] });
      const decisions = await Promise.all(Array.from({ length: 200 }, (_, i) =>
        m.reserve(['tenant:t', 'user:z'], '0.10', { requestId: `c${i}` })));
      const allowed = decisions.filter((d) => d.allowed);
      assert.equal(allowed.length, 100);
      assert.ok(decisions.filter((d) => !d.allowed).every((d) => d.denial?.scope === 'user:z' && !d.denial.hard));
      assert.equal(findStatus(await m.status('user:z'), 'day').held, usd('10'));
      const receipts = await Promise.all(allowed.map((d) => m.commit(/** @type {any} */ (d.reservation), '0.05')));
      assert.ok(receipts.every((r) => r.charged === usd('0.05')));
      const st = findStatus(await m.status('user:z'), 'day');
      assert.equal(st.spent, usd('5'));
      assert.equal(st.held, 0n);
      // Concurrent consumes on one reservation are serialised.
      const d = await m.reserve('user:z', '1', { requestId: 'stream' });
      const res = /** @type {any} */ (d.reservation);
      const results = await Promise.all(Array.from({ length: 50 }, () => m.consume(res, '0.01')));
      assert.ok(results.every((r) => r.verdict === 'continue'));
      const rc = await m.commit(res, '0.50');
      assert.equal(rc.charged, usd('0.50'));
      assert.equal((await m.verify()).ok, true);
      m.close();
    });

    test('the same request id fired 50 times concurrently holds once', async () => {
      const m = new BudgetManager({ store: freshUrl(kind), clock: new ManualClock(T0),
        limits: [{ scope: 'user:y', window: 'day', amount: '10' }] });
      const ds = await Promise.all(Array.from({ length: 50 }, () => m.reserve('user:y', '1', { requestId: 'dup' })));
      assert.ok(ds.every((d) => d.allowed));
      assert.equal(ds.filter((d) => !d.replayed).length, 1);
      assert.equal(findStatus(await m.status('user:y'), 'day').held, usd('1'));
      const rs = await Promise.all(Array.from({ length: 20 }, () => m.commit('dup', '0.7')));
      assert.equal(rs.filter((r) => !r.replayed).length, 1);
      assert.equal(findStatus(await m.status('user:y'), 'day').spent, usd('0.7'));
      m.close();
    });
  });
}
