/** How a run shows in the sidebar's list (issue 13, item 6). */
import { IRunRecord } from '../protocol';
import {
  errorText,
  newestFirst,
  runKey,
  runLabel,
  shapeOf,
  startTime,
  statusText
} from '../runView';

function record(overrides: Partial<IRunRecord> = {}): IRunRecord {
  return {
    name: 'inc-cell',
    version: 'v1',
    backend: 'local',
    status: 'succeeded',
    phase: null,
    started: '2026-12-01T15:30:12',
    duration: 1.5,
    requested: { workers: 2 },
    used: null,
    cache_hit: false,
    outputs: {},
    dashboard: null,
    error: null,
    ...overrides
  };
}

test('two runs of one cell are told apart by their label, newest first', () => {
  const first = record({ run_number: 1, label: 'inc-cell · run 1 · 15:30:12' });
  const second = record({
    run_number: 2,
    label: 'inc-cell · run 2 · 15:31:40',
    started: '2026-12-01T15:31:40'
  });
  const shown = newestFirst([first, second]);
  expect(shown.map(runLabel)).toEqual([
    'inc-cell · run 2 · 15:31:40',
    'inc-cell · run 1 · 15:30:12'
  ]);
  expect(new Set(shown.map(runKey)).size).toBe(2);
  expect(shown.map(run => startTime(run.started))).toEqual([
    '15:31:40',
    '15:30:12'
  ]);
});

test('a record without the newer keys still shows', () => {
  const old = record();
  expect(runLabel(old)).toBe('inc-cell');
  expect(runKey(old)).toBe('inc-cell@2026-12-01T15:30:12');
});

test('start times are HH:MM:SS, local', () => {
  expect(startTime('2026-12-01T15:30:12')).toBe('15:30:12');
  expect(startTime('2026-12-01T09:05:01.250')).toBe('09:05:01');
  const zoned = startTime('2026-12-01T15:30:12+00:00');
  const expected = new Date(Date.UTC(2026, 11, 1, 15, 30, 12));
  expect(zoned).toBe(
    [expected.getHours(), expected.getMinutes(), expected.getSeconds()]
      .map(n => String(n).padStart(2, '0'))
      .join(':')
  );
  expect(startTime('not a time')).toBe('');
});

test('a live run shows its phase once, readably', () => {
  expect(statusText(record({ status: 'running', phase: 'running' }))).toBe(
    'running'
  );
  expect(
    statusText(record({ status: 'running', phase: 'starting cluster' }))
  ).toBe('starting cluster');
  expect(statusText(record({ status: 'running', phase: null }))).toBe(
    'running'
  );
  expect(statusText(record({ status: 'failed', phase: null }))).toBe('failed');
});

test('an interrupted or failed run shows its error text', () => {
  expect(
    errorText(record({ status: 'interrupted', error: 'KeyboardInterrupt:' }))
  ).toBe('KeyboardInterrupt');
  expect(
    errorText(
      record({
        status: 'interrupted',
        error: 'interrupted while starting cluster'
      })
    )
  ).toBe('interrupted while starting cluster');
  expect(
    errorText(
      record({ status: 'failed', error: 'ZeroDivisionError: division by zero' })
    )
  ).toBe('ZeroDivisionError: division by zero');
  expect(errorText(record({ error: null }))).toBeNull();
});

test('one worker is "1 worker"', () => {
  expect(shapeOf(record({ requested: { workers: 1 } }))).toBe('1 worker');
  expect(
    shapeOf(record({ requested: { workers: 3, 'worker-mem': '1Gi' } }))
  ).toBe('3 workers, mem 1Gi');
});
