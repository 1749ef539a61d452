// @ts-check
// Many concurrent Promises on one manager: no overspend, exactly-once by request id.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { BudgetManager, ManualClock, PricingEngine } from 'libbudget';
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

test('worker threads: each thread has its own fast-path buffers; a shared SQLite store stays exact', async () => {
  const { Worker } = await import('node:worker_threads');
  const url = freshUrl('sqlite');
  const code = `
    const { workerData, parentPort } = require('node:worker_threads');
    const { BudgetManager, PricingEngine } = require(${JSON.stringify(new URL('..', import.meta.url).pathname)});
    (async () => {
      const p = new PricingEngine();
      p.setPrice('m-1', { input: '0.000001', output: '0.000002' });
      const mem = new BudgetManager({ store: 'memory', pricing: p });
      const sq = new BudgetManager({ store: workerData.url, pricing: p });
      let costs = 0n;
      for (let i = 0; i < 300; i++) {
        costs += p.cost('m-1', { inputTokens: 10 + workerData.id, outputTokens: i });
        const d = await mem.reserve(['tenant:w', 'user:' + workerData.id], { model: 'm-1', usage: { inputTokens: 10, outputTokens: i } });
        const rc = await mem.commit(d.reservation, { model: 'm-1', usage: { inputTokens: 10 + workerData.id, outputTokens: i } });
        if (rc.charged !== p.cost('m-1', { inputTokens: 10 + workerData.id, outputTokens: i })) throw new Error('wrong charge');
        if (i % 10 === 0) await sq.record('user:shared', 1000n, { requestId: 'w' + workerData.id + '-' + i });
      }
      mem.close(); sq.close();
      parentPort.postMessage(String(costs));
    })().catch((e) => { parentPort.postMessage('error: ' + e.stack); });
  `;
  const run = (/** @type {number} */ id) => new Promise((resolve, reject) => {
    const w = new Worker(code, { eval: true, workerData: { id, url } });
    w.once('message', resolve);
    w.once('error', reject);
  });
  const [a, b, c] = await Promise.all([run(1), run(2), run(3)]);
  const p = new PricingEngine();
  p.setPrice('m-1', { input: '0.000001', output: '0.000002' });
  for (const [id, got] of [[1, a], [2, b], [3, c]]) {
    let want = 0n;
    for (let i = 0; i < 300; i++) want += p.cost('m-1', { inputTokens: 10 + /** @type {number} */ (id), outputTokens: i });
    assert.equal(got, String(want), `worker ${id}`);
  }
  const m = new BudgetManager({ store: url });
  const ev = await m.events({ scope: 'user:shared', type: 'record' });
  assert.equal(ev.length, 90);
  assert.equal(new Set(ev.map((e) => e.requestId)).size, 90);
  assert.equal((await m.verify()).ok, true);
  m.close();
});
