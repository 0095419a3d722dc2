// The Cake side panel: Targets, Sessions, Runs (with a live log tail of the selected run).
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { ApiError, ISession, IRun, ITargets, Live, Message, post, request } from './api';

const LIVE_SESSION = ['starting', 'running'];
const LIVE_RUN = ['queued', 'running'];
const TAIL_CHARS = 20000;

export interface IPanelOptions {
  /** Path of the notebook in front (sessions started from the panel are reused by its `%cake use`). */
  currentNotebook: () => string;
  /** Open a run's full output in the main area. */
  openOutput: (run: IRun) => void;
}

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'class') {
      node.className = value;
    } else {
      node.setAttribute(key, value);
    }
  }
  node.append(...children);
  return node;
}

export function ago(seconds: number | null): string {
  if (seconds === null || !isFinite(seconds)) {
    return '-';
  }
  seconds = Math.max(0, seconds);
  if (seconds < 90) {
    return `${Math.round(seconds)}s`;
  }
  if (seconds < 5400) {
    return `${Math.round(seconds / 60)}m`;
  }
  return `${(seconds / 3600).toFixed(1)}h`;
}

function now(): number {
  return Date.now() / 1000;
}

export class CakePanel extends Widget {
  constructor(private options: IPanelOptions) {
    super();
    this.id = 'cake-panel';
    this.addClass('jp-CakePanel');
    this.title.caption = 'Cake: sessions and runs';
    this.live = new Live(
      msg => this.onMessage(msg),
      open => this.setConnected(open)
    );
    this.build();
  }

  // -- lifecycle -------------------------------------------------------------------------------------
  protected onAfterAttach(): void {
    void this.load();
    this.timer = window.setInterval(() => this.tick(), 1000);
  }

  protected onBeforeDetach(): void {
    this.live.stop();
    window.clearInterval(this.timer);
  }

  async load(): Promise<void> {
    try {
      await request('health');
    } catch (error) {
      this.showError(error as ApiError);
      return;
    }
    this.banner.hidden = true;
    this.body.hidden = false;
    this.live.start();
    await this.loadTargets();
  }

  private showError(error: ApiError): void {
    this.body.hidden = true;
    this.banner.hidden = false;
    this.banner.replaceChildren();
    if (error.status === 404) {
      this.banner.append(
        el('strong', {}, 'The Cake server extension is not enabled.'),
        el('p', {}, 'The panel needs it to see sessions and runs. Enable it and restart JupyterLab:'),
        el('pre', {}, 'jupyter server extension enable jupyter_cake.server')
      );
    } else if (error.status === 403) {
      this.banner.append(el('strong', {}, 'Not authorized.'), el('p', {}, 'Log in to JupyterLab again, then retry.'));
    } else {
      this.banner.append(el('strong', {}, 'Cake is not reachable.'), el('p', {}, error.message));
    }
    const retry = el('button', { class: 'jp-Button jp-mod-styled jp-mod-accept cake-retry' }, 'Retry');
    retry.onclick = () => void this.load();
    this.banner.append(retry);
  }

  private setConnected(open: boolean): void {
    this.status.textContent = open ? 'live' : 'reconnecting…';
    this.status.classList.toggle('cake-offline', !open);
  }

  // -- layout --------------------------------------------------------------------------------------------
  private build(): void {
    this.banner = el('div', { class: 'cake-banner', role: 'alert' });
    this.banner.hidden = true;
    this.status = el('span', { class: 'cake-status' }, 'connecting…');
    const header = el('div', { class: 'cake-header' }, el('h2', {}, 'Cake'), this.status);
    this.targetsBox = el('div', { class: 'cake-targets' });
    this.sessionsBox = el('div', { class: 'cake-sessions' });
    this.runsBox = el('div', { class: 'cake-runs', role: 'listbox', 'aria-label': 'Runs' });
    this.tail = el('pre', { class: 'cake-tail', 'aria-live': 'polite', tabindex: '0' });
    this.tailTitle = el('div', { class: 'cake-tail-title' }, 'Select a run to see its output.');
    this.body = el(
      'div',
      { class: 'cake-body' },
      el('h3', {}, 'Targets'),
      this.targetsBox,
      el('h3', {}, 'Sessions'),
      this.sessionsBox,
      el('h3', {}, 'Runs'),
      this.runsBox,
      this.tailTitle,
      this.tail
    );
    this.body.hidden = true;
    this.node.append(header, this.banner, this.body);
    this.node.addEventListener('keydown', event => this.onKey(event));
  }

  private async loadTargets(): Promise<void> {
    try {
      this.targets = await request<ITargets>('targets');
    } catch (error) {
      this.targetsBox.replaceChildren(el('p', { class: 'cake-error' }, `${(error as Error).message}`));
      return;
    }
    this.renderTargets();
  }

  private renderTargets(): void {
    const data = this.targets!;
    const rows = data.targets.map(target => {
      const start = el(
        'button',
        { class: 'jp-Button jp-mod-styled jp-mod-accept cake-start', 'data-target': target.name },
        'Start'
      );
      start.disabled = !target.ok;
      start.title = `Start a session on ${target.name}`;
      start.onclick = () => void this.startSession(target.name, start);
      return el(
        'div',
        { class: `cake-row cake-target${target.ok ? '' : ' cake-bad'}`, 'data-target': target.name },
        el('span', { class: 'cake-name' }, target.name),
        el('span', { class: 'cake-dim' }, target.ok ? target.resources : target.note),
        start
      );
    });
    if (data.error) {
      rows.push(el('div', { class: 'cake-error' }, data.error));
    }
    if (data.targets.length <= 1) {
      rows.push(
        el('div', { class: 'cake-hint' }, `No named targets yet: add [targets.NAME] tables to ${data.config_path}.`)
      );
    }
    this.targetsBox.replaceChildren(...rows);
  }

  // -- live data -------------------------------------------------------------------------------------
  private onMessage(msg: Message): void {
    switch (msg.type) {
      case 'snapshot':
        this.sessions = new Map(msg.sessions.map((s: ISession) => [s.id, s]));
        this.runs = new Map(msg.runs.map((r: IRun) => [r.id, r]));
        break;
      case 'session':
        this.sessions.set(msg.session.id, msg.session);
        break;
      case 'session_removed':
        this.sessions.delete(msg.id);
        break;
      case 'run':
        this.runs.set(msg.run.id, msg.run);
        break;
      case 'output':
        if (msg.run === this.selected) {
          const text = msg.replace ? msg.text : (this.tail.textContent || '') + msg.text;
          this.tail.textContent = text.slice(-TAIL_CHARS);
          this.tail.scrollTop = this.tail.scrollHeight;
        }
        return;
      default:
        return;
    }
    this.render();
  }

  private tick(): void {
    // Uptime, cost, countdowns and durations move every second without a message from the server:
    // only those texts change, so keyboard focus and selection stay where they are.
    for (const node of this.sessionsBox.querySelectorAll<HTMLElement>('.cake-numbers')) {
      const s = this.sessions.get(node.dataset.session || '');
      if (s) {
        node.textContent = this.sessionNumbers(s);
      }
    }
    for (const node of this.runsBox.querySelectorAll<HTMLElement>('.cake-duration')) {
      const r = this.runs.get(node.dataset.run || '');
      if (r) {
        node.textContent = this.runDuration(r);
      }
    }
  }

  private sessionNumbers(s: ISession): string {
    const live = LIVE_SESSION.includes(s.state);
    if (!live) {
      return s.reason || '';
    }
    const t = now();
    const numbers = [`up ${ago(t - s.created)}`];
    if (s.ping && s.ping.idle_seconds !== null) {
      const idle = s.ping.idle_seconds + (s.ping.state === 'busy' ? 0 : t - s.ping.at);
      numbers.push(s.ping.state === 'busy' ? 'busy' : `idle ${ago(idle)}`);
      if (s.ping.idle_minutes) {
        numbers.push(s.ping.state === 'busy' ? 'autostop paused' : `autostop in ${ago(s.ping.idle_minutes * 60 - idle)}`);
      }
    }
    if (s.price_per_hour !== null && s.price_per_hour !== undefined) {
      // A free allocation ($0, an on-prem pool SkyPilot knows the price of) is shown too: it is a price.
      const hours = (t - s.created) / 3600;
      numbers.push(`$${s.price_per_hour.toFixed(2)}/h, $${(s.price_per_hour * hours).toFixed(2)} so far`);
    }
    return numbers.join(' · ');
  }

  private runDuration(r: IRun): string {
    return ago(r.started === null ? null : (r.ended ?? now()) - r.started);
  }

  private render(): void {
    // Keep keyboard focus across the re-render: the same control of the same row.
    const active = document.activeElement as HTMLElement | null;
    const row = active?.closest('[data-run], [data-session]') as HTMLElement | null;
    const key = row ? (row.dataset.run ? `[data-run="${row.dataset.run}"]` : `[data-session="${row.dataset.session}"]`) : '';
    const control = active && active !== row ? `.${[...active.classList].find(c => c.startsWith('cake-')) ?? ''}` : '';
    this.renderSessions();
    this.renderRuns();
    if (key && this.node.contains(active) === false) {
      const again = this.node.querySelector(`${key}${control && control !== '.' ? ' ' + control : ''}`) as HTMLElement | null;
      again?.focus();
    }
  }

  private renderSessions(): void {
    const sessions = [...this.sessions.values()].sort(
      (a, b) => Number(LIVE_SESSION.includes(b.state)) - Number(LIVE_SESSION.includes(a.state)) || b.created - a.created
    );
    if (!sessions.length) {
      this.sessionsBox.replaceChildren(
        el('div', { class: 'cake-empty' }, 'No sessions. Start one above, or run `%cake use local` in a notebook.')
      );
      return;
    }
    this.sessionsBox.replaceChildren(
      ...sessions.map(s => {
        const live = LIVE_SESSION.includes(s.state);
        const facts: string[] = [s.target];
        if (s.gpus) {
          facts.push(s.gpus);
        }
        if (s.where) {
          facts.push(s.where);
        }
        const row = el(
          'div',
          { class: `cake-row cake-session cake-state-${s.state}`, 'data-session': s.id, 'data-state': s.state },
          el('span', { class: `cake-badge cake-state-${s.state}` }, s.state),
          el(
            'span',
            { class: 'cake-grow' },
            el('span', { class: 'cake-name' }, `${s.name} `),
            el('span', { class: 'cake-dim' }, `${s.id} · ${facts.join(' · ')}`),
            el('br'),
            el('span', { class: 'cake-dim cake-numbers', 'data-session': s.id }, this.sessionNumbers(s))
          )
        );
        if (live) {
          const stop = el('button', { class: 'jp-Button jp-mod-styled jp-mod-warn cake-stop' }, 'Stop');
          stop.title = `Stop session ${s.id} and release what it holds`;
          stop.onclick = () => void this.stopSession(s);
          row.append(el('span', { class: 'cake-actions' }, stop));
        }
        return row;
      })
    );
  }

  private renderRuns(): void {
    const runs = [...this.runs.values()].sort((a, b) => b.created - a.created);
    if (!runs.length) {
      this.runsBox.replaceChildren(el('div', { class: 'cake-empty' }, 'No runs yet. Run a cell with %%cake.'));
      return;
    }
    this.runsBox.replaceChildren(
      ...runs.map(r => {
        const running = LIVE_RUN.includes(r.state);
        const notebook = r.notebook.split('/').pop() || '';
        const where = [notebook, r.cell ? `cell ${r.cell.slice(0, 8)}` : ''].filter(Boolean).join(' · ');
        const row = el(
          'div',
          {
            class: `cake-row cake-run cake-state-${r.state}${r.id === this.selected ? ' cake-selected' : ''}`,
            'data-run': r.id,
            'data-state': r.state,
            role: 'option',
            tabindex: '0',
            title: r.notebook ? `From ${r.notebook}` : '',
            'aria-selected': String(r.id === this.selected)
          },
          el('span', { class: `cake-badge cake-state-${r.state}` }, r.state === 'aborted' ? 'cancelled' : r.state),
          el(
            'span',
            { class: 'cake-grow' },
            el('span', { class: 'cake-name' }, `${r.id} `),
            el('span', { class: 'cake-dim cake-duration', 'data-run': r.id }, this.runDuration(r)),
            el('span', { class: 'cake-dim' }, ` · ${r.session_id}${where ? ' · ' + where : ''}`),
            el('br'),
            el('code', { class: 'cake-code' }, r.code.split('\n')[0] || ''),
            r.error ? el('div', { class: 'cake-error' }, r.error) : ''
          )
        );
        row.onclick = () => this.select(r.id);
        const open = el('button', { class: 'jp-Button jp-mod-styled cake-open' }, 'Output');
        open.title = 'Open the full output of this run';
        open.onclick = event => {
          event.stopPropagation();
          this.options.openOutput(r);
        };
        const actions = el('span', { class: 'cake-actions' }, open);
        row.append(actions);
        if (running) {
          const stop = el('button', { class: 'jp-Button jp-mod-styled jp-mod-warn cake-interrupt' }, 'Interrupt');
          stop.title = 'Interrupt this run (KeyboardInterrupt in the remote cell; the session stays)';
          stop.onclick = event => {
            event.stopPropagation();
            void this.interruptRun(r);
          };
          actions.append(stop);
        }
        return row;
      })
    );
  }

  private select(runId: string): void {
    if (this.selected === runId) {
      return;
    }
    this.selected = runId;
    this.tail.textContent = '';
    this.tailTitle.textContent = `Output of ${runId}`;
    this.live.subscribe(runId);
    this.render();
  }

  private onKey(event: KeyboardEvent): void {
    const target = event.target as HTMLElement;
    const runId = target.dataset?.run;
    if (!runId) {
      return;
    }
    if (event.key === 'Enter' || event.key === ' ') {
      event.preventDefault();
      this.select(runId);
    } else if (event.key === 'ArrowDown' || event.key === 'ArrowUp') {
      event.preventDefault();
      const next = (event.key === 'ArrowDown' ? target.nextElementSibling : target.previousElementSibling) as
        | HTMLElement
        | null;
      next?.focus();
    }
  }

  // -- actions -----------------------------------------------------------------------------------------
  private async confirm(title: string, body: string, label: string): Promise<boolean> {
    const result = await showDialog({
      title,
      body,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label })]
    });
    return result.button.accept;
  }

  private async act(what: () => Promise<unknown>): Promise<void> {
    try {
      await what();
    } catch (error) {
      void showDialog({ title: 'Cake', body: (error as Error).message, buttons: [Dialog.okButton()] });
    }
  }

  private async startSession(target: string, button: HTMLButtonElement): Promise<void> {
    button.disabled = true;
    button.textContent = 'Starting…';
    await this.act(() => post('sessions', { target, owner: this.options.currentNotebook() }));
    button.disabled = false;
    button.textContent = 'Start';
  }

  private async stopSession(s: ISession): Promise<void> {
    if (await this.confirm('Stop session?', `Stop ${s.name} (${s.id}) on ${s.target}? Its kernel state is lost.`, 'Stop')) {
      await this.act(() => post(`sessions/${s.id}/stop`));
    }
  }

  private async interruptRun(r: IRun): Promise<void> {
    if (await this.confirm('Interrupt run?', `Interrupt run ${r.id}? The cell stops; the session keeps its state.`, 'Interrupt')) {
      await this.act(() => post(`runs/${r.id}/interrupt`));
    }
  }

  private live: Live;
  private timer = 0;
  private targets: ITargets | null = null;
  private sessions = new Map<string, ISession>();
  private runs = new Map<string, IRun>();
  private selected: string | null = null;
  private banner!: HTMLDivElement;
  private body!: HTMLDivElement;
  private status!: HTMLSpanElement;
  private targetsBox!: HTMLDivElement;
  private sessionsBox!: HTMLDivElement;
  private runsBox!: HTMLDivElement;
  private tail!: HTMLPreElement;
  private tailTitle!: HTMLDivElement;
}
