// npm "install" hook: builds the native addon unless it is already built (a clone where
// `npm run build` ran, or a linked directory). Needs cmake >= 3.22, a C++20 compiler and
// the core's dev packages (see docs/node.md); downloads nothing (Node-API headers come from
// the node-api-headers npm package).
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const root = path.join(__dirname, '..');
if (fs.existsSync(path.join(root, 'build', 'Release', 'budget.node'))) process.exit(0);
const env = { ...process.env, CMAKE_BUILD_PARALLEL_LEVEL: process.env.CMAKE_BUILD_PARALLEL_LEVEL || '2' };
const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
const r = spawnSync(process.execPath, [cmakeJs, 'compile', '--parallel', env.CMAKE_BUILD_PARALLEL_LEVEL], { cwd: root, stdio: 'inherit', env });
if (r.status !== 0) process.exit(r.status || 1);
if (!fs.existsSync(path.join(root, 'dist', 'index.js'))) {
  console.error('libbudget: dist/ is missing; run `npm run build:ts` (needs the dev dependencies).');
  process.exit(1);
}
