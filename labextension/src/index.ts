/**
 * dask-flyte-jupyter: the "Flyte dask" sidebar for `%%flyte_dask` cells.
 */
import {
  ILabShell,
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { ActiveCellBinding, PANEL_FLAGS } from './cellBinding';
import { DashboardPanels, interceptDashboardLinks } from './dashboardPanel';
import { flyteDaskIcon } from './icon';
import { KernelRuns } from './kernelRuns';
import { FieldValues, isSwitch, SidebarModel } from './model';
import { FlyteDaskPanel } from './panel';
import { IRunRecord } from './protocol';
import { dirname, interceptReportLinks, recordReportUrl } from './reportLinks';

const PLUGIN_ID = 'dask-flyte-jupyter:plugin';

export namespace CommandIDs {
  export const show = 'flyte-dask:show';
  export const apply = 'flyte-dask:apply';
  export const run = 'flyte-dask:run';
  export const load = 'flyte-dask:load-extension';
  export const refresh = 'flyte-dask:refresh-runs';
}

/** Settings -> form defaults (only the options the panel manages). */
function defaultsFrom(settings: ISettingRegistry.ISettings): FieldValues {
  const values: FieldValues = {};
  for (const flag of PANEL_FLAGS) {
    const value = settings.get(flag).composite;
    if (
      isSwitch(flag) ? typeof value === 'boolean' : typeof value === 'string'
    ) {
      values[flag] = value as string | boolean;
    }
  }
  return values;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    'Pick the dask cluster of the active %%flyte_dask cell and follow the kernel runs.',
  autoStart: true,
  requires: [INotebookTracker, ILabShell],
  optional: [ICommandPalette, ISettingRegistry, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    labShell: ILabShell,
    palette: ICommandPalette | null,
    settingRegistry: ISettingRegistry | null,
    restorer: ILayoutRestorer | null
  ) => {
    const runsByPanel = new Map<NotebookPanel, KernelRuns>();
    const runsFor = (panel: NotebookPanel): KernelRuns => {
      let runs = runsByPanel.get(panel);
      if (!runs) {
        const created = new KernelRuns(panel.sessionContext);
        runsByPanel.set(panel, created);
        panel.disposed.connect(() => {
          runsByPanel.delete(panel);
          created.dispose();
        });
        runs = created;
      }
      return runs;
    };

    // Reports: links in outputs and in the run list open through the server's report route.
    const baseUrl = app.serviceManager.serverSettings.baseUrl;
    const notebookDir = (notebook: NotebookPanel) =>
      dirname(notebook.context.localPath);
    const notebookOf = (node: Element) =>
      tracker.find(notebook => notebook.node.contains(node)) ?? null;
    interceptReportLinks(document.body, {
      baseUrl,
      notebookDirOf: node => {
        const notebook = notebookOf(node);
        return notebook ? notebookDir(notebook) : null;
      },
      open: url => void window.open(url, '_blank', 'noopener')
    });

    // Dashboards: a live run's panels next to its notebook, from the run list or a link.
    const dashboards = new DashboardPanels(app, (notebook, report) =>
      recordReportUrl(baseUrl, notebookDir(notebook), report)
    );
    interceptDashboardLinks(document.body, (anchor, dashboard) => {
      const notebook = notebookOf(anchor);
      if (!notebook) {
        return false;
      }
      dashboards.open(notebook, runsFor(notebook), dashboard, null);
      return true;
    });

    const model = new SidebarModel(new ActiveCellBinding(tracker), runsFor);
    const panel = new FlyteDaskPanel(model, {
      reportUrl: (run: IRunRecord) => {
        const notebook = model.binding.panel;
        return notebook
          ? recordReportUrl(baseUrl, notebookDir(notebook), run.report)
          : null;
      },
      openDashboard: (run: IRunRecord) => {
        const notebook = model.binding.panel;
        if (notebook && run.dashboard) {
          dashboards.open(notebook, runsFor(notebook), run.dashboard, run);
        }
      }
    });
    panel.id = 'flyte-dask-sidebar';
    panel.title.icon = flyteDaskIcon;
    panel.title.caption = 'Flyte dask';
    panel.title.label = '';
    labShell.add(panel, 'left', { rank: 600 });
    restorer?.add(panel, panel.id);

    const { commands } = app;
    const hasCodeCell = () => tracker.activeCell?.model.type === 'code';
    commands.addCommand(CommandIDs.show, {
      label: 'Show the Flyte dask sidebar',
      execute: () => labShell.activateById(panel.id)
    });
    commands.addCommand(CommandIDs.apply, {
      label: 'Apply Flyte dask resources to the active cell',
      isEnabled: () => model.canApply,
      execute: () => model.apply()
    });
    commands.addCommand(CommandIDs.run, {
      label: 'Run the active cell (Flyte dask)',
      isEnabled: () => hasCodeCell() && model.canRun,
      execute: () => model.run()
    });
    commands.addCommand(CommandIDs.load, {
      label: "Load dask_flyte_jupyter in the notebook's kernel",
      isEnabled: () => model.runs?.state === 'not-loaded',
      execute: () => model.loadExtension()
    });
    commands.addCommand(CommandIDs.refresh, {
      label: 'Refresh the Flyte dask runs',
      isEnabled: () => model.runs?.state === 'ready',
      execute: () => model.runs?.refresh()
    });
    if (palette) {
      for (const command of Object.values(CommandIDs)) {
        palette.addItem({ command, category: 'Flyte dask' });
      }
    }

    if (settingRegistry) {
      settingRegistry
        .load(PLUGIN_ID)
        .then(settings => {
          model.defaults = defaultsFrom(settings);
          settings.changed.connect(() => {
            model.defaults = defaultsFrom(settings);
          });
        })
        .catch(reason =>
          console.error('flyte dask sidebar: cannot load settings', reason)
        );
    }
  }
};

export default plugin;
