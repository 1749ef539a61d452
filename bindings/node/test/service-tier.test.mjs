// @ts-check
// Usage.serviceTier: a call is priced at the tier its usage names (the provider's answer),
// which wins over the `tier` option; the extractors fill it in; the ledger keeps it; a name
// that is not a tier is refused before anything changes. Every path: the scratch-buffer fast
// paths (plain usage objects) and the general conversion (a usage with a null field, quote).
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  BudgetManager, ManualClock, PricingEngine, InvalidArgumentError, usageFromResponse, StreamUsage, guardStream,
} from 'libbudget';
import { storeKinds, freshUrl, T0, usd } from './helpers.mjs';

const TABLE = `!budget-prices 1
tiered provider=openai mode=chat in=1e-6 out=2e-6 in/priority=2e-6 out/priority=4e-6 in/batch=5e-7 out/batch=1e-6
`;
function engine() {
  const p = new PricingEngine();
  const rep = p.loadCompact(TABLE);
  assert.equal(rep.loaded, 1);
  return p;
}
// 1000 in + 100 out
const STANDARD = usd('0.0012');
const PRIORITY = usd('0.0024');
const BATCH = usd('0.0006');
const U = { inputTokens: 1000, outputTokens: 100 };

/**
 * The same usage through the fast path (plain fields) and the general one (a null field
 * makes putUsage decline, so the addon converts the object itself).
 * @param {import('libbudget').UsageInput} u
 * @returns {[string, import('libbudget').UsageInput][]}
 */
const bothPaths = (u) => [['fast', u], ['general', { ...u, images: /** @type {any} */ (null) }]];

const BAD_TIERS = /** @type {any[]} */ (['gold', 'Priority', 'PRIORITY', '', ' priority', 'scale', 3, true, {}, 'auto']);

test('cost: priced at the tier the usage names; standard and default price as standard', () => {
  const p = engine();
  for (const [path, u] of [...bothPaths({ ...U, serviceTier: 'priority' })]) {
    assert.equal(p.cost('tiered', u), PRIORITY, path);
  }
  assert.equal(p.quote('tiered', { ...U, serviceTier: 'priority' }).cost, PRIORITY);
  for (const [path, u] of [...bothPaths({ ...U, serviceTier: 'batch' })]) assert.equal(p.cost('tiered', u), BATCH, path);
  for (const tier of /** @type {const} */ (['standard', 'default', undefined])) {
    for (const [path, u] of bothPaths({ ...U, serviceTier: tier })) assert.equal(p.cost('tiered', u), STANDARD, `${tier} ${path}`);
    assert.equal(p.quote('tiered', { ...U, serviceTier: tier }).cost, STANDARD, String(tier));
  }
  // flex has no prices in the table: the standard price
  assert.equal(p.cost('tiered', { ...U, serviceTier: 'flex' }), STANDARD);
});

test('cost: the usage\'s tier wins over the tier option, which applies only to a standard usage', () => {
  const p = engine();
  for (const [path, u] of bothPaths({ ...U, serviceTier: 'priority' })) {
    assert.equal(p.cost('tiered', u, { tier: 'batch' }), PRIORITY, path);
    assert.equal(p.cost('tiered', u, { tier: 'standard' }), PRIORITY, path);
  }
  assert.equal(p.quote('tiered', { ...U, serviceTier: 'priority' }, { tier: 'batch' }).cost, PRIORITY);
  for (const tier of /** @type {const} */ (['standard', 'default', undefined])) {
    for (const [path, u] of bothPaths({ ...U, serviceTier: tier })) {
      assert.equal(p.cost('tiered', u, { tier: 'batch' }), BATCH, `${tier} ${path}`);
      assert.equal(p.cost('tiered', u, { tier: 'priority' }), PRIORITY, `${tier} ${path}`);
    }
  }
  // the option takes the core's names too ('default' = standard)
  assert.equal(p.cost('tiered', U, { tier: 'default' }), STANDARD);
  assert.equal(p.quote('tiered', U, { tier: 'default' }).cost, STANDARD);
});

test('cost: a serviceTier that is not a tier name is an InvalidArgumentError (usage and option)', () => {
  const p = engine();
  for (const bad of BAD_TIERS) {
    for (const [path, u] of bothPaths({ ...U, serviceTier: bad })) {
      assert.throws(() => p.cost('tiered', u), InvalidArgumentError, `${JSON.stringify(bad)} ${path}`);
    }
    assert.throws(() => p.quote('tiered', { ...U, serviceTier: bad }), InvalidArgumentError, JSON.stringify(bad));
    assert.throws(() => p.cost('tiered', U, { tier: bad }), InvalidArgumentError, `option ${JSON.stringify(bad)}`);
  }
  assert.throws(() => p.cost('tiered', { ...U, serviceTier: /** @type {any} */ ('gold') }), /usage\.serviceTier/);
  // the fast path still works afterwards (no slot left over from a refused call)
  assert.equal(p.cost('tiered', U), STANDARD);
});

/** @param {string | undefined} tier */
const chatResponse = (tier) => JSON.stringify({
  id: 'chatcmpl-1', object: 'chat.completion', model: 'tiered', ...(tier === undefined ? {} : { service_tier: tier }),
  choices: [{ index: 0, message: { role: 'assistant', content: 'hi' }, finish_reason: 'stop' }],
  usage: { prompt_tokens: 1000, completion_tokens: 100, total_tokens: 1100 },
});
/** @param {string | undefined} tier */
const chatChunks = (tier) => {
  const t = tier === undefined ? {} : { service_tier: tier };
  return [
    { id: 'c', object: 'chat.completion.chunk', model: 'tiered', ...t, choices: [{ index: 0, delta: { content: 'Hel' } }] },
    { id: 'c', object: 'chat.completion.chunk', model: 'tiered', ...t, choices: [{ index: 0, delta: { content: 'lo' }, finish_reason: 'stop' }] },
    { id: 'c', object: 'chat.completion.chunk', model: 'tiered', ...t, choices: [],
      usage: { prompt_tokens: 1000, completion_tokens: 100, total_tokens: 1100 } },
  ];
};

test('extraction: OpenAI service_tier reaches usage.serviceTier (response, stream bytes, stream events)', () => {
  const p = engine();
  for (const [tier, want] of /** @type {const} */ ([['priority', 'priority'], ['flex', 'flex'], ['default', 'standard'], [undefined, 'standard']])) {
    const u = usageFromResponse('openai-chat', chatResponse(tier));
    assert.equal(u.serviceTier, want, `response ${tier}`);
    assert.equal(u.inputTokens, 1000);
    assert.equal(usageFromResponse('openai-chat', JSON.parse(chatResponse(tier))).serviceTier, want);
    // the extracted usage prices at its tier as is
    assert.equal(p.cost('tiered', u), want === 'priority' ? PRIORITY : STANDARD);
    const sse = chatChunks(tier).map((c) => `data: ${JSON.stringify(c)}\n\n`).join('') + 'data: [DONE]\n\n';
    const s = new StreamUsage('openai-chat');
    s.feed(Buffer.from(sse));
    const f = s.finish();
    assert.equal(f.serviceTier, want, `stream ${tier}`);
    assert.equal(f.complete, true);
    const e = new StreamUsage('openai-chat');
    const chunks = chatChunks(tier);
    e.feedEvent(chunks[0]);
    assert.equal(e.usage.serviceTier, want, `running estimate ${tier}`);
    for (const c of chunks.slice(1)) e.feedEvent(c);
    assert.equal(e.finish().serviceTier, want, `events ${tier}`);
  }
  // output always carries serviceTier, also for a usage without one
  assert.equal(usageFromResponse('openai-chat', '{}').serviceTier, 'standard');
});

test('extraction: Anthropic usage.service_tier reaches usage.serviceTier', () => {
  const body = { id: 'msg_1', type: 'message', role: 'assistant', model: 'claude-x', content: [],
    usage: { input_tokens: 10, output_tokens: 5, service_tier: 'priority' } };
  assert.equal(usageFromResponse('anthropic', body).serviceTier, 'priority');
  body.usage.service_tier = 'standard';
  assert.equal(usageFromResponse('anthropic', body).serviceTier, 'standard');
});

for (const kind of storeKinds()) {
  describe(`store=${kind}`, () => {
    function make() {
      const clock = new ManualClock(T0);
      const m = new BudgetManager({ store: freshUrl(kind), clock, pricing: engine(),
        limits: [{ scope: 'user:*', window: 'day', amount: '10.00' }] });
      return m;
    }
    /** @param {BudgetManager} m */
    async function spent(m) {
      const st = (await m.status('user:a')).find((s) => s.window === 'day' && s.metric === 'cost');
      assert.ok(st);
      return st.spent;
    }

    test('commit and record with a priority usage charge the priority price; the ledger keeps the tier', async () => {
      const m = make();
      let total = 0n;
      for (const [path, usage] of bothPaths({ ...U, serviceTier: 'priority' })) {
        const d = await m.reserve(['user:a'], { model: 'tiered', usage: U }, { requestId: `c-${path}` });
        assert.ok(d.reservation);
        assert.equal(d.estimate, STANDARD);
        const rc = await m.commit(d.reservation, { model: 'tiered', usage });
        assert.equal(rc.charged, PRIORITY, `commit ${path}`);
        const rr = await m.record(['user:a'], { model: 'tiered', usage, provider: 'openai' }, { requestId: `r-${path}` });
        assert.equal(rr.charged, PRIORITY, `record ${path}`);
        total += 2n * PRIORITY;
      }
      // a reservation priced at its usage's tier too
      const d = await m.reserve(['user:a'], { model: 'tiered', usage: { ...U, serviceTier: 'priority' } }, { requestId: 'h-1' });
      assert.equal(d.estimate, PRIORITY);
      assert.ok(d.reservation);
      const std = await m.commit(d.reservation, { model: 'tiered', usage: { ...U, serviceTier: 'default' } });
      assert.equal(std.charged, STANDARD);
      total += STANDARD;
      assert.equal(await spent(m), total);

      for (const id of ['c-fast', 'c-general', 'r-fast', 'r-general']) {
        const evs = await m.events({ requestId: id });
        const ev = evs.find((e) => e.type === 'commit' || e.type === 'record');
        assert.ok(ev, id);
        assert.equal(ev.usage?.serviceTier, 'priority', id);
        assert.equal(ev.usage?.inputTokens, 1000);
        const line = (await m.exportJsonl({ requestId: id })).split('\n').find((l) => l.includes(`"${ev.type}"`));
        assert.ok(line, id);
        assert.equal(JSON.parse(line).usage.service_tier, 'priority', id);
      }
      // a standard usage: serviceTier 'standard' in the event, no service_tier in the JSON
      const ev = (await m.events({ requestId: 'h-1' })).find((e) => e.type === 'commit');
      assert.equal(ev?.usage?.serviceTier, 'standard');
      const line = (await m.exportJsonl({ requestId: 'h-1' })).split('\n').find((l) => l.includes('"commit"'));
      assert.ok(line);
      assert.equal('service_tier' in JSON.parse(line).usage, false);
      assert.equal((await m.verify()).ok, true);
      m.close();
    });

    test('a bad serviceTier is refused with no state change (commit, record, reserve)', async () => {
      const m = make();
      const d = await m.reserve(['user:a'], { model: 'tiered', usage: U }, { requestId: 'keep' });
      assert.ok(d.reservation);
      const before = await m.events();
      for (const bad of BAD_TIERS) {
        for (const [path, usage] of bothPaths({ ...U, serviceTier: bad })) {
          const what = `${JSON.stringify(bad)} ${path}`;
          await assert.rejects(m.commit(d.reservation, { model: 'tiered', usage }), InvalidArgumentError, `commit ${what}`);
          await assert.rejects(m.record(['user:a'], { model: 'tiered', usage }, { requestId: 'bad-rec' }), InvalidArgumentError, `record ${what}`);
          await assert.rejects(m.reserve(['user:a'], { model: 'tiered', usage }, { requestId: 'bad-res' }), InvalidArgumentError, `reserve ${what}`);
          await assert.rejects(m.check(['user:a'], { model: 'tiered', usage }), InvalidArgumentError, `check ${what}`);
        }
      }
      assert.deepEqual((await m.events()).map((e) => [e.seq, e.type, e.requestId]), before.map((e) => [e.seq, e.type, e.requestId]));
      assert.equal(await spent(m), 0n);
      // the reservation is intact: committed later at the usage's tier
      const rc = await m.commit(d.reservation, { model: 'tiered', usage: { ...U, serviceTier: 'priority' } });
      assert.equal(rc.charged, PRIORITY);
      assert.equal(rc.replayed, false);
      assert.equal(await spent(m), PRIORITY);
      m.close();
    });

    test('a guarded OpenAI stream whose chunks say service_tier "priority" commits at the priority price', async () => {
      const m = make();
      /** @returns {AsyncIterable<any>} */
      async function* source() { yield* chatChunks('priority'); }
      const stream = await guardStream(m, 'openai-chat', { subject: ['user:a'], requestId: 'g-1', provider: 'openai', inputTokens: 1000, maxOutputTokens: 100 },
        { model: 'tiered' }, () => source());
      for await (const _ of stream) { /* drain */ }
      assert.equal(stream.receipt?.charged, PRIORITY);
      assert.equal(stream.usage.serviceTier, 'priority');
      const ev = (await m.events({ requestId: 'g-1' })).find((e) => e.type === 'commit');
      assert.equal(ev?.usage?.serviceTier, 'priority');
      assert.equal(await spent(m), PRIORITY);
      m.close();
    });

    test('a guarded OpenAI request for service_tier "priority" is held at the priority price ("auto" at standard)', async () => {
      const m = make();
      /** @returns {AsyncIterable<any>} */
      async function* source() { yield* chatChunks('priority'); }
      const opts = { subject: ['user:a'], provider: 'openai', inputTokens: 1000, maxOutputTokens: 100 };
      const held = async (/** @type {string} */ id, /** @type {any} */ params) => {
        const stream = await guardStream(m, 'openai-chat', { ...opts, requestId: id }, params, () => source());
        const h = (await m.status('user:a')).find((s) => s.metric === 'cost')?.held;
        for await (const _ of stream) { /* drain */ }
        return h;
      };
      assert.equal(await held('g-p', { model: 'tiered', service_tier: 'priority' }), PRIORITY);  // was STANDARD
      assert.equal(await held('g-a', { model: 'tiered', service_tier: 'auto' }), STANDARD);
      m.close();
    });
  });
}
