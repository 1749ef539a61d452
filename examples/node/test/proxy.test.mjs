// @ts-check
// The Express example end to end: client -> guarded proxy -> fake provider (loopback).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { BudgetManager, ManualClock, PricingEngine } from 'libbudget';
import { createApp } from '../server.mjs';
import { startFakeProvider } from '../../../bindings/node/test/fake-provider.mjs';

/** @type {Awaited<ReturnType<typeof startFakeProvider>>} */
let fake;
before(async () => { fake = await startFakeProvider(); });
after(async () => { await fake.close(); });

/** @param {import('libbudget').LimitSpec[]} limits */
async function proxy(limits) {
  const pricing = new PricingEngine();
  pricing.setPrice('gpt-4o-mini', { provider: 'openai', input: '0.00000015', output: '0.0000006' });
  const manager = new BudgetManager({ store: 'memory', pricing, limits, clock: new ManualClock(Date.UTC(2026, 2, 10, 12)) });
  const server = createApp({ manager, upstream: `${fake.url}/v1` }).listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  const port = /** @type {import('node:net').AddressInfo} */ (server.address()).port;
  /** @param {object} body @param {Record<string, string>} [headers] */
  const post = (body, headers = { 'x-user-id': 'alice' }) => fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  return { manager, post, close: () => new Promise((r) => server.close(r)) };
}

const chat = (max = 100) => ({ model: 'gpt-4o-mini', stream: true, max_tokens: max, messages: [{ role: 'user', content: 'hi' }] });

test('a streamed answer passes through and is charged the provider usage', async () => {
  fake.reset({ chunks: 5, text: 'Hi! ', promptTokens: 20, tokensPerChunk: 2 });
  const p = await proxy([{ scope: 'user:*', window: 'day', amount: '1' }]);
  const r = await p.post(chat());
  assert.equal(r.status, 200);
  const text = await r.text();
  assert.match(text, /"content":"Hi! "/);
  assert.match(text, /data: \[DONE\]/);
  assert.equal(fake.state.requests[0].body.stream_options.include_usage, true);
  const st = (await p.manager.status('user:alice')).find((s) => s.window === 'day');
  // 20 in * 0.15e-6 + 10 out * 0.6e-6 = 0.000009
  assert.equal(st?.spent, 9000n);
  assert.equal(st?.held, 0n);
  await p.close();
});

test('an upstream answer whose usage cannot be read answers 502 and charges the hold, which does not stay held', async () => {
  fake.reset({});  // the fake answers every call with an event stream: not the JSON a non-streamed call expects
  const p = await proxy([{ scope: 'user:*', window: 'day', amount: '1' }]);
  const r = await p.post({ ...chat(), stream: false });
  assert.equal(r.status, 502);
  assert.equal((await r.json()).error.code, 'upstream_error');
  const st = (await p.manager.status('user:alice')).find((s) => s.window === 'day');
  assert.equal(st?.held, 0n);
  assert.ok((st?.spent ?? 0n) > 0n);  // the hold was charged
  await p.close();
});

test('a hard cap answers 402 with x-should-retry: false and an OpenAI-shaped error', async () => {
  fake.reset({});
  const p = await proxy([{ scope: 'user:*', window: 'day', amount: '0.001' }]);
  await p.manager.record('user:alice', '0.001');
  const r = await p.post(chat());
  assert.equal(r.status, 402);
  assert.equal(r.headers.get('x-should-retry'), 'false');
  const body = await r.json();
  assert.equal(body.error.type, 'insufficient_quota');
  assert.equal(body.error.code, 'budget_exceeded');
  assert.equal(body.error.param, null);
  assert.match(body.error.message, /user:alice/);
  assert.equal(fake.state.requests.length, 0);
  await p.close();
});

test('headroom held by in-flight requests answers 429 with Retry-After', async () => {
  fake.reset({});
  const p = await proxy([{ scope: 'user:*', window: 'day', amount: '0.001' }]);
  const held = await p.manager.reserve('user:alice', '0.00099');
  assert.equal(held.allowed, true);
  const r = await p.post(chat());
  assert.equal(r.status, 429);
  assert.ok(Number(r.headers.get('retry-after')) >= 1);
  assert.equal((await r.json()).error.code, 'budget_headroom');
  await p.close();
});

test('a requests-per-minute limit answers 429 with Retry-After until the window resets', async () => {
  fake.reset({ chunks: 1 });
  const p = await proxy([{ scope: 'user:*', window: 'minute', amount: 1, metric: 'requests' }]);
  assert.equal((await p.post(chat())).status, 200);
  const r = await p.post(chat());
  assert.equal(r.status, 429);
  assert.equal((await r.json()).error.code, 'rate_limit_exceeded');
  assert.ok(Number(r.headers.get('retry-after')) <= 60);
  assert.equal((await p.post(chat(), { 'x-user-id': 'bob' })).status, 200);
  await p.close();
});

test('a stream that runs out of budget is cut with an error event; nothing stays held', async () => {
  fake.reset({ chunks: 2000, text: 'lorem ipsum dolor sit amet ', delayMs: 0 });
  const p = await proxy([{ scope: 'user:*', window: 'day', amount: '0.0003' }]);
  const r = await p.post(chat(10));
  assert.equal(r.status, 200);
  const text = await r.text();
  assert.match(text, /"code":"budget_exceeded"/);
  assert.doesNotMatch(text, /\[DONE\]/);
  const st = (await p.manager.status('user:alice')).find((s) => s.window === 'day');
  assert.equal(st?.held, 0n);
  assert.ok((st?.spent ?? 0n) > 0n);
  await p.close();
});

test('malformed requests and unknown models answer 400', async () => {
  fake.reset({});
  const p = await proxy([]);
  assert.equal((await p.post({ model: 'gpt-4o-mini' })).status, 400);
  const r = await p.post({ ...chat(), model: 'no-such-model' });
  assert.equal(r.status, 400);
  assert.equal((await r.json()).error.code, 'model_not_found');
  // values that libbudget rejects (InvalidArgumentError): the client's mistake, an OpenAI-shaped 400
  try {
    for (const [body, headers] of /** @type {[object, Record<string, string> | undefined][]} */ ([
      [{ ...chat(), max_tokens: '100' }, undefined],
      [{ ...chat(), max_tokens: -5 }, undefined],
      [chat(), { 'x-user-id': 'u'.repeat(300) }],
    ])) {
      const bad = await p.post(body, headers);
      assert.equal(bad.status, 400, JSON.stringify(body).slice(0, 80));
      const e = (await bad.json()).error;
      assert.equal(e.type, 'invalid_request_error');
      assert.equal(e.code, 'invalid_request');
    }
    assert.equal(fake.state.requests.length, 0);
  } finally {
    await p.close();
  }
});
