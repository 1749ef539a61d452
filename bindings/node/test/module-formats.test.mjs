// @ts-check
// The package works from ESM and CommonJS, sharing one addon and one set of classes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import * as esm from 'libbudget';
import esmDefault from 'libbudget';

test('ESM named + default exports and CommonJS require agree', () => {
  const require = createRequire(import.meta.url);
  const cjs = require('libbudget');
  assert.equal(cjs.BudgetManager, esm.BudgetManager);
  assert.equal(esmDefault.BudgetExceededError, esm.BudgetExceededError);
  assert.equal(typeof esm.version, 'string');
  assert.equal(esm.napiVersion, 8);
  for (const name of Object.keys(cjs)) assert.ok(name in esm, `ESM exports ${name}`);
});
