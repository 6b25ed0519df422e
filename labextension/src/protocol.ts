/**
 * The envelope of the comm between the sidebar and the kernel (`dask_flyte_jupyter/comm.py`).
 *
 * Every message has a `type`; a reply repeats its request's `request_id`; what the kernel
 * pushes by itself has `request_id: null`.
 */

/** Comm target name, the same in the kernel. */
export const COMM_TARGET = 'dask_flyte_jupyter';
/** Version of the envelope this sidebar speaks. */
export const PROTOCOL = 1;
/** What the kernel runs to load the extension. */
export const LOAD_CODE = '%load_ext dask_flyte_jupyter';

/** One run, as `RunHandle.to_record()` gives it. */
export interface IRunRecord {
  name: string;
  version: string;
  backend: string;
  status: string;
  phase: string | null;
  started: string;
  duration: number;
  requested: Record<string, string | number | boolean>;
  used: string | null;
  cache_hit: boolean;
  outputs: Record<string, string>;
  tasks?: { total: number; done: number; erred: number };
  /** The live dashboard, only while the run's cluster is up. */
  dashboard: string | null;
  error: string | null;
  /** The saved performance report, relative to the kernel's working directory. */
  report?: string | null;
  /** Tells runs of one cell apart, e.g. "inc-cell · run 3 · 15:30:12". */
  label?: string;
  /** 1-based index of the run in this kernel. */
  run_number?: number;
}

/**
 * What a cell without flags gets in this kernel: flag -> value as written on the line, a
 * switch's on/off, or null when unset. Older kernels send none.
 */
export type KernelDefaults = Record<string, string | boolean | null>;

/**
 * The spare cluster waiting for the next cell of its shape (started after a local run, shut
 * down when idle), shown so that nobody takes it for a leaked one.
 */
export interface ISpareCluster {
  state: 'starting' | 'ready';
  /** e.g. "spare cluster: 2 workers × 1 thread, ready · shuts down after 10 min idle" */
  text: string;
}

export type Request =
  { type: 'hello'; request_id: string } | { type: 'runs'; request_id: string };

export type Reply =
  | {
      type: 'hello';
      request_id: string | null;
      protocol: number;
      version: string;
      defaults?: KernelDefaults;
    }
  | {
      type: 'runs';
      request_id: string | null;
      runs: IRunRecord[];
      defaults?: KernelDefaults;
      /** Present while there is a spare cluster. */
      spare?: ISpareCluster;
    }
  | { type: 'defaults'; request_id: null; defaults: KernelDefaults }
  | { type: 'spare'; request_id: null; spare: ISpareCluster | null }
  | { type: 'error'; request_id: string | null; message: string };

/** Whether a comm message is one of ours (the kernel side is trusted, but typed at the edge). */
export function isReply(data: unknown): data is Reply {
  if (typeof data !== 'object' || data === null) {
    return false;
  }
  const type = (data as { type?: unknown }).type;
  if (type === 'runs') {
    return Array.isArray((data as { runs?: unknown }).runs);
  }
  if (type === 'defaults') {
    const defaults = (data as { defaults?: unknown }).defaults;
    return typeof defaults === 'object' && defaults !== null;
  }
  if (type === 'spare') {
    // null: the spare is gone
    return typeof (data as { spare?: unknown }).spare === 'object';
  }
  return type === 'hello' || type === 'error';
}

/** The spare cluster after `reply`: a `runs` message without one means there is none. */
export function spareAfter(
  current: ISpareCluster | null,
  reply: Reply
): ISpareCluster | null {
  switch (reply.type) {
    case 'runs':
      return reply.spare ?? null;
    case 'spare':
      return reply.spare;
    default:
      return current;
  }
}
