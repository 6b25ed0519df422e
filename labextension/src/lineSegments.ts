/**
 * A `%%flyte_dask` line cut into its options (`--worker-mem 4Gi`), so the preview wraps only
 * between options, never inside one (between `--` and the flag name, say).
 */
import { MAGIC, splitArgs } from './magicLine';

/** One option of the line (its text as written) and the whitespace before it. */
export interface ILineSegment {
  gap: string;
  text: string;
}

/** Segments whose `gap + text`, joined, give back the line exactly. */
export function lineSegments(line: string): ILineSegment[] {
  const magicAt = line.indexOf(MAGIC);
  if (magicAt < 0) {
    return [{ gap: '', text: line }];
  }
  const argsAt = magicAt + MAGIC.length;
  let tokens;
  try {
    tokens = splitArgs(line.slice(argsAt));
  } catch {
    return [{ gap: '', text: line }]; // unbalanced quotes: the kernel will say so
  }
  // An option starts at a word beginning with '-'; the words after it are its value.
  const groups: [number, number][] = [];
  for (const token of tokens) {
    const last = groups[groups.length - 1];
    if (token.raw.startsWith('-') || !last) {
      groups.push([argsAt + token.start, argsAt + token.end]);
    } else {
      last[1] = argsAt + token.end;
    }
  }
  const segments: ILineSegment[] = [{ gap: '', text: line.slice(0, argsAt) }];
  let end = argsAt;
  for (const [start, stop] of groups) {
    segments.push({
      gap: line.slice(end, start),
      text: line.slice(start, stop)
    });
    end = stop;
  }
  if (end < line.length) {
    segments.push({ gap: line.slice(end), text: '' });
  }
  return segments;
}
