// The Cake JupyterLab extension: a left side panel, a command to open it, and a command to show a
// run's full output. Clicks on the Cancel button of the in-cell run widget (jupyter_cake/widget.py) are
// routed through the server API too: the notebook kernel is busy following the run, so a widget click
// would only reach it when the cell is over.
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { IRun, post, request } from './api';
import { CakePanel } from './panel';

const ICON = new LabIcon({
  name: 'jupyter-cake:icon',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><g class="jp-icon3" fill="#616161">' +
    '<path d="M4 11h16v9H4z" opacity=".9"/><path d="M6 8h12v3H6z"/><path d="M11 3h2v5h-2z"/></g></svg>'
});

async function openOutput(app: JupyterFrontEnd, run: IRun): Promise<void> {
  const content = new Widget();
  content.addClass('jp-CakeOutput');
  const pre = document.createElement('pre');
  pre.textContent = 'Loading…';
  content.node.append(pre);
  const widget = new MainAreaWidget({ content });
  widget.id = `cake-output-${run.id}`;
  widget.title.label = `Cake ${run.id}`;
  widget.title.closable = true;
  app.shell.add(widget, 'main');
  app.shell.activateById(widget.id);
  try {
    const data = await request<{ text: string }>(`runs/${run.id}/output`);
    pre.textContent = data.text || `(run ${run.id} has no output; state: ${run.state})`;
  } catch (error) {
    pre.textContent = `Could not load the output: ${(error as Error).message}`;
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-cake:panel',
  description: 'Cake side panel: targets, sessions, runs with live output.',
  autoStart: true,
  optional: [ILayoutRestorer, ICommandPalette, INotebookTracker],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null,
    notebooks: INotebookTracker | null
  ) => {
    const panel = new CakePanel({
      currentNotebook: () => notebooks?.currentWidget?.sessionContext.path ?? '',
      openOutput: run => void openOutput(app, run)
    });
    panel.title.icon = ICON;
    app.shell.add(panel, 'left', { rank: 900 });
    restorer?.add(panel, 'cake-panel');
    app.commands.addCommand('cake:open-panel', {
      label: 'Open the Cake panel',
      execute: () => app.shell.activateById(panel.id)
    });
    palette?.addItem({ command: 'cake:open-panel', category: 'Cake' });

    // The run widget's Cancel button carries its run id as a CSS class: cake-run-<id>.
    document.addEventListener(
      'click',
      event => {
        const button = (event.target as HTMLElement).closest('.cake-run-cancel') as HTMLElement | null;
        if (!button) {
          return;
        }
        const runClass = [...button.classList].find(c => c.startsWith('cake-run-r-'));
        if (runClass) {
          void post(`runs/${runClass.slice('cake-run-'.length)}/interrupt`).catch(() => undefined);
        }
      },
      true
    );
  }
};

export default plugin;
