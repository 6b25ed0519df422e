/** The sidebar never writes a value other than the one typed (issue 13, item 2). */
import {
  fieldError,
  FieldEdits,
  FieldValues,
  isSwitch,
  PANEL_FLAGS,
  placeholderFor,
  whyNotRun
} from '../fields';
import { parseMagicLine, setOptions } from '../magicLine';

/** A cell's first line and the form bound to it, as the sidebar's model drives them. */
class Cell {
  edits = new FieldEdits();
  /** Every line the cell held, in order. */
  history: string[];

  constructor(public line: string) {
    this.history = [line];
  }

  get form(): FieldValues {
    const values: FieldValues = {};
    const parsed = parseMagicLine(this.line).values;
    for (const flag of PANEL_FLAGS) {
      const value = parsed[flag];
      values[flag] = isSwitch(flag)
        ? value === true
        : typeof value === 'string'
          ? value
          : '';
    }
    return { ...values, ...this.edits.drafts };
  }

  /** The user sets a field (one keystroke's result). */
  set(flag: string, value: string | boolean): void {
    const changes = this.edits.change(
      flag,
      value,
      parseMagicLine(this.line).values,
      this.form
    );
    if (Object.keys(changes).length) {
      this.write(setOptions(this.line, changes));
    }
  }

  /** Typing `text` key by key into an emptied field. */
  type(flag: string, text: string): void {
    for (let end = 0; end <= text.length; end++) {
      this.set(flag, text.slice(0, end));
    }
  }

  /** The line changed: by the form, or by the user in the cell. */
  write(line: string): void {
    this.line = line;
    this.history.push(line);
    this.edits.sync(parseMagicLine(line).values);
  }

  error(flag: string): string | null {
    return fieldError(flag, this.form[flag]);
  }
}

test('typing 32Gx leaves the line as it was, not with 32G', () => {
  const cell = new Cell('%%flyte_dask --workers 3 --worker-mem 4Gi');
  cell.type('worker-mem', '32Gx');
  expect(cell.line).toBe('%%flyte_dask --workers 3 --worker-mem 4Gi');
  expect(cell.form['worker-mem']).toBe('32Gx');
  expect(cell.error('worker-mem')).toMatch(
    /^--worker-mem: '32Gx' is not a Kubernetes quantity/
  );
  // Every line the cell held had a value the user typed (or the one it started with).
  for (const line of cell.history) {
    const mem = parseMagicLine(line).values['worker-mem'];
    expect(['4Gi', '3', '32', '32G', undefined]).toContain(mem);
  }
  // Fixed: written as typed.
  cell.set('worker-mem', '32G');
  expect(cell.line).toBe('%%flyte_dask --workers 3 --worker-mem 32G');
  expect(cell.error('worker-mem')).toBeNull();
  expect(cell.edits.drafts).toEqual({});
});

test('0 workers is not written, and the line keeps the value it had', () => {
  const cell = new Cell('%%flyte_dask --workers 3');
  cell.set('workers', '0');
  expect(cell.line).toBe('%%flyte_dask --workers 3');
  expect(cell.form.workers).toBe('0');
  expect(cell.error('workers')).toBe(
    '--workers: must be a whole number >= 1, got 0'
  );
  cell.set('workers', '5');
  expect(cell.line).toBe('%%flyte_dask --workers 5');
});

test('an invalid value typed where the line had none leaves none', () => {
  const cell = new Cell('%%flyte_dask --workers 3');
  cell.type('worker-cpu', '2x');
  expect(cell.line).toBe('%%flyte_dask --workers 3');
  expect(cell.form['worker-cpu']).toBe('2x');
});

test('a later edit starts from the line as it is then', () => {
  const cell = new Cell('%%flyte_dask --worker-mem 4Gi');
  cell.type('worker-mem', '8Gi');
  cell.edits.end('worker-mem'); // the user left the field
  cell.type('worker-mem', '8Gix');
  expect(cell.line).toBe('%%flyte_dask --worker-mem 8Gi');
});

test('the line wins when it changes by other means (typing in the cell, undo)', () => {
  const cell = new Cell('%%flyte_dask --worker-mem 4Gi');
  cell.set('worker-mem', '4Gix');
  expect(cell.form['worker-mem']).toBe('4Gix');
  cell.write('%%flyte_dask --worker-mem 16Gi');
  expect(cell.form['worker-mem']).toBe('16Gi');
  expect(cell.edits.drafts).toEqual({});
  cell.set('worker-mem', '16Gix');
  expect(cell.line).toBe('%%flyte_dask --worker-mem 16Gi');
});

test('remote-only fields wait for remote, then are written', () => {
  const cell = new Cell('%%flyte_dask');
  cell.set('project', 'flytesnacks');
  expect(cell.line).toBe('%%flyte_dask');
  cell.set('remote', true);
  expect(cell.line).toBe('%%flyte_dask --remote --project flytesnacks');
  cell.set('remote', false);
  expect(cell.line).toBe('%%flyte_dask');
  expect(cell.form.project).toBe('flytesnacks');
});

test('placeholders show the kernel defaults, short', () => {
  expect(placeholderFor('workers', null)).toBe('default 2');
  expect(placeholderFor('workers', { workers: '1' })).toBe('default 1');
  expect(
    placeholderFor('worker-mem', { workers: '1', 'worker-mem': null })
  ).toBe('e.g. 4Gi');
  expect(placeholderFor('worker-mem', { 'worker-mem': '3Gi' })).toBe(
    'default 3Gi'
  );
  for (const flag of PANEL_FLAGS.filter(f => !isSwitch(f))) {
    expect(placeholderFor(flag, null).length).toBeLessThanOrEqual(12);
  }
});

describe('Run is disabled, with a reason', () => {
  const ok = {
    isCode: true,
    hasMagic: true,
    fieldErrors: 0,
    lineError: null,
    kernel: 'ready'
  };
  test('while a field is invalid', () => {
    expect(whyNotRun(ok)).toBeNull();
    expect(whyNotRun({ ...ok, fieldErrors: 1 })).toMatch(/field/);
    expect(whyNotRun({ ...ok, hasMagic: false, fieldErrors: 1 })).toMatch(
      /field/
    );
  });
  test('while the line would be refused', () => {
    expect(
      whyNotRun({ ...ok, lineError: 'unrecognized arguments: --x' })
    ).toMatch(/line/);
  });
  test('until the kernel has the extension', () => {
    expect(whyNotRun({ ...ok, kernel: 'not-loaded' })).toMatch(
      /Load in kernel/
    );
    expect(whyNotRun({ ...ok, kernel: 'loading' })).toMatch(/Loading/);
    expect(whyNotRun({ ...ok, kernel: 'connecting' })).toBeNull();
    expect(whyNotRun({ ...ok, hasMagic: false, kernel: 'not-loaded' })).toMatch(
      /Load in kernel/
    );
    expect(whyNotRun({ ...ok, kernel: 'no-kernel' })).toBeNull(); // running starts one
  });
  test('without a code cell', () => {
    expect(whyNotRun({ ...ok, isCode: false })).not.toBeNull();
  });
});
