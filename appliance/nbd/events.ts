/** Structured log events from the NBD server, for the appliance's log and metrics. */
export type NbdEventName =
  | 'listening'
  | 'connection-open'
  | 'connection-refused'
  | 'connection-close'
  | 'handshake-timeout'
  | 'protocol-violation'
  | 'tls-upgrade-failed'
  | 'export-refused'
  | 'transmission-start'
  | 'request-failed'
  | 'server-closing';

export interface NbdEvent {
  event: NbdEventName;
  connection?: number;
  remote?: string;
  export?: string;
  message?: string;
  detail?: Record<string, unknown>;
}

export type NbdLog = (event: NbdEvent) => void;
