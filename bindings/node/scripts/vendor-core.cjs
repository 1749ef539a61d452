// npm "prepack" hook: copies the C++ core (the public headers, src/, capi/, cmake/ and the
// root CMakeLists.txt) into deps/libbudget, so the packed tarball builds on its own, and the
// repository's LICENSE (Apache-2.0) to the package root, where npm packs it.
const fs = require('node:fs');
const path = require('node:path');
const pkg = path.join(__dirname, '..');
const repo = path.join(pkg, '..', '..');
if (!fs.existsSync(path.join(repo, 'include', 'budget', 'manager.hpp'))) {
  console.log('vendor-core: no repository around the package; keeping deps/ as it is');
  process.exit(0);
}
const dest = path.join(pkg, 'deps', 'libbudget');
fs.rmSync(dest, { recursive: true, force: true });
for (const item of ['CMakeLists.txt', 'cmake', 'include', 'src', 'capi', 'LICENSE']) {
  const from = path.join(repo, item);
  if (fs.existsSync(from)) fs.cpSync(from, path.join(dest, item), { recursive: true });
}
fs.copyFileSync(path.join(repo, 'LICENSE'), path.join(pkg, 'LICENSE'));
console.log(`vendor-core: copied the core into ${path.relative(pkg, dest)} and LICENSE into the package`);
