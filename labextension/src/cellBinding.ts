/**
 * The active cell's `%%flyte_dask` line: read it, rewrite it, add it.
 *
 * Edits go through the cell's shared model, so they are undoable like typing and shared with
 * collaborators; only the first line is ever replaced, the body is left alone.
 */
import { ICellModel } from '@jupyterlab/cells';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { ISignal, Signal } from '@lumino/signaling';

import { PANEL_FLAGS } from './fields';
import {
  formatMagicLine,
  hasMagicLine,
  IParsedLine,
  Options,
  parseMagicLine,
  setOptions,
  splitFirstLine
} from './magicLine';

/** What the panel shows about the active cell. */
export interface ICellState {
  /** No active cell, or it is not a code cell. */
  kind: 'none' | 'code';
  /** The cell starts with a `%%flyte_dask` line. */
  hasMagic: boolean;
  /** That line, parsed (null without one). */
  parsed: IParsedLine | null;
  line: string;
}

const NO_CELL: ICellState = {
  kind: 'none',
  hasMagic: false,
  parsed: null,
  line: ''
};

export class ActiveCellBinding {
  constructor(private readonly tracker: INotebookTracker) {
    tracker.activeCellChanged.connect(this._onActiveCell, this);
    tracker.currentChanged.connect(this._onActiveCell, this);
    this._onActiveCell();
  }

  /** Emitted when the active cell changes, or its first line does. */
  get changed(): ISignal<this, ICellState> {
    return this._changed;
  }

  get state(): ICellState {
    return this._state;
  }

  get panel(): NotebookPanel | null {
    return this.tracker.currentWidget;
  }

  /** Rewrite the active cell's `%%flyte_dask` line; throws MagicLineError if it cannot. */
  setOptions(changes: Record<string, string | true | null>): void {
    const model = this._model;
    if (!model || !this._state.hasMagic) {
      return;
    }
    const source = model.sharedModel.getSource();
    const { line } = splitFirstLine(source);
    const next = setOptions(line, changes);
    if (next !== line) {
      model.sharedModel.updateSource(0, line.length, next);
    }
  }

  /** Put a `%%flyte_dask` line with these options on top of the active code cell. */
  apply(options: Options): void {
    const model = this._model;
    if (!model || model.type !== 'code') {
      return;
    }
    const source = model.sharedModel.getSource();
    if (hasMagicLine(source)) {
      // The panel's options replace its flags; the rest of the line (--out, --inputs, unknown
      // arguments...) stays.
      const { line } = splitFirstLine(source);
      const changes = Object.fromEntries(
        PANEL_FLAGS.map(flag => [flag, options[flag] ?? null])
      );
      model.sharedModel.updateSource(0, line.length, setOptions(line, changes));
    } else {
      model.sharedModel.updateSource(0, 0, formatMagicLine(options) + '\n');
    }
  }

  dispose(): void {
    this._watch(null);
    Signal.clearData(this);
  }

  private get _model(): ICellModel | null {
    return this.tracker.activeCell?.model ?? null;
  }

  private _onActiveCell(): void {
    this._watch(this._model);
    this._update();
  }

  private _watch(model: ICellModel | null): void {
    if (this._watched === model) {
      return;
    }
    if (this._watched && !this._watched.isDisposed) {
      this._watched.contentChanged.disconnect(this._update, this);
    }
    this._watched = model;
    model?.contentChanged.connect(this._update, this);
  }

  private _update(): void {
    const model = this._model;
    let state = NO_CELL;
    if (model && model.type === 'code') {
      const source = model.sharedModel.getSource();
      const hasMagic = hasMagicLine(source);
      const line = hasMagic ? splitFirstLine(source).line : '';
      state = {
        kind: 'code',
        hasMagic,
        line,
        parsed: hasMagic ? parseMagicLine(line) : null
      };
    }
    const same =
      state.kind === this._state.kind &&
      state.hasMagic === this._state.hasMagic &&
      state.line === this._state.line;
    this._state = state;
    if (!same || model !== this._lastModel) {
      this._lastModel = model;
      this._changed.emit(state);
    }
  }

  private _changed = new Signal<this, ICellState>(this);
  private _state: ICellState = NO_CELL;
  private _watched: ICellModel | null = null;
  private _lastModel: ICellModel | null = null;
}

export { PANEL_FLAGS };
