/**
 * What the sidebar shows and does, without any DOM: the picker's values and errors for the
 * active cell, and the runs of the active notebook's kernel.
 */
import { NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { ISignal, Signal } from '@lumino/signaling';

import { ActiveCellBinding, ICellState } from './cellBinding';
import {
  FieldEdits,
  fieldError,
  FieldValue,
  FieldValues,
  isSwitch,
  PANEL_FLAGS,
  toOptions,
  whyNotRun
} from './fields';
import { KernelRuns } from './kernelRuns';
import { insertLoadCell } from './loadCell';
import { formatMagicLine } from './magicLine';
import { KernelDefaults } from './protocol';
import { validateOptions } from './validate';

export { fieldError, isSwitch, toOptions };
export type { FieldValue, FieldValues };

export class SidebarModel {
  constructor(
    readonly binding: ActiveCellBinding,
    private readonly runsFor: (panel: NotebookPanel) => KernelRuns
  ) {
    binding.changed.connect(this._onCell, this);
    this._onCell();
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get cell(): ICellState {
    return this.binding.state;
  }

  get runs(): KernelRuns | null {
    return this._runs;
  }

  /** Defaults for a cell that has no `%%flyte_dask` line yet (from the settings). */
  set defaults(values: FieldValues) {
    this._defaults = { ...values };
    this._changed.emit();
  }

  /** The values the form shows. */
  get values(): FieldValues {
    const cell = this.cell;
    let base: FieldValues;
    if (cell.hasMagic && cell.parsed) {
      base = {};
      for (const flag of PANEL_FLAGS) {
        const value = cell.parsed.values[flag];
        base[flag] = isSwitch(flag)
          ? value === true
          : typeof value === 'string'
            ? value
            : '';
      }
      return { ...base, ...this._edits.drafts };
    }
    return { ...this._defaults, ...this._pending };
  }

  /** Each field's error: of the line's values as the kernel checks them, or of a draft. */
  get errors(): Record<string, string> {
    const errors: Record<string, string> = {};
    const cell = this.cell;
    let typed: FieldValues;
    if (cell.hasMagic && cell.parsed) {
      Object.assign(errors, validateOptions(cell.parsed.values).byFlag);
      typed = this._edits.drafts;
    } else {
      Object.assign(errors, validateOptions(toOptions(this.values)).byFlag);
      typed = this.values;
    }
    for (const [flag, value] of Object.entries(typed)) {
      const error = fieldError(flag, value);
      if (error !== null) {
        errors[flag] = error;
      } else {
        delete errors[flag];
      }
    }
    return errors;
  }

  /** What the kernel would say about the active cell's line, or null when it would accept it. */
  get lineError(): string | null {
    const parsed = this.cell.parsed;
    if (!parsed) {
      return null;
    }
    return parsed.error ?? validateOptions(parsed.options).first;
  }

  /** Whether the form may change the active cell's line. */
  get editable(): boolean {
    const cell = this.cell;
    return (
      cell.kind === 'code' &&
      (!cell.hasMagic || (cell.parsed?.editable ?? false))
    );
  }

  /** The line "Apply to cell" would write. */
  get pendingLine(): string {
    return formatMagicLine(toOptions(this.values));
  }

  get canApply(): boolean {
    return this.cell.kind === 'code' && Object.keys(this.errors).length === 0;
  }

  /** The user changed a field: write it to the line when it is valid, else keep it as a draft. */
  setField(flag: string, value: FieldValue): void {
    const cell = this.cell;
    if (!cell.hasMagic) {
      this._pending[flag] = value;
      this._changed.emit();
      return;
    }
    if (!this.editable || !cell.parsed) {
      return;
    }
    const changes = this._edits.change(
      flag,
      value,
      cell.parsed.values,
      this.values
    );
    if (Object.keys(changes).length) {
      try {
        this.binding.setOptions(changes);
      } catch (err) {
        console.warn(`flyte dask sidebar: ${(err as Error).message}`);
        this._edits.refused(flag, value);
      }
    }
    this._changed.emit();
  }

  /** The user left a field. */
  endField(flag: string): void {
    this._edits.end(flag);
  }

  /** Add the pending line to the active cell (or replace the panel's flags on it). */
  apply(): void {
    if (this.canApply) {
      this.binding.apply(toOptions(this.values));
      this._edits.reset();
      this._pending = {};
      this._changed.emit();
    }
  }

  /** Why Run is disabled, or null when the active cell can run. */
  get runBlocker(): string | null {
    return whyNotRun({
      isCode: this.cell.kind === 'code',
      hasMagic: this.cell.hasMagic,
      fieldErrors: Object.keys(this.errors).length,
      lineError: this.lineError,
      kernel: this._runs?.state ?? 'no-kernel'
    });
  }

  get canRun(): boolean {
    return this.runBlocker === null;
  }

  /** Run the active cell, as Shift+Enter without moving on. */
  async run(): Promise<void> {
    const panel = this.binding.panel;
    if (panel && this.canRun) {
      await NotebookActions.run(panel.content, panel.sessionContext);
    }
  }

  /**
   * Load the extension in the kernel, and put `%load_ext dask_flyte_jupyter` on top of the
   * notebook unless a cell loads it already, so that a restarted kernel gets it too.
   */
  async loadExtension(): Promise<void> {
    const panel = this.binding.panel;
    const runs = this._runs;
    if (!panel || !runs) {
      return;
    }
    await runs.load();
    // Only a load that worked is written down (a failed one says why in the run list).
    if (runs.state !== 'not-loaded' && panel.content.model) {
      insertLoadCell(panel.content.model.sharedModel);
    }
  }

  /** The kernel's defaults for a cell without flags, once it told them. */
  get kernelDefaults(): KernelDefaults | null {
    return this._runs?.defaults ?? null;
  }

  dispose(): void {
    Signal.clearData(this);
  }

  private _onCell(): void {
    const panel = this.binding.panel;
    if (panel !== this._panel) {
      this._panel = panel;
      this._runs?.changed.disconnect(this._emit, this);
      this._runs = panel ? this.runsFor(panel) : null;
      this._runs?.changed.connect(this._emit, this);
    }
    // Drafts belong to the cell they were typed for.
    const model = this.binding.panel?.content.activeCell?.model ?? null;
    if (model !== this._cellModel) {
      this._cellModel = model;
      this._edits.reset();
    } else if (this.cell.parsed) {
      this._edits.sync(this.cell.parsed.values);
    }
    this._emit();
  }

  private _emit(): void {
    this._changed.emit();
  }

  private _changed = new Signal<this, void>(this);
  private _defaults: FieldValues = {};
  /** Typed into the form for the active cell's line, and not (or not yet) written. */
  private _edits = new FieldEdits();
  /** Typed into the form while the active cell has no line: what "Apply" will write. */
  private _pending: FieldValues = {};
  private _panel: NotebookPanel | null = null;
  private _runs: KernelRuns | null = null;
  private _cellModel: unknown = null;
}
