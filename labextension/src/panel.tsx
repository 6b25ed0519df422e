/** The "Flyte dask" sidebar: the picker bound to the active cell, and the kernel's runs. */
import { ReactWidget, UseSignal } from '@jupyterlab/ui-components';
import * as React from 'react';

import { ResourceForm } from './components/ResourceForm';
import { RunList } from './components/RunList';
import { MAGIC } from './magicLine';
import { SidebarModel } from './model';

function CellSection(props: { model: SidebarModel }): JSX.Element {
  const { model } = props;
  const cell = model.cell;
  const lineError = model.lineError;
  let heading: React.ReactNode;
  if (cell.kind === 'none') {
    heading = (
      <p className="jp-FlyteDask-note">Select a code cell of a notebook.</p>
    );
  } else if (cell.hasMagic) {
    heading = (
      <p className="jp-FlyteDask-note">
        Editing the active cell's line:
        <code className="jp-FlyteDask-line" data-role="active-line">
          {cell.line}
        </code>
      </p>
    );
  } else {
    heading = (
      <p className="jp-FlyteDask-note">
        The active cell has no {MAGIC} line. Pick resources, then apply:
        <code className="jp-FlyteDask-line" data-role="pending-line">
          {model.pendingLine}
        </code>
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
        onChange={(flag, value) => model.setField(flag, value)}
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
          disabled={cell.kind !== 'code'}
          onClick={() => void model.run()}
        >
          Run
        </button>
      </div>
    </section>
  );
}

function RunsSection(props: { model: SidebarModel }): JSX.Element {
  const runs = props.model.runs;
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
        message={runs?.message ?? ''}
        onLoad={() => void runs?.load()}
      />
    </section>
  );
}

export class FlyteDaskPanel extends ReactWidget {
  constructor(readonly model: SidebarModel) {
    super();
    this.addClass('jp-FlyteDask-panel');
  }

  render(): JSX.Element {
    return (
      <UseSignal signal={this.model.changed}>
        {() => (
          <div className="jp-FlyteDask-body">
            <CellSection model={this.model} />
            <RunsSection model={this.model} />
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
