// Jest globalSetup: refuses to run tests against a native addon older than its sources.
//
// build/Release/keylatch_fastpath.node is not tracked by git, so a merge or checkout that
// changes native/ leaves the old build in place, and every test then exercises C code that is
// not in the tree. That went unnoticed once for a whole afternoon: an addon built before
// native ssrc() made the key-policy handover in test/nat/real-nat.test.ts fail (media stopped
// at the conntrack flush) and the failure was blamed on the newer C code it was not running.
// src/native-addon.ts catches an addon that lacks a function; this catches any older build.
const fs = require('node:fs');
const path = require('node:path');

const ADDON = path.join('build', 'Release', 'keylatch_fastpath.node');

/** Sources newer than the built addon, relative to root; [] if none (or if there is no build yet). */
function staleSources(root) {
  let built;
  try {
    built = fs.statSync(path.join(root, ADDON)).mtimeMs;
  } catch {
    return []; // no build: the first require of it says so
  }
  const native = path.join(root, 'native');
  const sources = ['binding.gyp', ...fs.readdirSync(native).filter((f) => /\.[ch]$/.test(f)).map((f) => path.join('native', f))];
  return sources.filter((f) => fs.statSync(path.join(root, f)).mtimeMs > built);
}

module.exports = async function checkNativeBuild(globalConfig) {
  const stale = staleSources(globalConfig.rootDir);
  if (stale.length > 0) {
    throw new Error(`${ADDON} is older than ${stale.join(', ')}: the tests would run C code that is not in the tree. Rebuild it: npm run build:native`);
  }
};
module.exports.staleSources = staleSources;
