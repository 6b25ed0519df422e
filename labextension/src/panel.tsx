/** The "Flyte dask" sidebar: the picker bound to the active cell, and the kernel's runs. */
import { ReactWidget, UseSignal } from '@jupyterlab/ui-components';
import * as React from 'react';

import { LinePreview } from './components/LinePreview';
import { ResourceForm } from './components/ResourceForm';
import { RunList } from './components/RunList';
import { MAGIC } from './magicLine';
import { SidebarModel } from './model';
import { IRunRecord } from './protocol';

/** What the sidebar needs from the rest of JupyterLab. */
export interface IPanelOptions {
  /** The route URL of a run's saved report (of the active notebook), or null. */
  reportUrl: (run: IRunRecord) => string | null;
  /** Show a live run's dashboard panels next to the active notebook. */
  openDashboard: (run: IRunRecord) => void;
}

function CellSection(props: { model: SidebarModel }): JSX.Element {
  const { model } = props;
  const cell = model.cell;
  const lineError = model.lineError;
  const runBlocker = model.runBlocker;
  let heading: React.ReactNode;
  if (cell.kind === 'none') {
    heading = (
      <p className="jp-FlyteDask-note">Select a code cell of a notebook.</p>
    );
  } else if (cell.hasMagic) {
    heading = (
      <p className="jp-FlyteDask-note">
        Editing the active cell's line:
        <LinePreview line={cell.line} role="active-line" />
      </p>
    );
  } else {
    heading = (
      <p className="jp-FlyteDask-note">
        The active cell has no {MAGIC} line. Pick resources, then apply:
        <LinePreview line={model.pendingLine} role="pending-line" />
      </p>
    );
  }
  return (
    <section className="jp-FlyteDask-section">
      <h3>Active cell</h3>
      {heading}
      {lineError && cell.hasMagic && (
        <div className="jp-FlyteDask-error" data-role="line-error">
          The kernel will refuse this line: {lineError}
          {!model.editable &&
            ' Fix it in the cell; the picker cannot edit it safely.'}
        </div>
      )}
      <ResourceForm
        values={model.values}
        errors={model.errors}
        disabled={!model.editable}
        defaults={model.kernelDefaults}
        onChange={(flag, value) => model.setField(flag, value)}
        onDone={flag => model.endField(flag)}
      />
      <div className="jp-FlyteDask-actions">
        {!cell.hasMagic && (
          <button
            className="jp-mod-styled jp-mod-accept"
            data-action="apply"
            disabled={!model.canApply}
            onClick={() => model.apply()}
          >
            Apply to cell
          </button>
        )}
        <button
          className="jp-mod-styled"
          data-action="run"
          disabled={!model.canRun}
          title={runBlocker ?? 'Run the active cell'}
          onClick={() => void model.run()}
        >
          Run
        </button>
      </div>
      {runBlocker && cell.kind === 'code' && (
        <p className="jp-FlyteDask-note" data-role="run-hint">
          {runBlocker}
        </p>
      )}
    </section>
  );
}

function RunsSection(props: {
  model: SidebarModel;
  options: IPanelOptions;
}): JSX.Element {
  const { model, options } = props;
  const runs = model.runs;
  return (
    <section className="jp-FlyteDask-section">
      <h3>
        Runs in this kernel
        {runs && runs.state === 'ready' && (
          <button
            className="jp-FlyteDask-refresh jp-mod-styled"
            title="Refresh"
            data-action="refresh"
            onClick={() => runs.refresh()}
          >
            ↻
          </button>
        )}
      </h3>
      <RunList
        state={runs?.state ?? 'no-kernel'}
        runs={runs?.runs ?? []}
        spare={runs?.spare ?? null}
        message={runs?.message ?? ''}
        onLoad={() => void model.loadExtension()}
        reportUrl={options.reportUrl}
        onDashboard={options.openDashboard}
      />
    </section>
  );
}

export class FlyteDaskPanel extends ReactWidget {
  constructor(
    readonly model: SidebarModel,
    private readonly _options: IPanelOptions
  ) {
    super();
    this.addClass('jp-FlyteDask-panel');
  }

  render(): JSX.Element {
    return (
      <UseSignal signal={this.model.changed}>
        {() => (
          <div className="jp-FlyteDask-body">
            <CellSection model={this.model} />
            <RunsSection model={this.model} options={this._options} />
          </div>
        )}
      </UseSignal>
    );
  }

  dispose(): void {
    this.model.dispose();
    super.dispose();
  }
}
