/**
 * The admin API on a real loopback port (ephemeral), backed by the in-memory FakeKeyManager, with
 * its log lines captured so tests can check what was (not) logged.
 */
import { randomBytes } from 'node:crypto';
import { buildApi, type ApiDeps } from '../../admin-ui/api.ts';
import { startApiServer } from '../../admin-ui/api-server.ts';
import { jsonLogger } from '../../appliance/log.ts';
import { FakeKeyManager } from './fake-key-manager.ts';

export interface FakeApi {
  readonly fake: FakeKeyManager;
  readonly token: string;
  /** e.g. http://127.0.0.1:40123 */
  readonly url: string;
  readonly logs: string[];
  close(): Promise<void>;
}

export async function startFakeApi(options: { token?: string; auditVerify?: ApiDeps['auditVerify']; unsealLimit?: ApiDeps['unsealLimit'] } = {}): Promise<FakeApi> {
  const fake = new FakeKeyManager();
  const token = options.token ?? randomBytes(32).toString('hex');
  const logs: string[] = [];
  const app = buildApi({
    keyManager: fake,
    volumeKeyOps: fake,
    token,
    log: jsonLogger({ level: 'debug', write: (l) => logs.push(l) }),
    ...(options.auditVerify ? { auditVerify: options.auditVerify } : {}),
    ...(options.unsealLimit ? { unsealLimit: options.unsealLimit } : {}),
  });
  const server = await startApiServer({ host: '127.0.0.1', port: 0, app });
  return { fake, token, url: server.url, logs, close: () => server.close() };
}
