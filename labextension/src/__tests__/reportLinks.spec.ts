/** Report links open through the server's report route (issue 13, item 1). */
import {
  dirname,
  isReportPath,
  joinPath,
  recordReportUrl,
  reportPathFromHref,
  reportRouteUrl,
  reportUrlOfLink
} from '../reportLinks';

const BASE = 'http://127.0.0.1:8888/lab-base/';

test('a record report resolves against the notebook directory', () => {
  expect(recordReportUrl(BASE, 'work/nb', '.flyte_dask/inc-cell-r3.html')).toBe(
    'http://127.0.0.1:8888/lab-base/flyte-dask/reports/work/nb/.flyte_dask/inc-cell-r3.html'
  );
  expect(recordReportUrl(BASE, '', '.flyte_dask/a b.html')).toBe(
    'http://127.0.0.1:8888/lab-base/flyte-dask/reports/.flyte_dask/a%20b.html'
  );
  expect(recordReportUrl(BASE, 'nb', null)).toBeNull();
  expect(recordReportUrl(BASE, 'nb', undefined)).toBeNull();
  // Only reports the route serves: in a .flyte_dask folder, .html, under the root.
  expect(recordReportUrl(BASE, 'nb', 'notes.html')).toBeNull();
  expect(recordReportUrl(BASE, '', '../.flyte_dask/x.html')).toBeNull();
  expect(recordReportUrl(BASE, 'nb', '/tmp/.flyte_dask/x.html')).toBeNull();
});

test('paths', () => {
  expect(dirname('a/b/nb.ipynb')).toBe('a/b');
  expect(dirname('nb.ipynb')).toBe('');
  expect(joinPath('a/b', '../c/./d')).toBe('a/c/d');
  expect(joinPath('', '..')).toBeNull();
  expect(isReportPath('.flyte_dask/x.html')).toBe(true);
  expect(isReportPath('x/.flyte_dask/y/x.html')).toBe(false);
  expect(reportRouteUrl('http://h/', 'd/.flyte_dask/x#1.html')).toBe(
    'http://h/flyte-dask/reports/d/.flyte_dask/x%231.html'
  );
});

test("JupyterLab's rewritten /files link maps to the route", () => {
  const href =
    'http://127.0.0.1:8888/lab-base/files/my%20dir/.flyte_dask/inc-r1.html?_xsrf=1';
  expect(reportPathFromHref(href, BASE)).toBe('my dir/.flyte_dask/inc-r1.html');
  expect(reportUrlOfLink({ href, report: null }, BASE, null)).toBe(
    'http://127.0.0.1:8888/lab-base/flyte-dask/reports/my%20dir/.flyte_dask/inc-r1.html'
  );
  // Not a report: left alone.
  expect(
    reportPathFromHref('http://127.0.0.1:8888/lab-base/files/a/b.html', BASE)
  ).toBeNull();
  expect(
    reportPathFromHref('http://other:1/lab-base/files/.flyte_dask/x.html', BASE)
  ).toBeNull();
  expect(
    reportUrlOfLink(
      { href: 'http://127.0.0.1:8787/status', report: null },
      BASE,
      'd'
    )
  ).toBeNull();
  // The route's own links are not rewritten again.
  const route = reportRouteUrl(BASE, '.flyte_dask/x.html');
  expect(reportUrlOfLink({ href: route, report: null }, BASE, '')).toBeNull();
});

test('the data attribute wins, resolved against the notebook of the link', () => {
  expect(
    reportUrlOfLink(
      {
        href: 'http://127.0.0.1:8888/lab-base/files/x',
        report: '.flyte_dask/r.html'
      },
      BASE,
      'sub'
    )
  ).toBe(
    'http://127.0.0.1:8888/lab-base/flyte-dask/reports/sub/.flyte_dask/r.html'
  );
});
