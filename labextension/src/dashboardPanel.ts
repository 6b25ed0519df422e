/**
 * A run's dask dashboard inside JupyterLab: a main-area panel next to the notebook with the
 * dashboard's task stream, progress and worker memory, stacked (as dask-labextension shows a
 * cluster's panels). When the run's cluster stops, the frames give way to a short note and
 * the run's performance report.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { IFrame, MainAreaWidget } from '@jupyterlab/apputils';
import { NotebookPanel } from '@jupyterlab/notebook';
import { Panel, Widget } from '@lumino/widgets';

import {
  DASHBOARD_PANELS,
  dashboardRoot,
  DashboardRun,
  PanelState
} from './dashboardState';
import { flyteDaskIcon } from './icon';
import { KernelRuns } from './kernelRuns';
import { IRunRecord } from './protocol';

/** Builds a small DOM element. */
function element(
  tag: string,
  attributes: Record<string, string>,
  ...children: (Node | string)[]
): HTMLElement {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

export class DashboardPanel extends MainAreaWidget<Panel> {
  constructor(
    private readonly _run: DashboardRun,
    private readonly _runs: KernelRuns,
    private readonly _reportUrl: (report: string) => string | null
  ) {
    super({ content: new Panel() });
    this.addClass('jp-FlyteDask-dashboardPanel');
    this.content.addClass('jp-FlyteDask-dashboardContent');
    this.title.icon = flyteDaskIcon;
    this.title.closable = true;
    _runs.changed.connect(this._update, this);
    this._update();
  }

  /** Whether it still shows a live cluster. */
  get isLive(): boolean {
    return this._shown === 'live';
  }

  dispose(): void {
    if (!this._runs.isDisposed) {
      this._runs.changed.disconnect(this._update, this);
    }
    super.dispose();
  }

  private _update(): void {
    const state = this._run.update(this._runs.runs);
    const live = state.kind === 'live';
    this.title.label = `dask: ${state.title}` + (live ? '' : ' (stopped)');
    this.title.caption = live
      ? `dask dashboard of ${state.title}: ${state.dashboard}`
      : `${state.title}: the cluster stopped`;
    this.node.dataset.state = state.kind;
    const shown = live ? 'live' : `stopped:${state.report ?? ''}`;
    if (shown === this._shown) {
      return;
    }
    this._shown = shown;
    for (const child of [...this.content.widgets]) {
      child.dispose();
    }
    if (state.kind === 'live') {
      this._showLive(state);
    } else {
      this._showStopped(state);
    }
  }

  private _showLive(state: Extract<PanelState, { kind: 'live' }>): void {
    const header = element(
      'div',
      { class: 'jp-FlyteDask-dashboardHeader' },
      `${state.title} · `,
      element(
        'a',
        {
          href: `${state.dashboard}/status`,
          target: '_blank',
          rel: 'noopener noreferrer',
          'data-role': 'dashboard-link'
        },
        'full dashboard ↗'
      )
    );
    this.content.addWidget(new Widget({ node: header }));
    state.urls.forEach((url, index) => {
      const frame = new IFrame({
        sandbox: ['allow-scripts', 'allow-same-origin']
      });
      frame.addClass('jp-FlyteDask-dashboardFrame');
      frame.node.dataset.role = 'dashboard-frame';
      frame.node.dataset.panel = DASHBOARD_PANELS[index].path;
      frame.node.title = DASHBOARD_PANELS[index].title;
      frame.url = url;
      this.content.addWidget(frame);
    });
  }

  private _showStopped(state: Extract<PanelState, { kind: 'stopped' }>): void {
    const note = element(
      'div',
      { class: 'jp-FlyteDask-stopped', 'data-role': 'cluster-stopped' },
      element(
        'p',
        {},
        `The cluster of ${state.title} stopped; its live dashboard is gone.`
      )
    );
    const url = state.report ? this._reportUrl(state.report) : null;
    if (url) {
      note.append(
        element(
          'p',
          {},
          element(
            'a',
            {
              href: url,
              target: '_blank',
              rel: 'noopener noreferrer',
              'data-role': 'report'
            },
            "Open the run's performance report"
          ),
          ' (task stream, worker profile, bandwidth, saved when the run ended).'
        )
      );
    }
    this.content.addWidget(new Widget({ node: note }));
  }

  private _shown = '';
}

/** The open dashboard panels, one per live dashboard. */
export class DashboardPanels {
  constructor(
    private readonly _app: JupyterFrontEnd,
    private readonly _reportUrl: (
      notebook: NotebookPanel,
      report: string
    ) => string | null
  ) {}

  /** Show the panels of a dashboard (of `run` when known) next to `notebook`. */
  open(
    notebook: NotebookPanel,
    runs: KernelRuns,
    dashboard: string,
    run: IRunRecord | null
  ): DashboardPanel {
    const root = dashboardRoot(dashboard);
    const existing = this._open.get(root);
    if (existing && !existing.isDisposed && existing.isLive) {
      this._app.shell.activateById(existing.id);
      return existing;
    }
    existing?.dispose(); // a stopped cluster's panel: a new run got its address
    const panel = new DashboardPanel(
      new DashboardRun(root, run),
      runs,
      report => this._reportUrl(notebook, report)
    );
    panel.id = `flyte-dask-dashboard-${++this._count}`;
    this._open.set(root, panel);
    panel.disposed.connect(() => {
      if (this._open.get(root) === panel) {
        this._open.delete(root);
      }
    });
    this._app.shell.add(panel, 'main', {
      mode: 'split-right',
      ref: notebook.id
    });
    this._app.shell.activateById(panel.id);
    return panel;
  }

  private _open = new Map<string, DashboardPanel>();
  private _count = 0;
}

/**
 * Clicks on dashboard links in outputs (`a[data-flyte-dask-dashboard]`) open the panels instead
 * of a browser tab; with a modifier key, or where `open` declines, the link works as a link.
 * Returns a function that removes the handler.
 */
export function interceptDashboardLinks(
  body: HTMLElement,
  open: (anchor: HTMLAnchorElement, dashboard: string) => boolean
): () => void {
  const onClick = (event: MouseEvent): void => {
    if (
      event.button !== 0 ||
      event.ctrlKey ||
      event.metaKey ||
      event.shiftKey
    ) {
      return;
    }
    const target = event.target as Element | null;
    const anchor = target?.closest?.(
      'a[data-flyte-dask-dashboard]'
    ) as HTMLAnchorElement | null;
    const dashboard = anchor?.getAttribute('data-flyte-dask-dashboard');
    if (anchor && dashboard && open(anchor, dashboard)) {
      event.preventDefault();
      event.stopPropagation();
    }
  };
  body.addEventListener('click', onClick, true);
  return () => body.removeEventListener('click', onClick, true);
}
