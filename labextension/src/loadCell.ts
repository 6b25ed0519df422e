/**
 * `%load_ext dask_flyte_jupyter` as a cell of the notebook: loading the extension from the
 * sidebar also writes it down, so that a restarted kernel running all cells gets it again.
 */
import { LOAD_CODE } from './protocol';

/** The parts of JupyterLab's shared notebook model used here. */
export interface INotebookCells {
  readonly cells: readonly { cell_type: string; getSource(): string }[];
  insertCell(
    index: number,
    cell: { cell_type: 'code'; source: string }
  ): unknown;
}

const LOADS = /^[ \t]*%(?:re)?load_ext[ \t]+dask_flyte_jupyter[ \t]*(?:#.*)?$/m;

/** Whether a code cell's text loads the extension. */
export function loadsExtension(source: string): boolean {
  return LOADS.test(source);
}

/** Insert the load cell on top, unless a code cell loads the extension already. */
export function insertLoadCell(notebook: INotebookCells): boolean {
  const loaded = notebook.cells.some(
    cell => cell.cell_type === 'code' && loadsExtension(cell.getSource())
  );
  if (loaded) {
    return false;
  }
  notebook.insertCell(0, { cell_type: 'code', source: LOAD_CODE });
  return true;
}
