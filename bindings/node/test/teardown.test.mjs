// @ts-check
// Process and worker teardown: exiting or terminating with work in flight, managers left
// open, callbacks registered. Each scenario runs in a child process (a crash there is an
// exit code and a stderr here, not a crash of the test runner).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { storeKinds, freshUrl } from './helpers.mjs';

const PKG = JSON.stringify(new URL('..', import.meta.url).pathname);

/** Runs CommonJS `code` in a fresh node process. @param {string} code @param {string[]} flags */
function runChild(code, flags = []) {
  const r = spawnSync(process.execPath, [...flags, '-e', code], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

for (const kind of storeKinds()) {
  test(`store=${kind}: a worker terminated with store calls in flight ends cleanly (the process lives on)`, () => {
    const url = freshUrl(kind);
    const r = runChild(`
      const { Worker } = require('node:worker_threads');
      const code = \`
        const { parentPort, workerData } = require('node:worker_threads');
        const { BudgetManager } = require(${PKG});
        const m = new BudgetManager({ store: workerData.url, offload: true,
          limits: [{ scope: 'user:*', window: 'day', amount: '1000' }] });
        for (let i = 0; i < 200; i++) m.reserve('user:a', '0.01').then((d) => m.commit(d.reservation, '0.01'));
        parentPort.postMessage('started');
      \`;
      (async () => {
        for (let k = 0; k < 5; k++) {
          const w = new Worker(code, { eval: true, workerData: { url: ${JSON.stringify(url)} } });
          await new Promise((resolve) => w.once('message', resolve));
          await w.terminate();
        }
        console.log('main alive');
      })();
    `);
    assert.equal(r.signal, null, r.stderr);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /main alive/);
  });
}

for (const kind of storeKinds()) {
  test(`store=${kind}: a process or worker that exits with a manager left open, callbacks registered, ends cleanly`, () => {
    const url = freshUrl(kind);
    const body = `
      const { BudgetManager } = require(${PKG});
      const m = new BudgetManager({ store: ${JSON.stringify(url)},
        limits: [{ scope: 'user:*', window: 'day', amount: '1', alerts: [50] }],
        onAlert: () => {}, onDenial: () => {} });
      m.record('user:a', '0.6').then(() => m.reserve('user:a', '5'));  // an alert and a denial
    `;
    let r = runChild(body);  // the main thread exits with the manager open
    assert.equal(r.signal, null, r.stderr);
    assert.equal(r.status, 0, r.stderr);
    r = runChild(`
      const { Worker } = require('node:worker_threads');
      (async () => {
        for (let k = 0; k < 3; k++) {
          const w = new Worker(${JSON.stringify(body)}, { eval: true });
          await new Promise((resolve) => w.once('exit', resolve));
        }
        console.log('main alive');
      })();
    `);
    assert.equal(r.signal, null, r.stderr);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /main alive/);
  });
}

test('a manager with callbacks that is garbage-collected while its calls run does not crash', () => {
  const r = spawnSync(process.execPath, ['--expose-gc', '-e', `
    const { BudgetManager } = require(${PKG});
    (async () => {
      for (let k = 0; k < 20; k++) {
        const m = new BudgetManager({ store: 'memory', offload: true,
          limits: [{ scope: 'user:*', window: 'day', amount: '1', alerts: [1, 2, 3, 50, 80] }],
          onAlert: () => {}, onDenial: () => {} });
        const ps = [];
        for (let i = 0; i < 50; i++) ps.push(m.reserve('user:a', '0.03').then((d) => d.allowed && m.commit(d.reservation, '0.03')));
        globalThis.gc();  // the JS manager is unreachable below; its calls still run
        await Promise.all(ps);
      }
      for (let i = 0; i < 5; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 10)); }
      console.log('main alive');
    })();
  `], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.signal, null, r.stderr);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /main alive/);
});

test('a callback that returns a rejected Promise (an async callback that throws) is a warning, not a crash', () => {
  const r = runChild(`
    const { BudgetManager } = require(${PKG});
    process.on('warning', (w) => console.log('warning: ' + w.message.split('\\n')[0]));
    const m = new BudgetManager({ store: 'memory', limits: [{ scope: 'user:*', window: 'day', amount: '1', alerts: [50] }],
      onAlert: async () => { throw new Error('alert boom'); },
      onDenial: () => Promise.reject(new Error('denial boom')) });
    (async () => {
      await m.record('user:a', '0.6');
      await m.reserve('user:a', '5');
      await new Promise((resolve) => setTimeout(resolve, 100));
      console.log('main alive');
      m.close();
    })();
  `);
  assert.equal(r.signal, null, r.stderr);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /warning: libbudget: the alert callback threw: Error: alert boom/);
  assert.match(r.stdout, /warning: libbudget: the denial callback threw: Error: denial boom/);
  assert.match(r.stdout, /main alive/);
});

for (const kind of storeKinds()) {
  test(`store=${kind}: callbacks that refer to their manager (a service observing it) do not keep it alive`, () => {
    const url = freshUrl(kind);
    const r = runChild(`
      const { BudgetManager } = require(${PKG});
      class Service {
        constructor() {
          this.alerts = [];
          this.m = new BudgetManager({ store: ${JSON.stringify(url)},
            limits: [{ scope: 'user:*', window: 'day', amount: '1', alerts: [50] }],
            onAlert: (a) => this.alerts.push(a.thresholdPct), onDenial: () => this.m.now() });
        }
      }
      (async () => {
        let svc = new Service();
        await svc.m.record('user:gc', '0.6');
        await svc.m.reserve('user:gc', '5');  // a denial callback that uses the manager
        for (let i = 0; i < 100 && svc.alerts.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
        console.log('alerts ' + svc.alerts.join(','));
        const ref = new WeakRef(svc.m);
        svc = null;
        for (let i = 0; i < 20 && ref.deref(); i++) {
          await new Promise((r) => setTimeout(r, 5));
          globalThis.gc();
        }
        console.log(ref.deref() ? 'leaked' : 'collected');
      })();
    `, ['--expose-gc']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /alerts 50\n/);  // the relay reaches the callback
    assert.match(r.stdout, /collected/, 'the cycle service -> manager -> callback -> service was not collected');
  });
}

/**
 * The child's preamble for the dropped-stream tests: a manager `m` on `url` with a $1 daily
 * limit per user, a price for 'm-1', an `aborted` flag for the call's signal,
 * `guardedStream(requestId, chunks)` and `eventsOnceCollected(requestId)`.
 * @param {string} url
 */
function guardedChild(url) {
  return `
      const { BudgetManager, PricingEngine, guardOpenAIChatStream } = require(${PKG});
      const pricing = new PricingEngine();
      pricing.setPrice('m-1', { provider: 'openai', input: '0.000001', output: '0.000002' });
      const m = new BudgetManager({ store: ${JSON.stringify(url)}, pricing,
        limits: [{ scope: 'user:*', window: 'day', amount: '1' }] });
      let aborted = false;
      // A guarded OpenAI stream of 'user:gc' whose (fake) call yields \`chunks\`; an abort of the
      // call's signal sets \`aborted\`.
      function guardedStream(requestId, chunks) {
        return guardOpenAIChatStream(m, { subject: ['user:gc'], requestId },
          { model: 'm-1', messages: [{ role: 'user', content: 'hi' }], max_tokens: 100, stream: true },
          (_p, { signal }) => {
            signal.addEventListener('abort', () => { aborted = true; });
            return (async function* () { yield* chunks; })();
          });
      }
      // Collects garbage until the request is settled (committed or released); its events.
      async function eventsOnceCollected(requestId) {
        for (let i = 0; i < 50; i++) {
          globalThis.gc();
          await new Promise((r) => setTimeout(r, 10));
          const ev = await m.events({ requestId });
          if (ev.some((e) => e.type === 'commit' || e.type === 'release')) break;
        }
        return m.events({ requestId });
      }`;
}

for (const kind of storeKinds()) {
  test(`store=${kind}: a guarded stream dropped unread has its call aborted and its hold released when collected`, () => {
    const url = freshUrl(kind);
    const r = runChild(`
${guardedChild(url)}
      (async () => {
        let s = await guardedStream('dropped-1', [{ choices: [] }]);
        const held = (await m.status('user:gc'))[0].held;
        s = null;  // an error in the caller's code: the stream is never read
        const ev = await eventsOnceCollected('dropped-1');
        const st = (await m.status('user:gc'))[0];
        console.log(JSON.stringify({ heldBefore: String(held), held: String(st.held), types: ev.map((e) => e.type), aborted }));
      })();
    `, ['--expose-gc']);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim());
    assert.notEqual(out.heldBefore, '0');
    assert.deepEqual(out.types, ['reserve', 'release'], 'the hold was not released: it waits for its TTL');
    assert.equal(out.held, '0');
    assert.equal(out.aborted, true);
  });
}

for (const kind of storeKinds()) {
  test(`store=${kind}: a guarded stream dropped part-way through is committed as the estimate when collected`, () => {
    const url = freshUrl(kind);
    const r = runChild(`
${guardedChild(url)}
      (async () => {
        let s = await guardedStream('partial-1',
          Array.from({ length: 5 }, () => ({ choices: [{ delta: { content: 'twelve chars' } }] })));
        let it = s[Symbol.asyncIterator]();
        await it.next();
        await it.next();  // two chunks read, then the caller drops the stream without return()
        it = null;
        s = null;
        const ev = await eventsOnceCollected('partial-1');
        const st = (await m.status('user:gc'))[0];
        const commit = ev.find((e) => e.type === 'commit');
        console.log(JSON.stringify({ held: String(st.held), spent: String(st.spent), types: ev.map((e) => e.type),
          complete: commit && commit.usage ? commit.usage.complete : null, aborted }));
      })();
    `, ['--expose-gc']);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim());
    assert.equal(out.types.filter((/** @type {string} */ t) => t === 'commit').length, 1, `not committed when collected: ${out.types}`);
    assert.equal(out.types.includes('release'), false);
    assert.equal(out.held, '0');
    assert.notEqual(out.spent, '0');  // what streamed is billed
    assert.equal(out.complete, false);
    assert.equal(out.aborted, true);
  });
}
