#!/usr/bin/env node
// Builds the native batch seal/open addon (seal.cc) at `npm install` (package.json "install").
// Plain JavaScript: it runs before anything else of ours can. It never downloads anything: node-gyp
// is the copy bundled with npm, and Node's headers come from this Node's own install prefix
// (Debian/NodeSource install them as /usr/include/node). When the build cannot run (no compiler),
// the install still succeeds with a loud warning: the appliance then seals in JavaScript, several
// times slower, and test/split/native-seal.test.ts fails until the addon is built.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

function nodeGypScript() {
  // npm tells lifecycle scripts where its node-gyp is; otherwise look beside this Node's npm.
  const candidates = [
    process.env.npm_config_node_gyp,
    join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ];
  for (const c of candidates) if (c && existsSync(c)) return c;
  try {
    return createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js');
  } catch {
    return null;
  }
}

function nodeHeadersDir() {
  const prefix = join(dirname(process.execPath), '..');
  return existsSync(join(prefix, 'include', 'node', 'node_api.h')) ? prefix : null;
}

function warn(why) {
  process.stderr.write(
    `\n*** stripvault: the native seal addon was NOT built (${why}).\n` +
      '*** The appliance will seal and open blocks in JavaScript, several times slower.\n' +
      '*** Install g++, make and python3, then run: npm run build:native\n\n',
  );
}

if (process.env.STRIPVAULT_NATIVE_SEAL === '0') {
  process.stderr.write('stripvault: STRIPVAULT_NATIVE_SEAL=0, native seal addon not built\n');
  process.exit(0);
}
const gyp = nodeGypScript();
if (gyp === null) {
  warn('node-gyp not found');
  process.exit(0);
}
const headers = nodeHeadersDir();
const args = [gyp, 'rebuild', '--release'];
if (headers !== null) args.push(`--nodedir=${headers}`);
const r = spawnSync(process.execPath, args, { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
if (r.status !== 0) {
  warn(headers === null ? 'node-gyp failed; no Node headers beside this node' : 'node-gyp failed, see above');
  process.exit(process.argv.includes('--strict') ? 1 : 0);
}
