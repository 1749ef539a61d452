// @ts-check
// Process and worker teardown: exiting or terminating with work in flight, managers left
// open, callbacks registered. Each scenario runs in a child process (a crash there is an
// exit code and a stderr here, not a crash of the test runner).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { storeKinds, freshUrl } from './helpers.mjs';

const PKG = JSON.stringify(new URL('..', import.meta.url).pathname);

/** Runs CommonJS `code` in a fresh node process. @param {string} code */
function runChild(code) {
  const r = spawnSync(process.execPath, ['-e', code], { encoding: 'utf8', timeout: 60_000 });
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
