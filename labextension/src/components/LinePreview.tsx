/** A `%%flyte_dask` line as code that wraps between options only. */
import * as React from 'react';

import { lineSegments } from '../lineSegments';

export function LinePreview(props: {
  line: string;
  role: string;
}): JSX.Element {
  return (
    <code className="jp-FlyteDask-line" data-role={props.role}>
      {lineSegments(props.line).map((segment, index) => (
        <React.Fragment key={index}>
          {segment.gap}
          {segment.text && (
            <span className="jp-FlyteDask-lineOption">{segment.text}</span>
          )}
        </React.Fragment>
      ))}
    </code>
  );
}
