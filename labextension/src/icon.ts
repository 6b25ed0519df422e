import { LabIcon } from '@jupyterlab/ui-components';

const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <circle cx="12" cy="5" r="2.5"/>
    <circle cx="5" cy="18" r="2.5"/>
    <circle cx="12" cy="18" r="2.5"/>
    <circle cx="19" cy="18" r="2.5"/>
    <path d="M11.3 7.2h1.4v8.3h-1.4zM11 6.8l1 1-5.6 8.6-1.2-.8zM13 6.8l-1 1 5.6 8.6 1.2-.8z"/>
  </g>
</svg>`;

export const flyteDaskIcon = new LabIcon({
  name: 'dask-flyte-jupyter:icon',
  svgstr: svg
});
