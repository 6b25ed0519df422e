/**
 * How the sidebar shows one run of the kernel's history (no DOM): its label, start time,
 * status and error. Records from an older kernel may lack the newer keys.
 */
import { IRunRecord } from './protocol';

/** The kernel sends its history oldest first; the sidebar lists the newest first. */
export function newestFirst(runs: readonly IRunRecord[]): IRunRecord[] {
  return [...runs].reverse();
}

/** A key that stays the same for one run across updates. */
export function runKey(run: IRunRecord): string {
  return run.run_number !== undefined
    ? `#${run.run_number}`
    : `${run.name}@${run.started}`;
}

/** What tells this run apart from the other runs of its cell. */
export function runLabel(run: IRunRecord): string {
  return run.label || run.name;
}

function twoDigits(value: number): string {
  return String(value).padStart(2, '0');
}

/**
 * The start time as HH:MM:SS in the browser's time zone. The kernel writes its own local
 * time without a zone (taken as local, which it is when both run on one machine); a time
 * with a zone is converted.
 */
export function startTime(started: string): string {
  const naive = /^\d{4}-\d{2}-\d{2}T(\d{2}:\d{2}:\d{2})(?:\.\d+)?$/.exec(
    started
  );
  if (naive) {
    return naive[1];
  }
  const date = new Date(started);
  if (isNaN(date.getTime())) {
    return '';
  }
  return [date.getHours(), date.getMinutes(), date.getSeconds()]
    .map(twoDigits)
    .join(':');
}

/** The status as a word or two: a live run shows its phase ("starting cluster"). */
export function statusText(run: IRunRecord): string {
  if ((run.status === 'running' || run.status === 'pending') && run.phase) {
    return run.phase;
  }
  return run.status;
}

/** The run's error as one readable line ("KeyboardInterrupt:" loses its dangling colon). */
export function errorText(run: IRunRecord): string | null {
  const text = (run.error ?? '').trim().replace(/:$/, '');
  return text || null;
}

export function formatDuration(seconds: number): string {
  if (seconds < 60) {
    return `${seconds.toFixed(1)} s`;
  }
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${Math.round(seconds - minutes * 60)} s`;
}

/** The cluster a run used, or else what it asked for. */
export function shapeOf(run: IRunRecord): string {
  if (run.used) {
    return run.used;
  }
  const r = run.requested;
  const count = r.workers ?? 'default';
  const parts = [`${count} worker${String(count) === '1' ? '' : 's'}`];
  for (const [flag, label] of [
    ['worker-cpu', 'cpu'],
    ['worker-mem', 'mem'],
    ['worker-gpu', 'gpu']
  ]) {
    if (r[flag] !== undefined) {
      parts.push(`${label} ${r[flag]}`);
    }
  }
  return parts.join(', ');
}

export function cacheOf(run: IRunRecord): string {
  if (run.cache_hit) {
    return 'hit';
  }
  return run.requested.cache ? 'miss' : 'off';
}
