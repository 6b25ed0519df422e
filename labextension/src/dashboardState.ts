/**
 * What a dashboard panel shows (no DOM): the live dask dashboard's panels of one run's
 * cluster while its record has a dashboard, and "cluster stopped" (with the run's report,
 * when it saved one) once the record no longer has one.
 */
import { IRunRecord } from './protocol';
import { runKey, runLabel } from './runView';

/** The dashboard's single-plot pages shown, top to bottom (as dask-labextension names them). */
export const DASHBOARD_PANELS: readonly { path: string; title: string }[] = [
  { path: 'individual-task-stream', title: 'Task stream' },
  { path: 'individual-progress', title: 'Progress' },
  { path: 'individual-workers-memory', title: 'Worker memory' }
];

/** A dashboard URL as links give it (`…/status`, a trailing slash) -> its root. */
export function dashboardRoot(url: string): string {
  return url.replace(/[?#].*$/, '').replace(/\/(status\/?)?$/, '');
}

export function panelUrls(dashboard: string): string[] {
  const root = dashboardRoot(dashboard);
  return DASHBOARD_PANELS.map(panel => `${root}/${panel.path}`);
}

export type PanelState =
  | { kind: 'live'; dashboard: string; urls: string[]; title: string }
  | { kind: 'stopped'; report: string | null; title: string };

/**
 * Follows one run through the kernel's updates. Opened from a link, only the dashboard URL is
 * known: the run is the record with that dashboard, remembered by its key from then on (its
 * dashboard goes away when the cluster stops).
 */
export class DashboardRun {
  constructor(
    readonly dashboard: string,
    run: IRunRecord | null = null
  ) {
    this._key = run ? runKey(run) : null;
    this._title = run ? runLabel(run) : '';
  }

  /** The panel's state after the kernel's runs changed. */
  update(runs: readonly IRunRecord[]): PanelState {
    const root = dashboardRoot(this.dashboard);
    const record = runs.find(run =>
      this._key !== null
        ? runKey(run) === this._key
        : !!run.dashboard && dashboardRoot(run.dashboard) === root
    );
    if (record) {
      this._key = runKey(record);
      this._title = runLabel(record);
      this._report = record.report ?? null;
      this._seen = true;
    }
    // Never seen: trust the link. Seen, then gone from the list (a restart): stopped.
    const live = record ? !!record.dashboard : !this._seen;
    const title = this._title || root.replace(/^\w+:\/\//, '');
    if (live) {
      return { kind: 'live', dashboard: root, urls: panelUrls(root), title };
    }
    return { kind: 'stopped', report: this._report, title };
  }

  private _key: string | null;
  private _title: string;
  private _report: string | null = null;
  private _seen = false;
}
