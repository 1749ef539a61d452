// @ts-check
// PricingEngine and usage extraction (synchronous computations).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PricingEngine, UnknownModelError, InvalidArgumentError, usageFromResponse, StreamUsage, estimateTokens, BudgetManager } from 'libbudget';
import { REPO_ROOT, usd } from './helpers.mjs';

const LITELLM = path.join(REPO_ROOT, '..', 'shared', 'data', 'model_prices_and_context_window.json');
const FIXTURES = path.join(REPO_ROOT, 'tests', 'data', 'providers');

const sample = {
  sample_spec: { input_cost_per_token: 0 },
  'gpt-4o-mini': { litellm_provider: 'openai', mode: 'chat', max_output_tokens: 16384,
    input_cost_per_token: 1.5e-7, output_cost_per_token: 6e-7, cache_read_input_token_cost: 7.5e-8 },
  'claude-x': { litellm_provider: 'anthropic', mode: 'chat', input_cost_per_token: 3e-6, output_cost_per_token: 1.5e-5,
    cache_creation_input_token_cost: 3.75e-6, cache_read_input_token_cost: 3e-7 },
  'cheap-model': { litellm_provider: 'acme', input_cost_per_token: 3.75e-11, output_cost_per_token: 0 },
};

test('LiteLLM JSON: exact costs, rounding up once per line item, resolution', () => {
  const p = new PricingEngine();
  const rep = p.loadLitellm(sample);
  assert.equal(rep.loaded, 3);
  assert.equal(rep.skipped, 1);
  assert.match(rep.tableVersion, /^litellm/);
  // 128 uncached * 0.15e-6 + 1920 cached * 0.075e-6 + 160 out * 0.6e-6 = 0.0002592
  const u = { inputTokens: 2048, cacheReadTokens: 1920, outputTokens: 160, reasoningTokens: 64 };
  assert.equal(p.cost('gpt-4o-mini', u), usd('0.0002592'));
  // 1 token at $0.0375 per million = 3.75e-11 -> rounded up to 1 nano.
  assert.equal(p.cost('cheap-model', { inputTokens: 1 }), 1n);
  assert.equal(p.cost('cheap-model', { inputTokens: 1_000_000 }), usd('0.0000375'));
  assert.equal(p.resolve('gpt-4o-mini-2024-07-18').name, 'gpt-4o-mini');
  assert.equal(p.resolve('openai/gpt-4o-mini').provider, 'openai');
  assert.equal(p.knows('gpt-9'), false);
  assert.throws(() => p.cost('gpt-9', { inputTokens: 1 }), UnknownModelError);
  p.setFallback({ input: '0.00001', output: '0.00001' });
  assert.equal(p.cost('gpt-9', { inputTokens: 1 }), usd('0.00001'));
  const q = p.quote('gpt-4o-mini', u);
  assert.equal(q.cost, usd('0.0002592'));
  assert.equal(q.items.reduce((s, i) => s + i.amount, 0n), q.cost);
  assert.ok(q.priceVersion.length > 0);
  // estimate: 1000 in + the model's max output (16384) out
  assert.equal(p.estimate('gpt-4o-mini', 1000), usd('0.00015') + 16384n * 600n);
  assert.equal(p.estimate('gpt-4o-mini', 1000, 100), usd('0.00015') + usd('0.00006'));
});

test('markups are versioned by effective date', () => {
  const p = new PricingEngine();
  p.loadLitellm(sample);
  const t1 = Date.UTC(2026, 0, 1);
  p.addMarkup({ scope: 'provider', match: 'openai', percent: 20, effectiveFrom: t1 });
  const u = { inputTokens: 1_000_000 };
  assert.equal(p.cost('gpt-4o-mini', u, { at: t1 - 1 }), usd('0.15'));
  assert.equal(p.cost('gpt-4o-mini', u, { at: t1 }), usd('0.18'));
  assert.equal(p.cost('gpt-4o-mini', u, { at: t1, applyMarkup: false }), usd('0.15'));
  assert.notEqual(p.priceVersion(t1 - 1), p.priceVersion(t1));
});

test('bundled table and the shared LiteLLM copy load', (t) => {
  const b = PricingEngine.bundled();
  assert.ok(b.size > 100);
  assert.ok(PricingEngine.bundledTableInfo().entries > 100);
  assert.ok(b.knows('gpt-4o'));
  if (!fs.existsSync(LITELLM)) return t.skip(`${LITELLM} not present`);
  const p = new PricingEngine();
  const rep = p.loadLitellmFile(LITELLM);
  assert.ok(rep.loaded > 1000);
  assert.equal(p.cost('claude-sonnet-4-5', { inputTokens: 100_000 }), usd('0.3'));
  // above 200k input tokens the whole request is billed at the long-context tier
  assert.equal(p.cost('claude-sonnet-4-5', { inputTokens: 1_000_000 }), usd('6'));
});

test('a manager prices { model, usage } estimates and charges with its pricing engine', async () => {
  const pricing = new PricingEngine();
  pricing.loadLitellm(sample);
  const m = new BudgetManager({ store: 'memory', pricing, limits: [{ scope: 'user:*', window: 'day', amount: '1' }] });
  const d = await m.reserve('user:p', { model: 'gpt-4o-mini', usage: { inputTokens: 1000, outputTokens: 1000 } });
  assert.equal(d.estimate, usd('0.00075'));
  assert.equal(d.reservation?.heldTokens, 2000);
  const rc = await m.commit(/** @type {any} */ (d.reservation), { model: 'gpt-4o-mini', usage: { inputTokens: 1000, outputTokens: 10 } });
  assert.equal(rc.charged, usd('0.000156'));
  assert.equal(rc.model, 'gpt-4o-mini');
  m.close();
});

/** @param {any} u */
const norm = (u) => ({ input: u.inputTokens, cache_read: u.cacheReadTokens, cache_write: u.cacheWriteTokens,
  cache_write_1h: u.cacheWrite1hTokens, output: u.outputTokens, reasoning: u.reasoningTokens,
  audio_input: u.audioInputTokens, audio_output: u.audioOutputTokens, complete: u.complete });
/** The expected usage of a fixture: the audio parts are 0 where expected.json leaves them out. */
/** @param {any} u */
const want = (u) => ({ audio_input: 0, audio_output: 0, ...u });

test('usage extraction: every provider fixture, responses and streams (raw bytes split anywhere, or events)', () => {
  const expected = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'expected.json'), 'utf8'));
  let n = 0;
  for (const [file, spec] of Object.entries(expected)) {
    if (file.startsWith('_')) continue;
    const body = fs.readFileSync(path.join(FIXTURES, file));
    if (spec.kind === 'response') {
      assert.deepEqual(norm(usageFromResponse(spec.format, body)), want(spec.usage), file);
      assert.deepEqual(norm(usageFromResponse(spec.format, JSON.parse(body.toString()))), want(spec.usage), file);
    } else {
      for (const step of [1, 7, 64, body.length]) {
        const s = new StreamUsage(spec.format, { inputTokensEstimate: 100 });
        for (let i = 0; i < body.length; i += step) s.feed(body.subarray(i, i + step));
        assert.deepEqual(norm(s.finish()), want(spec.usage), `${file} step ${step}`);
      }
      if (file.endsWith('.sse')) {
        // As the SDKs yield them: parsed event objects.
        const s = new StreamUsage(spec.format, { inputTokensEstimate: 100 });
        for (const line of body.toString().split('\n')) {
          if (!line.startsWith('data:')) continue;
          const data = line.slice(5).trim();
          if (data === '[DONE]') continue;
          s.feedEvent(JSON.parse(data));
        }
        if (spec.usage.complete) assert.deepEqual(norm(s.finish()), want(spec.usage), `${file} events`);
      }
    }
    n++;
  }
  assert.ok(n >= 10);
  assert.equal(estimateTokens('abcd'.repeat(10)), 10);
  assert.ok(estimateTokens('日本語') >= 3);
});

test('cost(): number, bigint and option shapes price alike; bad counts are typed errors', async () => {
  const { InvalidArgumentError, OverflowError } = await import('libbudget');
  const p = new PricingEngine();
  p.setPrice('m-req', { input: '0.000001', output: '0.000002', cacheRead: '0.0000005', perRequest: '0.01' });
  const base = p.cost('m-req', { inputTokens: 1000, cacheReadTokens: 200, outputTokens: 50 });
  // 800 * 1e-6 + 200 * 0.5e-6 + 50 * 2e-6 + 1 request (the default) * 0.01
  assert.equal(base, usd('0.011'));
  assert.equal(p.cost('m-req', { inputTokens: 1000n, cacheReadTokens: 200, outputTokens: 50n }), base);
  assert.equal(p.cost('m-req', { inputTokens: 1000, cacheReadTokens: 200, outputTokens: 50 }, {}), base);
  assert.equal(p.cost('m-req', { inputTokens: 1000, cacheReadTokens: 200, outputTokens: 50, requests: /** @type {any} */ (null) }), base);
  assert.equal(p.cost('m-req', { inputTokens: 1000, cacheReadTokens: 200, outputTokens: 50, requests: 0 }), usd('0.001'));
  assert.equal(p.cost('m-req', { inputTokens: 1000, cacheReadTokens: 200, outputTokens: 50, requests: 3 }), usd('0.031'));
  assert.equal(p.cost('m-req', { inputTokens: 1000, cacheReadTokens: 200, outputTokens: 50, complete: false }), base);
  assert.equal(p.cost('m-req', Object.assign(Object.create({ inputTokens: 7 }), { outputTokens: 50 })),
    p.cost('m-req', { inputTokens: 7n, outputTokens: 50n }), 'inherited fields count, as in the full path');
  assert.equal(p.cost('m-req', {}), usd('0.01'));
  /** @type {[string, any, Function][]} */
  const bad = [
    ['negative', { inputTokens: -1 }, InvalidArgumentError],
    ['fraction', { inputTokens: 1.5 }, InvalidArgumentError],
    ['NaN', { outputTokens: NaN }, InvalidArgumentError],
    ['Infinity', { outputTokens: Infinity }, InvalidArgumentError],
    ['unsafe', { outputTokens: 2 ** 53 }, InvalidArgumentError],
    ['string count', { inputTokens: '12' }, InvalidArgumentError],
    ['bigint beyond int64', { inputTokens: 2n ** 64n }, OverflowError],
    ['part above total', { inputTokens: 10, cacheReadTokens: 11 }, InvalidArgumentError],
    ['complete not boolean', { inputTokens: 1, complete: 'yes' }, InvalidArgumentError],
    ['usage array', [], InvalidArgumentError],
    ['usage null', null, InvalidArgumentError],
  ];
  for (const [name, u, cls] of bad) {
    assert.throws(() => p.cost('m-req', u), (e) => e instanceof cls, name);
  }
  /** @type {[string, any][]} */
  const badOptions = [
    ['tier', { tier: 'gold' }], ['tier type', { tier: 1 }], ['at NaN', { at: NaN }], ['at fraction', { at: 1.5 }],
    ['invalid Date', { at: new Date(NaN) }], ['at string', { at: '2026-01-01' }], ['applyMarkup', { applyMarkup: 'no' }],
    ['options array', []], ['options string', 'batch'],
  ];
  for (const [name, o] of badOptions) {
    assert.throws(() => p.cost('m-req', { inputTokens: 1 }, o), InvalidArgumentError, name);
  }
  const at = Date.UTC(2026, 0, 1);
  assert.equal(p.cost('m-req', { inputTokens: 1000, cacheReadTokens: 200, outputTokens: 50 }, { at, tier: 'standard', applyMarkup: true }), base);
  assert.equal(p.cost('m-req', { inputTokens: 1000n, cacheReadTokens: 200n, outputTokens: 50n }, { at: new Date(at), tier: /** @type {any} */ (null) }), base);
  p.addMarkup({ scope: 'all', percent: '50' });
  assert.equal(p.cost('m-req', { inputTokens: 1000, cacheReadTokens: 200, outputTokens: 50 }, { applyMarkup: false }), base);
  const marked = p.cost('m-req', { inputTokens: 1000, cacheReadTokens: 200, outputTokens: 50 });
  assert.ok(marked > base, 'the markup applies by default');
  assert.equal(p.cost('m-req', { inputTokens: 1000n, cacheReadTokens: 200, outputTokens: 50 }, { applyMarkup: true }), marked);
  assert.equal(p.cost('m-req', { inputTokens: 2n ** 53n, outputTokens: 0 }, { applyMarkup: false }),
    p.cost('m-req', { inputTokens: 2n ** 53n }, { applyMarkup: false }), 'counts beyond 2^53 (bigint, general path)');
  assert.throws(() => p.cost(/** @type {any} */ (42), { inputTokens: 1 }), InvalidArgumentError);
  assert.throws(() => p.cost('unknown-model', { inputTokens: 1 }), UnknownModelError);
  const long = 'x'.repeat(300);
  p.setPrice(long, { input: '0.000001' });
  assert.equal(p.cost(long, { inputTokens: 3 }, { applyMarkup: false }), 3000n, 'model names beyond the stack buffer');
  for (const cut of [250, 251, 252, 253, 254, 255, 256]) {  // a 2-byte character across the buffer's end
    const name = 'y'.repeat(cut) + 'éé';
    p.setPrice(name, { input: '0.000002' });
    assert.equal(p.cost(name, { inputTokens: 3 }, { applyMarkup: false }), 6000n, name.length.toString());
  }
});

test('a malformed stream event throws once; the stream goes on and reads the final usage', () => {
  // The bad event stayed in the buffer: every later feed threw again, the final usage was never
  // read, and the good event before it in the same read was counted again by each later feed.
  const good = `data: {"choices":[{"delta":{"content":"${'x'.repeat(400)}"}}]}\n\n`;
  const s = new StreamUsage('openai-chat', { inputTokensEstimate: 100 });
  assert.throws(() => s.feed(good + 'data: {"choices":[{"delta":{"content":"cut\n\n'), InvalidArgumentError);
  assert.equal(s.usage.outputTokens, 100);
  s.feed(': keep-alive\n\n');
  s.feed(good);
  assert.equal(s.usage.outputTokens, 200);
  s.feed('data: {"choices":[],"usage":{"prompt_tokens":120,"completion_tokens":180}}\n\ndata: [DONE]\n\n');
  const fin = s.finish();
  assert.deepEqual([fin.complete, fin.inputTokens, fin.outputTokens], [true, 120, 180]);
});

test('audio tokens: priced at the audio prices (real table), every input shape, extracted, kept in the ledger', async () => {
  const p = PricingEngine.bundled();
  // gpt-4o-audio-preview: text $2.50/M in, $10/M out; audio $40/M in, $80/M out.
  const u = { inputTokens: 1362, audioInputTokens: 1200, outputTokens: 423, audioOutputTokens: 336 };
  const asText = { inputTokens: 1362, outputTokens: 423 };
  assert.equal(p.cost('gpt-4o-audio-preview', asText), usd('0.007635'));
  assert.equal(p.cost('gpt-4o-audio-preview', u), usd('0.076155'));  // the fast path (scratch slots)
  assert.equal(p.cost('gpt-4o-audio-preview', { ...u, audioInputTokens: 1200n }), usd('0.076155'));
  assert.equal(p.cost('gpt-4o-audio-preview', u, { tier: 'standard' }), usd('0.076155'));  // options beside
  const q = p.quote('gpt-4o-audio-preview', u);
  assert.deepEqual(q.items.map((i) => i.name), ['input', 'audio_input', 'output', 'audio_output']);
  assert.equal(p.cost('gpt-4o', u), p.cost('gpt-4o', asText));  // no audio prices: the text price
  // A later call without the fields does not see the slots of an earlier one.
  assert.equal(p.cost('gpt-4o-audio-preview', asText), usd('0.007635'));
  assert.throws(() => p.cost('gpt-4o-audio-preview', { inputTokens: 10, audioInputTokens: 11 }), InvalidArgumentError);
  assert.throws(() => p.cost('gpt-4o-audio-preview', { inputTokens: 10, audioInputTokens: -1 }), InvalidArgumentError);

  const got = usageFromResponse('openai', { choices: [], usage: { prompt_tokens: 1362, completion_tokens: 423,
    prompt_tokens_details: { cached_tokens: 0, audio_tokens: 1200 }, completion_tokens_details: { audio_tokens: 336 } } });
  assert.equal(got.audioInputTokens, 1200);
  assert.equal(got.audioOutputTokens, 336);

  const m = new BudgetManager({ store: 'memory', pricing: p, limits: [{ scope: 'user:*', window: 'day', amount: '1' }] });
  const d = await m.reserve('user:a', { model: 'gpt-4o-audio-preview', usage: u });
  assert.equal(d.estimate, usd('0.076155'));
  const rc = await m.commit(/** @type {any} */ (d.reservation), { model: 'gpt-4o-audio-preview', usage: got });
  assert.equal(rc.charged, usd('0.076155'));
  const [ev] = await m.events({ type: 'commit' });
  assert.equal(ev.usage?.audioInputTokens, 1200);
  assert.equal(ev.usage?.audioOutputTokens, 336);
  assert.ok((await m.verify()).ok);
  m.close();
});
