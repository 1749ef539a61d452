// @ts-check
// Stream guards with the REAL `openai` and `@anthropic-ai/sdk` clients against a fake
// provider on a loopback port.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import {
  BudgetManager, ManualClock, PricingEngine, BudgetExceededError, UnknownModelError, InvalidArgumentError, guardOpenAIChatStream,
  guardAnthropicStream, guardStream,
} from 'libbudget';
import { startFakeProvider } from './fake-provider.mjs';
import { storeKinds, freshUrl, T0, usd, findStatus, waitFor } from './helpers.mjs';

/** @type {Awaited<ReturnType<typeof startFakeProvider>>} */
let fake;
before(async () => { fake = await startFakeProvider(); });
after(async () => { await fake.close(); });

function pricing() {
  const p = new PricingEngine();
  p.setPrice('gpt-4o-mini', { provider: 'openai', input: '0.00000015', output: '0.0000006', cacheRead: '0.000000075', maxOutputTokens: 16384 });
  p.setPrice('claude-sonnet-4-5', { provider: 'anthropic', input: '0.000003', output: '0.000015', cacheRead: '0.0000003', cacheWrite: '0.00000375' });
  return p;
}

/** @returns {import('openai').OpenAI.ChatCompletionCreateParamsStreaming} */
function chatParams(maxTokens = 100) {
  return { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'Say hello' }], max_tokens: maxTokens, stream: true };
}

const openai = () => new OpenAI({ apiKey: 'test-key', baseURL: `${fake.url}/v1`, maxRetries: 0 });
const anthropic = () => new Anthropic({ apiKey: 'test-key', baseURL: fake.url, maxRetries: 0 });

for (const kind of storeKinds()) {
  describe(`store=${kind}`, () => {
    /** @param {string} scope @param {string} amount */
    function manager(scope, amount) {
      return new BudgetManager({ store: freshUrl(kind), clock: new ManualClock(T0), pricing: pricing(),
        limits: [{ scope, window: 'day', amount }] });
    }

    test('openai: a complete stream is committed with the provider usage', async () => {
      fake.reset({ chunks: 10, text: 'Hello ', promptTokens: 50, cachedTokens: 0, tokensPerChunk: 4 });
      const m = manager('user:a', '1');
      const client = openai();
      const stream = await guardOpenAIChatStream(m, { subject: ['tenant:t', 'user:a'], requestId: 'oa-1' }, chatParams(),
        (p, { signal }) => client.chat.completions.create(p, { signal }));
      let text = '';
      for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
      assert.equal(text, 'Hello '.repeat(10));
      assert.equal(stream.outcome, 'completed');
      // 50 in * 0.15e-6 + 40 out * 0.6e-6
      assert.equal(stream.receipt?.charged, usd('0.0000315'));
      assert.equal(stream.usage.complete, true);
      assert.equal(fake.state.requests[0].body.stream_options.include_usage, true);
      const st = findStatus(await m.status('user:a'), 'day');
      assert.equal(st.spent, usd('0.0000315'));
      assert.equal(st.held, 0n);
      const ev = await m.events({ requestId: 'oa-1', type: 'commit' });
      assert.equal(ev[0].usage?.complete, true);
      assert.equal(ev[0].provider, 'openai');
      m.close();
    });

    test('openai: Stop aborts the stream and throws BudgetExceededError', async () => {
      fake.reset({ chunks: 20000, text: 'lorem ipsum dolor sit amet ', delayMs: 1 });
      const m = manager('user:b', '0.0005');
      const client = openai();
      const stream = await guardOpenAIChatStream(m, { subject: 'user:b' }, chatParams(20),
        (p, { signal }) => client.chat.completions.create(p, { signal }));
      let n = 0;
      await assert.rejects(async () => { for await (const _ of stream) n++; }, (e) => {
        assert.ok(e instanceof BudgetExceededError);
        assert.equal(e.code, 'BUDGET_EXCEEDED');
        assert.equal(e.scope, 'user:b');
        return true;
      });
      assert.ok(n > 5 && n < 20000, `stopped after ${n} chunks`);
      assert.equal(stream.controller.signal.aborted, true);
      assert.equal(stream.outcome, 'stopped');
      assert.ok(await waitFor(() => fake.state.aborted === 1), 'the provider saw the connection close');
      assert.equal(fake.state.completed, 0);
      assert.ok(stream.receipt && stream.receipt.charged > 0n);
      const st = findStatus(await m.status('user:b'), 'day');
      assert.equal(st.held, 0n);
      assert.equal(st.spent, stream.receipt.charged);
      const ev = await m.events({ requestId: stream.reservation.requestId, type: 'commit' });
      assert.equal(ev[0].usage?.complete, false, 'committed as an estimate');
      m.close();
    });

    test('openai: break commits the estimate so far, marked incomplete, and closes the connection', async () => {
      fake.reset({ chunks: 500, text: 'word ', delayMs: 1 });
      const m = manager('user:c', '1');
      const client = openai();
      const stream = await guardOpenAIChatStream(m, { subject: 'user:c' }, chatParams(),
        (p, { signal }) => client.chat.completions.create(p, { signal }));
      let n = 0;
      for await (const _ of stream) if (++n === 3) break;
      assert.equal(stream.outcome, 'cancelled');
      assert.ok(stream.receipt && stream.receipt.charged > 0n);
      assert.ok(await waitFor(() => fake.state.aborted === 1));
      assert.equal(findStatus(await m.status('user:c'), 'day').held, 0n);
      const ev = await m.events({ requestId: stream.reservation.requestId, type: 'commit' });
      assert.equal(ev[0].usage?.complete, false);
      m.close();
    });

    test('abort: stream.abort() / controller.abort() in the loop ends it as cancelled, also when the source ends silently or ignores the signal', async () => {
      const m = manager('user:c2', '1');
      const client = openai();
      const anth = anthropic();
      /** @type {import('@anthropic-ai/sdk').Anthropic.MessageStreamParams} */
      const anthParams = { model: 'claude-sonnet-4-5', max_tokens: 100, messages: [{ role: 'user', content: 'Go' }] };
      /** @type {[string, () => Promise<import('libbudget').GuardedStream<unknown>>, (s: import('libbudget').GuardedStream<unknown>) => void][]} */
      const cases = [
        // openai-node ends its iterator silently on an abort; Anthropic's MessageStream yields one more event
        ['openai stream.abort()', () => guardOpenAIChatStream(m, { subject: 'user:c2' }, chatParams(),
          (p, { signal }) => client.chat.completions.create(p, { signal })), (s) => s.abort()],
        ['openai controller.abort()', () => guardOpenAIChatStream(m, { subject: 'user:c2' }, chatParams(),
          (p, { signal }) => client.chat.completions.create(p, { signal })), (s) => s.controller.abort()],
        ['anthropic stream.abort()', () => guardAnthropicStream(m, { subject: 'user:c2' }, anthParams,
          (p, { signal }) => anth.messages.stream(p, { signal })), (s) => s.abort()],
        // a source that does not look at the signal at all
        ['generic stream.abort()', () => guardStream(m, 'openai-chat', { subject: 'user:c2' }, { model: 'gpt-4o-mini' },
          async function* () { for (let i = 0; i < 50; i++) yield { choices: [{ delta: { content: 'word ' } }] }; }), (s) => s.abort()],
      ];
      for (const [name, open, abort] of cases) {
        fake.reset({ chunks: 500, text: 'word ', delayMs: 1 });
        const stream = await open();
        let n = 0;
        try {
          for await (const _ of stream) if (++n === 3) abort(stream);
        } catch (e) {
          // Anthropic's MessageStream may also throw its abort error: passed through (the caller aborted)
          assert.equal(/** @type {Error} */ (e).name, 'APIUserAbortError', name);
        }
        assert.equal(n, 3, `${name}: no event is yielded after the abort`);
        assert.equal(stream.outcome, 'cancelled', name);
        assert.ok(stream.receipt && stream.receipt.charged > 0n, name);
        const ev = await m.events({ requestId: stream.reservation.requestId, type: 'commit' });
        assert.equal(ev[0].usage?.complete, false, name);
      }
      assert.equal(findStatus(await m.status('user:c2'), 'day').held, 0n);
      m.close();
    });

    test('a guarded stream that is never read: abort() or an early return() releases the hold and closes the call', async () => {
      const m = manager('user:n', '1');
      let aborted = 0;
      /** @param {AbortSignal} signal */
      const source = (signal) => {
        signal.addEventListener('abort', () => aborted++);
        return (async function* () { for (let i = 0; i < 5; i++) yield { choices: [{ delta: { content: 'word ' } }] }; })();
      };
      const a = await guardStream(m, 'openai-chat', { subject: 'user:n', requestId: 'n1' }, { model: 'gpt-4o-mini', max_tokens: 10 },
        (_p, { signal }) => source(signal));
      a.abort();  // e.g. the client went away before the first chunk was read
      assert.ok(await waitFor(() => a.receipt !== null));
      assert.equal(a.outcome, 'cancelled');
      assert.deepEqual((await m.events({ requestId: 'n1' })).map((e) => e.type), ['reserve', 'release']);
      await assert.rejects(async () => { for await (const _ of a) { /* nothing */ } }, InvalidArgumentError);

      const b = await guardStream(m, 'openai-chat', { subject: 'user:n', requestId: 'n2' }, { model: 'gpt-4o-mini', max_tokens: 10 },
        (_p, { signal }) => source(signal));
      await b[Symbol.asyncIterator]().return?.();  // what a consumer destroyed before its first read does
      assert.equal(b.outcome, 'cancelled');
      assert.deepEqual((await m.events({ requestId: 'n2' })).map((e) => e.type), ['reserve', 'release']);
      assert.equal(aborted, 2);
      assert.equal(findStatus(await m.status('user:n'), 'day').held, 0n);
      m.close();
    });

    test('the model: a fallback price is enough; a model nothing prices throws before any hold or call', async () => {
      const p = new PricingEngine();
      p.setFallback({ input: '0.000001', output: '0.000002' });
      const m = new BudgetManager({ store: freshUrl(kind), clock: new ManualClock(T0), pricing: p,
        limits: [{ scope: 'user:*', window: 'day', amount: '1' }] });
      const chunks = async function* () { for (let i = 0; i < 3; i++) yield { choices: [{ delta: { content: 'word ' } }] }; };
      // priced by the fallback (as reserve prices it), no max_tokens: held for the default 4096
      const s = await guardStream(m, 'openai-chat', { subject: 'user:m' }, { model: 'brand-new-model' }, () => chunks());
      assert.equal(s.reservation.held, usd('0.008192'));
      for await (const _ of s) { /* drain */ }
      assert.equal(s.outcome, 'completed');
      assert.ok(s.receipt && s.receipt.charged > 0n);

      // no fallback: an explicit estimate and max tokens skip the price lookup, yet the model must be priceable
      const q = new PricingEngine();
      const m2 = new BudgetManager({ store: freshUrl(kind), clock: new ManualClock(T0), pricing: q });
      let calls = 0;
      await assert.rejects(guardStream(m2, 'openai-chat', { subject: 'user:m', estimate: '0.10', maxOutputTokens: 50, requestId: 'um' },
        { model: 'brand-new-model' }, () => { calls++; return chunks(); }), UnknownModelError);
      assert.equal(calls, 0, 'the call is never made');
      assert.deepEqual(await m2.events({ requestId: 'um' }), [], 'nothing was held');
      m.close();
      m2.close();
    });

    test('openai: a stream without usage is committed with the estimate, marked incomplete', async () => {
      fake.reset({ chunks: 8, text: 'abcdefgh', omitUsage: true });
      const m = manager('user:d', '1');
      const client = openai();
      const stream = await guardOpenAIChatStream(m, { subject: 'user:d' }, chatParams(),
        (p, { signal }) => client.chat.completions.create(p, { signal }));
      for await (const _ of stream) { /* drain */ }
      assert.equal(stream.outcome, 'completed');
      assert.equal(stream.usage.complete, false);
      assert.equal(stream.usage.outputTokens, 16);  // 8 x 8 ASCII bytes / 4
      const ev = await m.events({ requestId: stream.reservation.requestId, type: 'commit' });
      assert.equal(ev[0].usage?.complete, false);
      m.close();
    });

    test('openai: a connection lost mid-stream rethrows, commits the estimate; an HTTP error releases', async () => {
      fake.reset({ chunks: 50, failAfter: 5 });
      const m = manager('user:e', '1');
      const client = openai();
      const stream = await guardOpenAIChatStream(m, { subject: 'user:e' }, chatParams(),
        (p, { signal }) => client.chat.completions.create(p, { signal }));
      await assert.rejects(async () => { for await (const _ of stream) { /* drain */ } },
        (e) => !(e instanceof BudgetExceededError));
      assert.equal(stream.outcome, 'failed');
      assert.ok(stream.receipt && stream.receipt.charged > 0n);
      assert.equal(findStatus(await m.status('user:e'), 'day').held, 0n);

      fake.reset({ status: 500 });
      const spent = findStatus(await m.status('user:e'), 'day').spent;
      await assert.rejects(guardOpenAIChatStream(m, { subject: 'user:e', requestId: 'e500' }, chatParams(),
        (p, { signal }) => client.chat.completions.create(p, { signal })), (e) => e instanceof OpenAI.APIError && e.status === 500);
      const st = findStatus(await m.status('user:e'), 'day');
      assert.equal(st.held, 0n);
      assert.equal(st.spent, spent);
      assert.deepEqual((await m.events({ requestId: 'e500' })).map((e) => e.type), ['reserve', 'release']);
      m.close();
    });

    test('openai: a denial throws before any request is made', async () => {
      fake.reset({});
      const m = manager('user:f', '0.00001');
      const client = openai();
      await assert.rejects(guardOpenAIChatStream(m, { subject: 'user:f' }, chatParams(1000),
        (p, { signal }) => client.chat.completions.create(p, { signal })), (e) => {
        assert.ok(e instanceof BudgetExceededError);
        assert.equal(e.hard, true);
        return true;
      });
      assert.equal(fake.state.requests.length, 0);
      m.close();
    });

    test('anthropic: messages.create({stream: true}) is committed with the cumulative usage', async () => {
      fake.reset({ chunks: 6, text: 'Bonjour ', promptTokens: 1000, cachedTokens: 800, tokensPerChunk: 5 });
      const m = manager('user:g', '1');
      const client = anthropic();
      /** @type {import('@anthropic-ai/sdk').Anthropic.MessageCreateParamsStreaming} */
      const params = { model: 'claude-sonnet-4-5', max_tokens: 256, messages: [{ role: 'user', content: 'Salut' }], stream: true };
      const stream = await guardAnthropicStream(m, { subject: 'user:g' }, params,
        (p, { signal }) => client.messages.create(p, { signal }));
      let text = '';
      for await (const ev of stream) if (ev.type === 'content_block_delta' && ev.delta.type === 'text_delta') text += ev.delta.text;
      assert.equal(text, 'Bonjour '.repeat(6));
      assert.equal(stream.outcome, 'completed');
      // 200 uncached * 3e-6 + 800 cached * 0.3e-6 + 30 out * 15e-6
      assert.equal(stream.receipt?.charged, usd('0.0006') + usd('0.00024') + usd('0.00045'));
      assert.equal(stream.usage.inputTokens, 1000);
      assert.equal(stream.usage.outputTokens, 30);
      m.close();
    });

    test('anthropic: messages.stream() is aborted on Stop', async () => {
      fake.reset({ chunks: 20000, text: 'the quick brown fox jumps ', delayMs: 1 });
      const m = manager('user:h', '0.002');
      const client = anthropic();
      /** @type {import('@anthropic-ai/sdk').Anthropic.MessageStreamParams} */
      const params = { model: 'claude-sonnet-4-5', max_tokens: 10, messages: [{ role: 'user', content: 'Go' }] };
      const stream = await guardAnthropicStream(m, { subject: 'user:h' }, params,
        (p, { signal }) => client.messages.stream(p, { signal }));
      let n = 0;
      await assert.rejects(async () => { for await (const _ of stream) n++; }, BudgetExceededError);
      assert.ok(n < 20000);
      assert.equal(stream.outcome, 'stopped');
      assert.ok(await waitFor(() => fake.state.aborted === 1));
      assert.equal(findStatus(await m.status('user:h'), 'day').held, 0n);
      m.close();
    });
  });
}
