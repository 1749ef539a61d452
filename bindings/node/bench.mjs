// @ts-check
// Benchmark: per-call overhead of the Node binding vs the same C++ calls in the same run,
// and reserve+commit lifecycles per second on the memory and SQLite stores.
//   node bench.mjs            (after `npm run build`; BENCH_SCALE=0.2 for a quick run)
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BudgetManager, PricingEngine, StreamUsage, toNanos } from 'libbudget';

const scale = Number(process.env.BENCH_SCALE ?? 1);
const N = (/** @type {number} */ n) => Math.max(10, Math.round(n * scale));
const ns = () => process.hrtime.bigint();
/** @param {bigint} t0 @param {number} n */
const per = (t0, n) => Number(ns() - t0) / n;
const fmt = (/** @type {number} */ x) => (x >= 1000 ? `${(x / 1000).toFixed(2)} µs` : `${x.toFixed(0)} ns`);
const rate = (/** @type {number} */ perNs) => `${Math.round(1e9 / perNs).toLocaleString('en-US')}/s`;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'libbudget-bench-'));
const limits = [{ scope: 'user:*', window: 'day', amount: '1000000' }, { scope: 'global', window: 'month', amount: '100000000' }];
const subject = ['tenant:acme', 'user:alice'];
/** @type {[string, string][]} */
const rows = [];
const row = (/** @type {string} */ k, /** @type {string} */ v) => { rows.push([k, v]); console.log(`${k.padEnd(58)} ${v}`); };

/** @param {BudgetManager} m @param {number} n @param {string} tag */
async function lifecycles(m, n, tag) {
  const t0 = ns();
  for (let i = 0; i < n; i++) {
    const d = await m.reserve(subject, 1000n, { requestId: `${tag}${i}` });
    if (d.reservation) await m.commit(d.reservation, 900n);
  }
  return per(t0, n);
}
/** @param {BudgetManager} m @param {number} n @param {number} width @param {string} tag */
async function concurrent(m, n, width, tag) {
  const t0 = ns();
  for (let i = 0; i < n; i += width) {
    await Promise.all(Array.from({ length: Math.min(width, n - i) }, async (_, j) => {
      const d = await m.reserve(subject, 1000n, { requestId: `${tag}${i + j}` });
      if (d.reservation) await m.commit(d.reservation, 900n);
    }));
  }
  return per(t0, n);
}

console.log(`libbudget Node binding benchmark (node ${process.version}, ${os.cpus().length} cpus, scale ${scale})\n`);

// ---- memory store: JS vs C++ in the same run ------------------------------------------------
{
  const m = new BudgetManager({ store: 'memory', limits });
  const n = N(50_000);
  await lifecycles(m, N(5000), 'warm');  // warm-up
  m.native.benchLoop(subject, 1000n, N(5000), 'cwarm');
  const cpp = m.native.benchLoop(subject, 1000n, n, 'cpp') / n;
  const js = await lifecycles(m, n, 'js');
  row('memory: C++ reserve+commit (same manager, tight loop)', `${fmt(cpp)} / lifecycle  (${rate(cpp)})`);
  row('memory: Node await reserve + await commit', `${fmt(js)} / lifecycle  (${rate(js)})`);
  row('memory: binding overhead per async call ((node - C++) / 2)', fmt((js - cpp) / 2));
  const conc = await concurrent(m, n, 64, 'cc');
  row('memory: Node, 64 lifecycles in flight', `${fmt(conc)} / lifecycle  (${rate(conc)})`);
  const off = new BudgetManager({ store: 'memory', limits, offload: true });
  const offN = N(10_000);
  const offSeq = await lifecycles(off, offN, 'off');
  row('memory, offload: true (thread pool hop per call)', `${fmt(offSeq)} / lifecycle  (${rate(offSeq)})`);
  m.close();
  off.close();
}

// ---- sync computations ----------------------------------------------------------------------
{
  const p = new PricingEngine();
  p.setPrice('gpt-4o-mini', { provider: 'openai', input: '0.00000015', output: '0.0000006', cacheRead: '0.000000075' });
  const usage = { inputTokens: 2048, cacheReadTokens: 1920, outputTokens: 160 };
  const n = N(300_000);
  for (let i = 0; i < 10_000; i++) p.cost('gpt-4o-mini', usage);
  let t0 = ns();
  for (let i = 0; i < n; i++) p.cost('gpt-4o-mini', usage);
  row('sync: pricing.cost(model, usage) from JS', fmt(per(t0, n)));
  t0 = ns();
  for (let i = 0; i < n; i++) toNanos('12.50');
  row('sync: toNanos("12.50")', fmt(per(t0, n)));
  const chunk = JSON.stringify({ id: 'c', object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: 'Hello there' } }] });
  const s = new StreamUsage('openai-chat', { inputTokensEstimate: 100 });
  t0 = ns();
  for (let i = 0; i < n; i++) s.feedEvent(chunk);
  row('sync: StreamUsage.feedEvent(chunk JSON text)', fmt(per(t0, n)));
}

// ---- SQLite ---------------------------------------------------------------------------------
{
  const m = new BudgetManager({ store: `sqlite:${path.join(tmp, 'bench.db')}`, limits });
  const seq = await lifecycles(m, N(2000), 'sq');
  row('sqlite: Node sequential reserve+commit', `${fmt(seq)} / lifecycle  (${rate(seq)})`);
  const conc = await concurrent(m, N(4000), 16, 'sc');
  row('sqlite: Node, 16 lifecycles in flight (thread pool)', `${fmt(conc)} / lifecycle  (${rate(conc)})`);
  const n = N(2000);
  const cpp = m.native.benchLoop(subject, 1000n, n, 'sqcpp') / n;
  row('sqlite: C++ reserve+commit (tight loop, same manager)', `${fmt(cpp)} / lifecycle  (${rate(cpp)})`);
  m.close();
}
fs.rmSync(tmp, { recursive: true, force: true });
if (process.env.BENCH_JSON) fs.writeFileSync(process.env.BENCH_JSON, JSON.stringify(Object.fromEntries(rows), null, 2));
