#!/usr/bin/env -S node --max-semi-space-size=64
// stripvault's single command-line entry point. TypeScript sources run through tsx's loader, so
// there is no build step between a clone and a running appliance.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
