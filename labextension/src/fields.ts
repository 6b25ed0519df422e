/**
 * The picker's fields, without any DOM or JupyterLab: their values and errors, their
 * placeholders, and what typing into one does to the active cell's line.
 */
import { formatOption, MagicLineError, Options } from './magicLine';
import { KernelDefaults } from './protocol';
import { OPTION_BY_FLAG } from './rules';
import { validateValue } from './validate';

/** A field's value in the form: text, or on/off for a switch. */
export type FieldValue = string | boolean;
export type FieldValues = Record<string, FieldValue>;
/** Line edits: a flag's new value, `true` for a switch that is on, null to remove the flag. */
export type LineChanges = Record<string, string | true | null>;

/** The options the panel manages; everything else on the line is left as it is. */
export const PANEL_FLAGS = [
  'workers',
  'worker-cpu',
  'worker-mem',
  'worker-gpu',
  'scheduler-cpu',
  'scheduler-mem',
  'image',
  'interruptible',
  'cache',
  'remote',
  'project',
  'domain'
];

/** Flags that only mean something with --remote. */
export const REMOTE_ONLY = ['project', 'domain'];

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

/** Examples for fields that have no default: short, to fit the sidebar's narrow inputs. */
const EXAMPLES: Record<string, string> = {
  'worker-cpu': 'e.g. 2',
  'worker-mem': 'e.g. 4Gi',
  'worker-gpu': 'none',
  'scheduler-cpu': 'e.g. 1',
  'scheduler-mem': 'e.g. 2Gi',
  image: 'default',
  project: 'from config',
  domain: 'from config'
};

/**
 * What an empty field means: the kernel's own default when it told one (after
 * `%flyte_dask_config --workers 1`, "default 1"), else the built-in default, else an example.
 */
export function placeholderFor(
  flag: string,
  kernel: KernelDefaults | null
): string {
  const told = kernel?.[flag];
  if (typeof told === 'string' && told !== '') {
    return `default ${told}`;
  }
  const builtIn = kernel ? null : OPTION_BY_FLAG.get(flag)?.default;
  if (typeof builtIn === 'string' || typeof builtIn === 'number') {
    return `default ${builtIn}`;
  }
  return EXAMPLES[flag] ?? '';
}

/**
 * What typing into a field does to the line of the active cell: a valid value is written as
 * typed; an invalid one is kept as a draft (shown, with its error) and the line gets back the
 * value it had before the user began editing that field, so the line never holds a value the
 * user did not type (no `32G` left behind by typing `32Gx`).
 */
export class FieldEdits {
  /** Typed, not on the line: invalid, or a remote-only value while remote is off. */
  get drafts(): Readonly<FieldValues> {
    return this._drafts;
  }

  /**
   * The user set `flag` to `value`; `line` is what the line holds now, `form` what the form
   * shows. Returns the changes to write (empty: write nothing).
   */
  change(
    flag: string,
    value: FieldValue,
    line: Options,
    form: FieldValues
  ): LineChanges {
    if (!(flag in this._origins)) {
      this._origins[flag] = line[flag] ?? null;
    }
    const changes: LineChanges = {};
    if (typeof value === 'boolean') {
      delete this._drafts[flag];
      changes[flag] = value ? true : null;
      if (flag === 'remote') {
        for (const other of REMOTE_ONLY) {
          const text = form[other];
          const ok = typeof text === 'string' && text !== '';
          changes[other] = value && ok ? text : null;
          if (value) {
            delete this._drafts[other];
          } else if (ok) {
            this._drafts[other] = text; // written again once remote is back on
          }
        }
      }
    } else if (REMOTE_ONLY.includes(flag) && form.remote !== true) {
      this._drafts[flag] = value;
    } else if (fieldError(flag, value) === null) {
      delete this._drafts[flag];
      changes[flag] = value === '' ? null : value;
    } else {
      this._drafts[flag] = value;
      changes[flag] = this._origins[flag];
    }
    for (const [changed, next] of Object.entries(changes)) {
      this._written[changed] = next;
    }
    return changes;
  }

  /** Writing `changes` failed: keep the typed value as a draft instead. */
  refused(flag: string, value: FieldValue): void {
    this._drafts[flag] = value;
    delete this._written[flag];
  }

  /** The user left the field: a later edit starts from the line as it is then. */
  end(flag: string): void {
    delete this._origins[flag];
  }

  /**
   * The line changed. Where it changed by something else than this form (typing in the cell,
   * undo), the line wins: the field's draft and edit are dropped.
   */
  sync(line: Options): void {
    for (const [flag, value] of Object.entries(this._written)) {
      if ((line[flag] ?? null) !== value) {
        delete this._written[flag];
        delete this._origins[flag];
        if (!REMOTE_ONLY.includes(flag)) {
          delete this._drafts[flag];
        }
      }
    }
  }

  /** Another cell became active: drafts belong to the cell they were typed for. */
  reset(): void {
    this._drafts = {};
    this._origins = {};
    this._written = {};
  }

  private _drafts: FieldValues = {};
  /** The line's value of each field being edited, from before its first change. */
  private _origins: LineChanges = {};
  /** What this form last wrote for each flag. */
  private _written: LineChanges = {};
}

/**
 * Why the sidebar's Run is disabled, or null when it may run the active cell: never with a
 * value the kernel would refuse, nor a `%%flyte_dask` cell in a kernel without the extension
 * (it would fail with "Cell magic not found").
 */
export function whyNotRun(cell: {
  isCode: boolean;
  hasMagic: boolean;
  fieldErrors: number;
  lineError: string | null;
  kernel: string;
}): string | null {
  if (!cell.isCode) {
    return 'Select a code cell to run.';
  }
  if (cell.fieldErrors) {
    return 'Fix the field marked in red first.';
  }
  if (cell.hasMagic && cell.lineError !== null) {
    return "Fix the cell's line first: the kernel would refuse it.";
  }
  if (cell.kernel === 'loading') {
    return 'Loading dask_flyte_jupyter in the kernel…';
  }
  if (cell.kernel === 'not-loaded') {
    return 'The kernel has no dask_flyte_jupyter yet: "Load in kernel" below.';
  }
  if (cell.kernel === 'error') {
    return "The kernel's dask_flyte_jupyter does not match this sidebar (see below).";
  }
  return null;
}
