// REST + websocket client of the Cake server extension (/cake/api/...).
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export interface IPing {
  state: string | null;
  idle_seconds: number | null;
  idle_minutes: number | null;
  at: number;
}

export interface ISession {
  id: string;
  name: string;
  owner: string;
  target: string;
  infra: string;
  gpus: string;
  backend: string;
  state: string;
  reason: string | null;
  where: string;
  created: number;
  updated: number;
  price_per_hour: number | null;
  idle_minutes: number | null;
  ping: IPing | null;
}

export interface IRun {
  id: string;
  session_id: string;
  state: string;
  kind: string;
  detached: boolean;
  error: string | null;
  created: number;
  started: number | null;
  ended: number | null;
  notebook: string;
  cell: string;
  code: string;
}

export interface ITarget {
  name: string;
  resources: string;
  backend: string;
  ok: boolean;
  note: string;
}

export interface ITargets {
  targets: ITarget[];
  config_path: string;
  backends: string[];
  error: string | null;
}

/** An error the panel can explain: status 404 on /health means the server extension is not enabled. */
export class ApiError extends Error {
  constructor(
    message: string,
    public status: number
  ) {
    super(message);
  }
}

export async function request<T>(path: string, init: RequestInit = {}): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'cake/api', path);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ApiError(`The Jupyter server cannot be reached: ${error}`, 0);
  }
  const text = await response.text();
  let data: any = {};
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    data = { message: text };
  }
  if (!response.ok) {
    throw new ApiError(data.message || data.reason || response.statusText, response.status);
  }
  return data as T;
}

export function post<T>(path: string, body: unknown = {}): Promise<T> {
  return request<T>(path, { method: 'POST', body: JSON.stringify(body) });
}

export type Message = { type: string; [key: string]: any };

/** The one websocket of the panel: state changes and the output of subscribed runs. Reconnects. */
export class Live {
  constructor(private onMessage: (msg: Message) => void, private onState: (open: boolean) => void) {}

  start(): void {
    this.stopped = false;
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    this.socket?.close();
  }

  subscribe(runId: string | null): void {
    if (this.subscribed && this.subscribed !== runId) {
      this.send({ type: 'unsubscribe', run: this.subscribed });
    }
    this.subscribed = runId;
    if (runId) {
      this.send({ type: 'subscribe', run: runId });
    }
  }

  private send(msg: Message): void {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(msg));
    }
  }

  private connect(): void {
    const settings = ServerConnection.makeSettings();
    let url = URLExt.join(settings.wsUrl, 'cake/api/ws');
    if (settings.token) {
      url += `?token=${encodeURIComponent(settings.token)}`;
    }
    const socket = new settings.WebSocket(url);
    this.socket = socket;
    socket.onopen = () => {
      this.delay = 1000;
      this.onState(true);
      if (this.subscribed) {
        this.send({ type: 'subscribe', run: this.subscribed });
      }
    };
    socket.onmessage = event => this.onMessage(JSON.parse(event.data));
    socket.onclose = () => {
      this.onState(false);
      if (!this.stopped) {
        window.setTimeout(() => this.connect(), this.delay);
        this.delay = Math.min(this.delay * 2, 30000);
      }
    };
  }

  private socket: WebSocket | null = null;
  private subscribed: string | null = null;
  private stopped = false;
  private delay = 1000;
}
