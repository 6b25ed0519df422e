/** A dashboard panel follows its run: live panels, then "cluster stopped" (issue 13, item 1). */
import { dashboardRoot, DashboardRun, panelUrls } from '../dashboardState';
import { IRunRecord } from '../protocol';

function record(overrides: Partial<IRunRecord> = {}): IRunRecord {
  return {
    name: 'inc-cell',
    version: 'v1',
    backend: 'local',
    status: 'running',
    phase: 'running',
    started: '2026-12-01T15:30:12',
    duration: 1.5,
    requested: {},
    used: null,
    cache_hit: false,
    outputs: {},
    dashboard: 'http://127.0.0.1:8787/status',
    error: null,
    run_number: 3,
    label: 'inc-cell · run 3 · 15:30:12',
    report: null,
    ...overrides
  };
}

test('the panel URLs of a dashboard', () => {
  expect(dashboardRoot('http://127.0.0.1:8787/status')).toBe(
    'http://127.0.0.1:8787'
  );
  expect(dashboardRoot('http://127.0.0.1:8787/')).toBe('http://127.0.0.1:8787');
  expect(dashboardRoot('http://127.0.0.1:8787')).toBe('http://127.0.0.1:8787');
  expect(panelUrls('http://127.0.0.1:8787/status')).toEqual([
    'http://127.0.0.1:8787/individual-task-stream',
    'http://127.0.0.1:8787/individual-progress',
    'http://127.0.0.1:8787/individual-workers-memory'
  ]);
});

test('opened from a link: live, then stopped with the report once the record has no dashboard', () => {
  const panel = new DashboardRun('http://127.0.0.1:8787');
  const other = record({ run_number: 2, dashboard: null, status: 'succeeded' });
  let state = panel.update([other, record()]);
  expect(state).toEqual({
    kind: 'live',
    dashboard: 'http://127.0.0.1:8787',
    urls: panelUrls('http://127.0.0.1:8787'),
    title: 'inc-cell · run 3 · 15:30:12'
  });
  state = panel.update([
    other,
    record({
      status: 'succeeded',
      dashboard: null,
      report: '.flyte_dask/inc-cell-r3.html'
    })
  ]);
  expect(state).toEqual({
    kind: 'stopped',
    report: '.flyte_dask/inc-cell-r3.html',
    title: 'inc-cell · run 3 · 15:30:12'
  });
});

test('a later run on the same address is not taken for the stopped one', () => {
  const panel = new DashboardRun('http://127.0.0.1:8787/status', record());
  panel.update([record()]);
  const stopped = record({ dashboard: null, status: 'failed' });
  const next = record({ run_number: 4, label: 'inc-cell · run 4' });
  expect(panel.update([stopped, next]).kind).toBe('stopped');
});

test('not yet in the list: trusted; gone from the list after a restart: stopped', () => {
  const panel = new DashboardRun('http://127.0.0.1:8787');
  expect(panel.update([]).kind).toBe('live');
  panel.update([record()]);
  const state = panel.update([]);
  expect(state.kind).toBe('stopped');
  expect(state.kind === 'stopped' && state.report).toBeNull();
});

test('a stopped run without a report shows no report', () => {
  const panel = new DashboardRun('http://127.0.0.1:8787', record());
  const state = panel.update([record({ dashboard: null, report: undefined })]);
  expect(state).toEqual({
    kind: 'stopped',
    report: null,
    title: 'inc-cell · run 3 · 15:30:12'
  });
});
