/**
 * What the sidebar shows and does, without any DOM: the picker's values and errors for the
 * active cell, and the runs of the active notebook's kernel.
 */
import { NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { ISignal, Signal } from '@lumino/signaling';

import { ActiveCellBinding, ICellState, PANEL_FLAGS } from './cellBinding';
import { KernelRuns } from './kernelRuns';
import {
  formatMagicLine,
  formatOption,
  MagicLineError,
  Options
} from './magicLine';
import { OPTION_BY_FLAG } from './rules';
import { validateOptions, validateValue } from './validate';

/** A field's value in the form: text, or on/off for a switch. */
export type FieldValue = string | boolean;
export type FieldValues = Record<string, FieldValue>;

/** Flags that only mean something with --remote. */
const REMOTE_ONLY = ['project', 'domain'];

export function isSwitch(flag: string): boolean {
  return OPTION_BY_FLAG.get(flag)?.takes_value === false;
}

/** Form values -> line options: empty text and off switches are left out. */
export function toOptions(values: FieldValues): Options {
  const options: Options = {};
  for (const flag of PANEL_FLAGS) {
    const value = values[flag];
    if (value === true) {
      options[flag] = true;
    } else if (typeof value === 'string' && value !== '') {
      if (!(REMOTE_ONLY.includes(flag) && values.remote !== true)) {
        options[flag] = value;
      }
    }
  }
  return options;
}

/** One field's error for a value typed into the form, as the kernel would report it. */
export function fieldError(flag: string, value: FieldValue): string | null {
  if (typeof value !== 'string' || value === '') {
    return null;
  }
  try {
    formatOption(flag, value);
  } catch (error) {
    return (error as MagicLineError).message;
  }
  return OPTION_BY_FLAG.get(flag)?.spec_field
    ? validateValue(flag, value)
    : null;
}

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
      return { ...base, ...this._drafts };
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
      typed = this._drafts;
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

  /** The user changed a field: rewrite the line when it is valid, else keep it as a draft. */
  setField(flag: string, value: FieldValue): void {
    const cell = this.cell;
    if (!cell.hasMagic) {
      this._pending[flag] = value;
      this._changed.emit();
      return;
    }
    if (!this.editable) {
      return;
    }
    const changes: Record<string, string | true | null> = {};
    if (typeof value === 'boolean') {
      changes[flag] = value ? true : null;
      if (flag === 'remote') {
        for (const other of REMOTE_ONLY) {
          const text = this.values[other];
          changes[other] =
            value && typeof text === 'string' && text !== '' ? text : null;
        }
      }
    } else if (REMOTE_ONLY.includes(flag) && this.values.remote !== true) {
      this._drafts[flag] = value; // written once --remote is on
      this._changed.emit();
      return;
    } else {
      changes[flag] = value === '' ? null : value;
    }
    const error = typeof value === 'string' ? fieldError(flag, value) : null;
    if (error === null) {
      try {
        this.binding.setOptions(changes);
        delete this._drafts[flag];
        this._changed.emit();
        return;
      } catch (err) {
        console.warn(`flyte dask sidebar: ${(err as Error).message}`);
      }
    }
    this._drafts[flag] = value;
    this._changed.emit();
  }

  /** Add the pending line to the active cell (or replace the panel's flags on it). */
  apply(): void {
    if (this.canApply) {
      this.binding.apply(toOptions(this.values));
      this._drafts = {};
      this._pending = {};
      this._changed.emit();
    }
  }

  /** Run the active cell, as Shift+Enter without moving on. */
  async run(): Promise<void> {
    const panel = this.binding.panel;
    if (panel && this.cell.kind === 'code') {
      await NotebookActions.run(panel.content, panel.sessionContext);
    }
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
      this._drafts = {};
    }
    this._emit();
  }

  private _emit(): void {
    this._changed.emit();
  }

  private _changed = new Signal<this, void>(this);
  private _defaults: FieldValues = {};
  /** Typed into the form for the active cell's line, not (yet) written: invalid, say. */
  private _drafts: FieldValues = {};
  /** Typed into the form while the active cell has no line: what "Apply" will write. */
  private _pending: FieldValues = {};
  private _panel: NotebookPanel | null = null;
  private _runs: KernelRuns | null = null;
  private _cellModel: unknown = null;
}
