/** The line preview wraps between options only (issue 13, item 7). */
import { lineSegments } from '../lineSegments';
import { insertLoadCell, loadsExtension } from '../loadCell';

const join = (line: string) =>
  lineSegments(line)
    .map(s => s.gap + s.text)
    .join('');

test('one segment per option, its value with it', () => {
  const line = '%%flyte_dask --workers 3 --worker-mem 1Gi --interruptible';
  expect(lineSegments(line).map(s => s.text)).toEqual([
    '%%flyte_dask',
    '--workers 3',
    '--worker-mem 1Gi',
    '--interruptible'
  ]);
});

test('the segments give back the line exactly', () => {
  for (const line of [
    '%%flyte_dask',
    '  %%flyte_dask  --workers  3 ',
    "%%flyte_dask --image 'my image' --name=x -1",
    "%%flyte_dask --image 'unbalanced",
    '%%flyte_dask value-first --cache'
  ]) {
    expect(join(line)).toBe(line);
  }
  expect(lineSegments("%%flyte_dask --image 'my image'")[1].text).toBe(
    "--image 'my image'"
  );
});

describe('the load cell', () => {
  const notebook = (sources: string[]) => {
    const cells = sources.map(source => ({
      cell_type: 'code',
      getSource: () => source
    }));
    return {
      cells,
      inserted: [] as { index: number; source: string }[],
      insertCell(index: number, cell: { cell_type: 'code'; source: string }) {
        this.inserted.push({ index, source: cell.source });
      }
    };
  };

  test('is added on top when no cell loads the extension', () => {
    const nb = notebook(['x = 1', '%%flyte_dask\nsum([1])']);
    expect(insertLoadCell(nb)).toBe(true);
    expect(nb.inserted).toEqual([
      { index: 0, source: '%load_ext dask_flyte_jupyter' }
    ]);
  });

  test('is not added twice', () => {
    for (const source of [
      '%load_ext dask_flyte_jupyter',
      'import os\n  %reload_ext dask_flyte_jupyter  # again',
      '%load_ext dask_flyte_jupyter\n'
    ]) {
      const nb = notebook(['x = 1', source]);
      expect(insertLoadCell(nb)).toBe(false);
      expect(nb.inserted).toEqual([]);
    }
    expect(loadsExtension('%load_ext dask_flyte_jupyter_other')).toBe(false);
    expect(loadsExtension('# %load_ext dask_flyte_jupyter')).toBe(false);
  });
});
