/** The runs of the active notebook's kernel, newest first, or why there are none. */
import * as React from 'react';

import { ConnectionState } from '../kernelRuns';
import { IRunRecord, ISpareCluster } from '../protocol';
import {
  cacheOf,
  errorText,
  formatDuration,
  newestFirst,
  runKey,
  runLabel,
  shapeOf,
  startTime,
  statusText
} from '../runView';

export interface IRunListProps {
  state: ConnectionState;
  runs: readonly IRunRecord[];
  /** The spare cluster waiting for the next cell, shown under the runs. */
  spare?: ISpareCluster | null;
  message: string;
  onLoad: () => void;
  /** The route URL of a run's saved report, or null. */
  reportUrl: (run: IRunRecord) => string | null;
  /** Show a live run's dashboard panels next to the notebook. */
  onDashboard: (run: IRunRecord) => void;
}

function Run(props: {
  run: IRunRecord;
  reportUrl: string | null;
  onDashboard: (run: IRunRecord) => void;
}): JSX.Element {
  const { run, reportUrl } = props;
  const label = runLabel(run);
  const started = startTime(run.started);
  const error = errorText(run);
  return (
    <li
      className="jp-FlyteDask-run"
      data-run-name={run.name}
      data-status={run.status}
      data-run-number={run.run_number}
    >
      <div className="jp-FlyteDask-runHead">
        <span
          className="jp-FlyteDask-runLabel"
          data-role="run-label"
          title={`${run.name}, version ${run.version}`}
        >
          {label}
        </span>
      </div>
      <div className="jp-FlyteDask-runMeta">
        <span
          className={`jp-FlyteDask-status jp-FlyteDask-status-${run.status}`}
          data-role="run-status"
        >
          {statusText(run)}
        </span>
        {started && !label.includes(started) && (
          <span title="started" data-role="run-start">
            {started}
          </span>
        )}
        <span title="duration">{formatDuration(run.duration)}</span>
        <span title="cluster">{shapeOf(run)}</span>
        <span title="cache">cache {cacheOf(run)}</span>
        {run.tasks && run.tasks.total > 0 && (
          <span title="dask tasks">
            tasks {run.tasks.done}/{run.tasks.total}
          </span>
        )}
      </div>
      {(run.dashboard || reportUrl) && (
        <div className="jp-FlyteDask-runLinks">
          {run.dashboard && (
            <button
              className="jp-mod-styled jp-FlyteDask-linkButton"
              data-action="dashboard"
              title="Show the dashboard's task stream, progress and worker memory next to the notebook"
              onClick={() => props.onDashboard(run)}
            >
              Dashboard panels
            </button>
          )}
          {run.dashboard && (
            <a
              href={run.dashboard}
              target="_blank"
              rel="noopener noreferrer"
              data-role="dashboard-link"
              title="The full dask dashboard, in a new tab (while the cluster runs)"
            >
              dashboard ↗
            </a>
          )}
          {reportUrl && (
            <a
              href={reportUrl}
              target="_blank"
              rel="noopener noreferrer"
              data-role="report"
              title={`dask performance report of this run (${run.report})`}
            >
              report
            </a>
          )}
        </div>
      )}
      {error && (
        <div className="jp-FlyteDask-error" data-role="run-error">
          {error}
        </div>
      )}
    </li>
  );
}

function SpareCluster(props: { spare: ISpareCluster }): JSX.Element {
  return (
    <p
      className="jp-FlyteDask-note jp-FlyteDask-spare"
      data-role="spare-cluster"
      data-state={props.spare.state}
      title="Started after the last local run for the next cell of its shape, which then starts at once; %flyte_dask_config --spare-cluster off turns it off"
    >
      {props.spare.text}
    </p>
  );
}

export function RunList(props: IRunListProps): JSX.Element {
  const { state, runs, message } = props;
  switch (state) {
    case 'no-kernel':
      return (
        <p className="jp-FlyteDask-note">
          Open a notebook with a running kernel to see its runs.
        </p>
      );
    case 'connecting':
      return (
        <p className="jp-FlyteDask-note">
          Asking the kernel… (it answers once it is idle)
        </p>
      );
    case 'loading':
      return (
        <p className="jp-FlyteDask-note">
          Loading dask_flyte_jupyter in the kernel…
        </p>
      );
    case 'error':
      return <p className="jp-FlyteDask-error">{message}</p>;
    case 'not-loaded':
      return (
        <div className="jp-FlyteDask-notLoaded">
          <p className="jp-FlyteDask-note">
            dask_flyte_jupyter is not loaded in this notebook's kernel.
            {message && ` (${message})`}
          </p>
          <button
            className="jp-mod-styled jp-mod-accept"
            data-action="load"
            title="Runs %load_ext dask_flyte_jupyter, and adds that line on top of the notebook"
            onClick={props.onLoad}
          >
            Load in kernel
          </button>
          <p className="jp-FlyteDask-note">
            Also adds a <code>%load_ext</code> cell on top of the notebook.
          </p>
        </div>
      );
    case 'ready':
      return (
        <>
          {runs.length ? (
            <ul className="jp-FlyteDask-runs">
              {newestFirst(runs).map(run => (
                <Run
                  key={runKey(run)}
                  run={run}
                  reportUrl={props.reportUrl(run)}
                  onDashboard={props.onDashboard}
                />
              ))}
            </ul>
          ) : (
            <p className="jp-FlyteDask-note">
              No %%flyte_dask runs in this kernel yet.
            </p>
          )}
          {props.spare && <SpareCluster spare={props.spare} />}
        </>
      );
  }
}
