/** The runs of the active notebook's kernel, newest first, or why there are none. */
import * as React from 'react';

import { ConnectionState } from '../kernelRuns';
import { IRunRecord } from '../protocol';

export interface IRunListProps {
  state: ConnectionState;
  runs: readonly IRunRecord[];
  message: string;
  onLoad: () => void;
}

export function formatDuration(seconds: number): string {
  if (seconds < 60) {
    return `${seconds.toFixed(1)} s`;
  }
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${Math.round(seconds - minutes * 60)} s`;
}

/** The cluster a run used, or else what it asked for. */
export function shapeOf(run: IRunRecord): string {
  if (run.used) {
    return run.used;
  }
  const r = run.requested;
  const parts = [`${r.workers ?? 'default'} workers`];
  for (const [flag, label] of [
    ['worker-cpu', 'cpu'],
    ['worker-mem', 'mem'],
    ['worker-gpu', 'gpu']
  ]) {
    if (r[flag] !== undefined) {
      parts.push(`${label} ${r[flag]}`);
    }
  }
  return parts.join(', ');
}

export function cacheOf(run: IRunRecord): string {
  if (run.cache_hit) {
    return 'hit';
  }
  return run.requested.cache ? 'miss' : 'off';
}

function Run(props: { run: IRunRecord }): JSX.Element {
  const { run } = props;
  const status =
    run.phase && run.status === 'running'
      ? `running: ${run.phase}`
      : run.status;
  return (
    <li
      className="jp-FlyteDask-run"
      data-run-name={run.name}
      data-status={run.status}
    >
      <div className="jp-FlyteDask-runHead">
        <span className="jp-FlyteDask-runName" title={`version ${run.version}`}>
          {run.name}
        </span>
        <span
          className={`jp-FlyteDask-status jp-FlyteDask-status-${run.status}`}
        >
          {status}
        </span>
      </div>
      <div className="jp-FlyteDask-runMeta">
        <span title="duration">{formatDuration(run.duration)}</span>
        <span title="cluster">{shapeOf(run)}</span>
        <span title="cache">cache {cacheOf(run)}</span>
        {run.tasks && run.tasks.total > 0 && (
          <span title="dask tasks">
            tasks {run.tasks.done}/{run.tasks.total}
          </span>
        )}
        {run.dashboard && (
          <a href={run.dashboard} target="_blank" rel="noopener noreferrer">
            dashboard
          </a>
        )}
      </div>
      {run.error && <div className="jp-FlyteDask-error">{run.error}</div>}
    </li>
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
            onClick={props.onLoad}
          >
            Load it (%load_ext dask_flyte_jupyter)
          </button>
        </div>
      );
    case 'ready':
      if (!runs.length) {
        return (
          <p className="jp-FlyteDask-note">
            No %%flyte_dask runs in this kernel yet.
          </p>
        );
      }
      return (
        <ul className="jp-FlyteDask-runs">
          {[...runs].reverse().map((run, index) => (
            <Run key={runs.length - index} run={run} />
          ))}
        </ul>
      );
  }
}
