/**
 * Links to saved performance reports (`.flyte_dask/<run>.html` next to the notebook).
 *
 * JupyterLab's `/files` route refuses hidden directories, so the link JupyterLab makes of a
 * relative href in an output (`<base>files/<dir>/.flyte_dask/x.html`) is dead. The package's
 * server route serves them instead: `<base>flyte-dask/reports/<api path>`. A click on such an
 * output link opens that route in a new tab.
 */
export const REPORT_ROUTE = 'flyte-dask/reports/';
const REPORT_DIR = '.flyte_dask';

function withSlash(url: string): string {
  return url.endsWith('/') ? url : url + '/';
}

function encodePath(path: string): string {
  return path.split('/').map(encodeURIComponent).join('/');
}

/** The directory of a notebook's path relative to the server root ('' at the root). */
export function dirname(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash < 0 ? '' : path.slice(0, slash);
}

/** `dir` joined with a relative `path`, `.` and `..` resolved; null if it leaves the root. */
export function joinPath(dir: string, path: string): string | null {
  if (path.startsWith('/')) {
    return null;
  }
  const parts: string[] = [];
  for (const part of `${dir}/${path}`.split('/')) {
    if (part === '..') {
      if (!parts.length) {
        return null;
      }
      parts.pop();
    } else if (part && part !== '.') {
      parts.push(part);
    }
  }
  return parts.join('/');
}

/** Whether an api path names a report the server route serves. */
export function isReportPath(path: string): boolean {
  const parts = path.split('/');
  return (
    parts.length >= 2 &&
    parts[parts.length - 2] === REPORT_DIR &&
    parts[parts.length - 1].endsWith('.html')
  );
}

/** The route URL of a report, given its path relative to the server root. */
export function reportRouteUrl(baseUrl: string, apiPath: string): string {
  return withSlash(baseUrl) + REPORT_ROUTE + encodePath(apiPath);
}

/**
 * A run record's `report` (relative to the kernel's working directory, which JupyterLab makes
 * the notebook's directory) -> the route URL, or null.
 */
export function recordReportUrl(
  baseUrl: string,
  notebookDir: string,
  report: string | null | undefined
): string | null {
  if (!report) {
    return null;
  }
  const path = joinPath(notebookDir, report);
  return path !== null && isReportPath(path)
    ? reportRouteUrl(baseUrl, path)
    : null;
}

/** The api path in a `<base>files/<path>` URL that JupyterLab made of a report link, or null. */
export function reportPathFromHref(
  href: string,
  baseUrl: string
): string | null {
  let url: URL;
  let base: URL;
  try {
    base = new URL(withSlash(baseUrl), 'http://localhost/');
    url = new URL(href, base);
  } catch {
    return null;
  }
  const files = base.pathname + 'files/';
  if (url.origin !== base.origin || !url.pathname.startsWith(files)) {
    return null;
  }
  let path: string;
  try {
    path = url.pathname
      .slice(files.length)
      .split('/')
      .map(decodeURIComponent)
      .join('/');
  } catch {
    return null;
  }
  return isReportPath(path) ? path : null;
}

/** The route URL for a click on an output link, or null when it is no report link. */
export function reportUrlOfLink(
  link: { href: string; report: string | null },
  baseUrl: string,
  notebookDir: string | null
): string | null {
  if (link.report && notebookDir !== null) {
    const url = recordReportUrl(baseUrl, notebookDir, link.report);
    if (url) {
      return url;
    }
  }
  if (!link.href.includes(`/${REPORT_DIR}/`)) {
    return null;
  }
  const path = reportPathFromHref(link.href, baseUrl);
  return path === null ? null : reportRouteUrl(baseUrl, path);
}

export interface IReportLinkOptions {
  baseUrl: string;
  /** The directory of the notebook an element is in (null outside notebooks). */
  notebookDirOf: (element: Element) => string | null;
  /** Opens a URL in a new tab. */
  open: (url: string) => void;
}

/**
 * Turn clicks on report links in outputs into opening the server route. Capture phase on the
 * body: before JupyterLab's own link handling (which would open the dead `/files` URL).
 * Returns a function that removes the handler.
 */
export function interceptReportLinks(
  body: HTMLElement,
  options: IReportLinkOptions
): () => void {
  const onClick = (event: MouseEvent): void => {
    if (event.button !== 0 && event.button !== 1) {
      return;
    }
    const target = event.target as Element | null;
    const anchor = target?.closest?.('a[href]') as HTMLAnchorElement | null;
    if (!anchor) {
      return;
    }
    const url = reportUrlOfLink(
      {
        href: anchor.href,
        report: anchor.getAttribute('data-flyte-dask-report')
      },
      options.baseUrl,
      options.notebookDirOf(anchor)
    );
    if (url === null || anchor.href === url) {
      return;
    }
    event.preventDefault();
    event.stopPropagation();
    options.open(url);
  };
  body.addEventListener('click', onClick, true);
  body.addEventListener('auxclick', onClick, true);
  return () => {
    body.removeEventListener('click', onClick, true);
    body.removeEventListener('auxclick', onClick, true);
  };
}
