// @ts-check
// Benchmark: per-call overhead of the Node binding vs the same C++ calls in the same run,
// and reserve+commit lifecycles per second on the memory and SQLite stores.
//   node bench.mjs            (after `npm run build`; BENCH_SCALE=0.2 for a quick run)
//
// Overhead = Node time per call - C++ time per call of the same operation, both measured in
// this process: the C++ side is a tight loop inside the addon (benchLoop, benchCost,
// benchFeedEvent) on the same manager / engine / input. The two sides alternate in ROUNDS
// rounds (C++ first in odd rounds, Node first in even ones) so that both see the same store
// size, heap and machine load; the figures are the medians over the rounds, with the range
// of the overhead in brackets.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BudgetManager, PricingEngine, StreamUsage, toNanos } from 'libbudget';
import { createRequire } from 'node:module';

/** @type {import('./dist/native.js').NativeAddon} the addon itself (for benchFeedEvent) */
const native = createRequire(import.meta.url)('./dist/native.js').native;

const scale = Number(process.env.BENCH_SCALE ?? 1);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 7);
const N = (/** @type {number} */ n) => Math.max(10, Math.round(n * scale));
const ns = () => process.hrtime.bigint();
/** @param {bigint} t0 @param {number} n */
const per = (t0, n) => Number(ns() - t0) / n;
const fmt = (/** @type {number} */ x) => (Math.abs(x) >= 1000 ? `${(x / 1000).toFixed(2)} µs` : `${x.toFixed(0)} ns`);
const rate = (/** @type {number} */ perNs) => `${Math.round(1e9 / perNs).toLocaleString('en-US')}/s`;
const median = (/** @type {number[]} */ v) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const range = (/** @type {number[]} */ v) => `[${fmt(Math.min(...v))} – ${fmt(Math.max(...v))}]`;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'libbudget-bench-'));
const limits = [{ scope: 'user:*', window: 'day', amount: '1000000' }, { scope: 'global', window: 'month', amount: '100000000' }];
const subject = ['tenant:acme', 'user:alice'];
/** @type {[string, string][]} */
const rows = [];
const row = (/** @type {string} */ k, /** @type {string} */ v) => { rows.push([k, v]); console.log(`${k.padEnd(62)} ${v}`); };

/**
 * Alternating rounds of a C++ loop and the same work from JS.
 * @param {(round: number) => number | Promise<number>} cpp  ns per call of round `round`
 * @param {(round: number) => number | Promise<number>} js   ns per call of round `round`
 */
async function paired(cpp, js) {
  /** @type {number[]} */ const c = [];
  /** @type {number[]} */ const j = [];
  for (let r = 0; r < ROUNDS; r++) {
    if (r % 2 === 0) { c.push(await cpp(r)); j.push(await js(r)); }
    else { j.push(await js(r)); c.push(await cpp(r)); }
  }
  return { cpp: median(c), js: median(j), over: c.map((x, i) => j[i] - x) };
}

/**
 * @param {BudgetManager} m @param {number} n @param {string} tag
 * @param {import('libbudget').EstimateInput} [estimate] @param {import('libbudget').ChargeInput} [charge]
 */
async function lifecycles(m, n, tag, estimate = 1000n, charge = 900n) {
  const t0 = ns();
  for (let i = 0; i < n; i++) {
    const d = await m.reserve(subject, estimate, { requestId: `${tag}${i}` });
    if (d.reservation) await m.commit(d.reservation, charge);
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

console.log(`libbudget Node binding benchmark (node ${process.version}, ${os.cpus().length} cpus, scale ${scale}, ${ROUNDS} rounds)\n`);

// ---- memory store: Node vs C++, alternating rounds on the same manager -----------------------
{
  const m = new BudgetManager({ store: 'memory', limits });
  const n = N(10_000);  // lifecycles per round and side
  await lifecycles(m, N(5000), 'warm');  // warm-up (JIT, store)
  m.native.benchLoop(subject, 1000n, N(5000), 'cwarm', 900n);
  const r = await paired((k) => m.native.benchLoop(subject, 1000n, n, `cpp${k}_`, 900n) / n, (k) => lifecycles(m, n, `js${k}_`));
  row('memory: C++ reserve+commit (same manager, tight loop)', `${fmt(r.cpp)} / lifecycle  (${rate(r.cpp)})`);
  row('memory: Node await reserve + await commit', `${fmt(r.js)} / lifecycle  (${rate(r.js)})`);
  const perCall = r.over.map((x) => x / 2);
  row('memory: binding overhead per async call ((Node - C++) / 2)', `${fmt(median(perCall))}  ${range(perCall)}`);
  const conc = await concurrent(m, N(50_000), 64, 'cc');
  row('memory: Node, 64 lifecycles in flight', `${fmt(conc)} / lifecycle  (${rate(conc)})`);
  m.close();
  // Priced: reserve({ model, usage }) + commit({ model, usage }), as the stream guards do.
  const pricing = new PricingEngine();
  pricing.setPrice('gpt-4o-mini', { provider: 'openai', input: '0.00000015', output: '0.0000006', cacheRead: '0.000000075' });
  const pm = new BudgetManager({ store: 'memory', limits, pricing });
  const est = { model: 'gpt-4o-mini', usage: { inputTokens: 1200, outputTokens: 1000 } };
  const chg = { model: 'gpt-4o-mini', usage: { inputTokens: 1200, cacheReadTokens: 1024, outputTokens: 312 } };
  const pn = N(5000);
  await lifecycles(pm, pn, 'pw', est, chg);
  const pr = await paired((k) => pm.native.benchLoop(subject, est, pn, `pcpp${k}_`, chg) / pn,
    (k) => lifecycles(pm, pn, `pjs${k}_`, est, chg));
  row('memory, priced: C++ reserve+commit of { model, usage }', `${fmt(pr.cpp)} / lifecycle  (${rate(pr.cpp)})`);
  row('memory, priced: Node reserve+commit of { model, usage }', `${fmt(pr.js)} / lifecycle  (${rate(pr.js)})`);
  const pcall = pr.over.map((x) => x / 2);
  row('memory, priced: binding overhead per async call', `${fmt(median(pcall))}  ${range(pcall)}`);
  pm.close();
  const off = new BudgetManager({ store: 'memory', limits, offload: true });
  await lifecycles(off, N(1000), 'offw');
  const offSeq = await lifecycles(off, N(10_000), 'off');
  row('memory, offload: true (thread pool hop per call)', `${fmt(offSeq)} / lifecycle  (${rate(offSeq)})`);
  off.close();
}

// ---- sync computations: Node vs C++ ----------------------------------------------------------
{
  const p = new PricingEngine();
  p.setPrice('gpt-4o-mini', { provider: 'openai', input: '0.00000015', output: '0.0000006', cacheRead: '0.000000075' });
  const usage = { inputTokens: 2048, cacheReadTokens: 1920, outputTokens: 160 };
  const n = N(100_000);
  for (let i = 0; i < 20_000; i++) p.cost('gpt-4o-mini', usage);
  const cost = await paired(() => p.native.benchCost('gpt-4o-mini', usage, n) / n, () => {
    const t0 = ns();
    for (let i = 0; i < n; i++) p.cost('gpt-4o-mini', usage);
    return per(t0, n);
  });
  row('sync: pricing.cost(model, usage) from Node', fmt(cost.js));
  row('sync: pricing.cost, C++ cost() (tight loop)', fmt(cost.cpp));
  row('sync: pricing.cost overhead (Node - C++)', `${fmt(median(cost.over))}  ${range(cost.over)}`);
  const at = { at: Date.UTC(2026, 0, 1) };
  const big = { inputTokens: 2048n, cacheReadTokens: 1920n, outputTokens: 160n };
  let t0 = ns();
  for (let i = 0; i < n; i++) p.cost('gpt-4o-mini', big);
  row('sync: pricing.cost, bigint counts', fmt(per(t0, n)));
  t0 = ns();
  for (let i = 0; i < n; i++) p.cost('gpt-4o-mini', usage, at);
  row('sync: pricing.cost with options { at }', fmt(per(t0, n)));
  t0 = ns();
  for (let i = 0; i < n; i++) toNanos('12.50');
  row('sync: toNanos("12.50")', fmt(per(t0, n)));
  const chunk = JSON.stringify({ id: 'c', object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: 'Hello there' } }] });
  const s = new StreamUsage('openai-chat', { inputTokensEstimate: 100 });
  const feed = await paired(() => native.benchFeedEvent('openai-chat', chunk, n) / n, () => {
    const t = ns();
    for (let i = 0; i < n; i++) s.feedEvent(chunk);
    return per(t, n);
  });
  row('sync: StreamUsage.feedEvent(chunk JSON text) from Node', fmt(feed.js));
  row('sync: feedEvent, C++ feed_event() (tight loop)', fmt(feed.cpp));
  row('sync: feedEvent overhead (Node - C++)', `${fmt(median(feed.over))}  ${range(feed.over)}`);
}

// ---- SQLite ---------------------------------------------------------------------------------
{
  const m = new BudgetManager({ store: `sqlite:${path.join(tmp, 'bench.db')}`, limits });
  await lifecycles(m, N(200), 'sqw');
  const seq = await lifecycles(m, N(2000), 'sq');
  row('sqlite: Node sequential reserve+commit', `${fmt(seq)} / lifecycle  (${rate(seq)})`);
  const conc = await concurrent(m, N(4000), 16, 'sc');
  row('sqlite: Node, 16 lifecycles in flight (thread pool)', `${fmt(conc)} / lifecycle  (${rate(conc)})`);
  const n = N(2000);
  const cpp = m.native.benchLoop(subject, 1000n, n, 'sqcpp', 900n) / n;
  row('sqlite: C++ reserve+commit (tight loop, same manager)', `${fmt(cpp)} / lifecycle  (${rate(cpp)})`);
  m.close();
}
fs.rmSync(tmp, { recursive: true, force: true });
if (process.env.BENCH_JSON) fs.writeFileSync(process.env.BENCH_JSON, JSON.stringify(Object.fromEntries(rows), null, 2));
