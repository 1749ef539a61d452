// npm "install" hook: builds the native addon unless it is already built (a clone where
// `npm run build` ran, or a linked directory), and, in a clone where `npm ci` installed the
// dev dependencies, the TypeScript layer too. Needs cmake >= 3.22, a C++20 compiler and the
// core's dev packages (see docs/node.md); downloads nothing (Node-API headers come from the
// node-api-headers npm package).
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const root = path.join(__dirname, '..');
const addon = path.join(root, 'build', 'Release', 'budget.node');
const dist = path.join(root, 'dist', 'index.js');

function resolveFrom(id) {
  try {
    return require.resolve(id, { paths: [root] });
  } catch {
    return null;
  }
}
function run(args) {
  const env = { ...process.env, CMAKE_BUILD_PARALLEL_LEVEL: process.env.CMAKE_BUILD_PARALLEL_LEVEL || '2' };
  const r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit', env });
  if (r.status !== 0) process.exit(r.status || 1);
}

if (!fs.existsSync(addon)) {
  const cmakeJs = resolveFrom('cmake-js/bin/cmake-js');
  if (!cmakeJs) {
    // `npm install /path/to/clone/bindings/node` links the directory without installing its
    // dependencies: the package must be built in the clone first.
    console.error(
      'libbudget: the native addon is not built and cmake-js is not installed here.\n' +
        `  Build the package first: cd ${root} && npm ci && npm run build\n` +
        '  (or install the tarball made by `npm pack` in that directory).',
    );
    process.exit(1);
  }
  run([cmakeJs, 'compile', '--parallel', process.env.CMAKE_BUILD_PARALLEL_LEVEL || '2']);
}
if (!fs.existsSync(dist)) {
  // A clone: `npm ci` in bindings/node installed TypeScript (a dev dependency); a packed
  // tarball ships dist/.
  const tsc = resolveFrom('typescript/bin/tsc');
  if (!tsc) {
    console.error('libbudget: dist/ is missing; run `npm run build:ts` (needs the dev dependencies).');
    process.exit(1);
  }
  run([tsc, '-p', 'tsconfig.json']);
  run([path.join(root, 'scripts', 'esm-wrapper.cjs')]);
}
