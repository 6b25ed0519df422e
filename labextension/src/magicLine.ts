/**
 * Parse and rewrite the `%%flyte_dask` line exactly as the kernel reads it.
 *
 * The kernel splits the line as a POSIX shell does (Python's `shlex.split`: quotes group and are
 * removed, a backslash escapes) and parses the words with argparse; `parseMagicLine` follows
 * both step by step, using the option table generated from the magic itself (`rules.json`).
 * The writer quotes what needs it (Python's `shlex.quote`). The shared vectors in
 * `tests/magic_line_vectors.json` hold both to Python's reference parser and writer.
 */
import { IOptionRule, OPTION_BY_FLAG, RULES } from './rules';
import { pyRepr, pyShown, pyStrip } from './pytext';

export const MAGIC = RULES.magic;

/** Flag (without dashes) -> value: the text given, or `true` for a switch. */
export type Options = Record<string, string | true>;

/** A line the kernel would reject; `message` is the kernel's own (argparse's) text. */
export class MagicLineError extends Error {}

/** A word of the argument string: its value (quotes removed), its text, and where it is. */
export interface IToken {
  /** The word as argparse gets it. */
  text: string;
  /** The word as written on the line, quotes included. */
  raw: string;
  start: number;
  end: number;
}

// shlex's whitespace (POSIX mode).
const SHLEX_SPACE = ' \t\r\n';

/**
 * Python's `shlex.split(text)`: words separated by shlex's whitespace; single quotes keep
 * everything up to the next one; double quotes too, except that a backslash there escapes `"`
 * and `\\` (and stays before any other character); outside quotes a backslash escapes any
 * character. Quotes are removed; `''` is an empty word.
 */
export function splitArgs(text: string): IToken[] {
  const tokens: IToken[] = [];
  const escapeAt = (at: number): string => {
    if (at >= text.length) {
      throw new MagicLineError('No escaped character');
    }
    return text[at];
  };
  let i = 0;
  while (i < text.length) {
    if (SHLEX_SPACE.includes(text[i])) {
      i++;
      continue;
    }
    const start = i;
    const parts: string[] = [];
    while (i < text.length && !SHLEX_SPACE.includes(text[i])) {
      const char = text[i];
      if (char === "'") {
        const close = text.indexOf("'", i + 1);
        if (close < 0) {
          throw new MagicLineError('No closing quotation');
        }
        parts.push(text.slice(i + 1, close));
        i = close + 1;
      } else if (char === '"') {
        i++;
        while (text[i] !== '"') {
          if (i >= text.length) {
            throw new MagicLineError('No closing quotation');
          }
          if (text[i] === '\\') {
            const next = escapeAt(i + 1);
            parts.push(next === '"' || next === '\\' ? next : '\\' + next);
            i += 2;
          } else {
            parts.push(text[i++]);
          }
        }
        i++;
      } else if (char === '\\') {
        parts.push(escapeAt(i + 1));
        i += 2;
      } else {
        parts.push(char);
        i++;
      }
    }
    tokens.push({
      text: parts.join(''),
      raw: text.slice(start, i),
      start,
      end: i
    });
  }
  return tokens;
}

const OPTION_STRINGS = RULES.options.map(rule => rule.option);
const BY_OPTION = new Map(RULES.options.map(rule => [rule.option, rule]));
// argparse's negative-number matcher, with Python's Unicode \d.
const NEGATIVE_NUMBER = new RegExp(
  RULES.negative_number.replace(/\\d/g, '\\p{Nd}'),
  'u'
);

interface IOptional {
  rule: IOptionRule | null;
  explicit: string | null;
}

/** argparse's `_parse_optional`: null for an argument, else the option (rule null if unknown). */
function parseOptional(arg: string): IOptional | null {
  if (!arg || arg[0] !== '-') {
    return null;
  }
  const exact = BY_OPTION.get(arg);
  if (exact) {
    return { rule: exact, explicit: null };
  }
  if (arg.length === 1) {
    return null;
  }
  const eq = arg.indexOf('=');
  if (eq >= 0) {
    const rule = BY_OPTION.get(arg.slice(0, eq));
    if (rule) {
      return { rule, explicit: arg.slice(eq + 1) };
    }
  }
  // Unique prefixes of long options ("--im" is "--image").
  let matches: IOptional[] = [];
  let names: string[] = [];
  if (arg[1] === '-') {
    const prefix = eq >= 0 ? arg.slice(0, eq) : arg;
    const explicit = eq >= 0 ? arg.slice(eq + 1) : null;
    names = OPTION_STRINGS.filter(option => option.startsWith(prefix));
    matches = names.map(option => ({ rule: BY_OPTION.get(option)!, explicit }));
  } else {
    names = OPTION_STRINGS.filter(
      option => option === arg.slice(0, 2) || option.startsWith(arg)
    );
    matches = names.map(option => ({
      rule: BY_OPTION.get(option)!,
      explicit: option === arg.slice(0, 2) ? arg.slice(2) : null
    }));
  }
  if (matches.length > 1) {
    throw new MagicLineError(
      `ambiguous option: ${arg} could match ${names.join(', ')}`
    );
  }
  if (matches.length === 1) {
    return matches[0];
  }
  if (NEGATIVE_NUMBER.test(arg)) {
    return null; // the parser has no option that looks like a negative number
  }
  if (arg.includes(' ')) {
    return null;
  }
  return { rule: null, explicit: null };
}

/** One recognised option on the line, where it is, and what it sets. */
export interface IOccurrence {
  rule: IOptionRule;
  value: string | true;
  /** The option's own text on the line (one or two tokens). */
  text: string;
  /** Index of its first token, to keep the line's order. */
  index: number;
}

export interface IParsedLine {
  /** What the kernel's reference parser returns (empty when there is an error). */
  options: Options;
  /** The recognised options' values, also when unknown arguments make the line an error. */
  values: Options;
  /** The kernel's error for this line, or null. */
  error: string | null;
  /**
   * Whether the line can still be edited: true when it parses, or when its only problem is
   * arguments the magic does not know (they are kept as they are).
   */
  editable: boolean;
  occurrences: IOccurrence[];
  /** Unknown arguments: as written (`text`), as argparse got them, and their token's index. */
  extras: { text: string; value: string; index: number }[];
}

/** The argument string after `%%flyte_dask`, as `parse_magic_line` takes it. */
function argString(line: string): string {
  const text = pyStrip(line);
  return text.startsWith(MAGIC) ? text.slice(MAGIC.length) : text;
}

/** Parse a `%%flyte_dask` line like the kernel (`parse_magic_line`) does. */
export function parseMagicLine(line: string): IParsedLine {
  const result: IParsedLine = {
    options: {},
    values: {},
    error: null,
    editable: false,
    occurrences: [],
    extras: []
  };
  let tokens: IToken[];
  const optionals = new Map<number, IOptional>();
  const pattern: string[] = [];
  try {
    const args = argString(line);
    const length = Array.from(pyStrip(args)).length;
    if (length > RULES.max_line_chars) {
      throw new MagicLineError(
        `the magic line is ${length} characters long (at most ${RULES.max_line_chars}): ` +
          'is a value pasted by mistake?'
      );
    }
    tokens = splitArgs(args);
    let dashdash = false;
    tokens.forEach((token, index) => {
      if (dashdash) {
        pattern.push('A');
      } else if (token.text === '--') {
        dashdash = true;
        pattern.push('-');
      } else {
        const optional = parseOptional(token.text);
        if (optional) {
          optionals.set(index, optional);
        }
        pattern.push(optional ? 'O' : 'A');
      }
    });
  } catch (error) {
    result.error = (error as Error).message;
    return result;
  }

  const values = result.values;
  const extra = (index: number) =>
    result.extras.push({
      text: tokens[index].raw,
      value: tokens[index].text,
      index
    });
  const last = optionals.size ? Math.max(...optionals.keys()) : -1;
  let start = 0;
  try {
    while (start <= last) {
      while (!optionals.has(start)) {
        extra(start++);
      }
      const { rule, explicit } = optionals.get(start)!;
      if (rule === null) {
        extra(start++);
        continue;
      }
      let value: string | true;
      let stop: number;
      if (explicit !== null) {
        if (!rule.takes_value) {
          throw new MagicLineError(
            `argument ${rule.option}: ignored explicit argument ${pyRepr(explicit)}`
          );
        }
        value = explicit;
        stop = start + 1;
      } else if (rule.takes_value) {
        if (pattern[start + 1] !== 'A') {
          throw new MagicLineError(
            `argument ${rule.option}: expected one argument`
          );
        }
        value = tokens[start + 1].text;
        stop = start + 2;
      } else {
        value = true;
        stop = start + 1;
      }
      const text = tokens
        .slice(start, stop)
        .map(token => token.raw)
        .join(' ');
      result.occurrences.push({ rule, value, text, index: start });
      values[rule.dest.replace(/_/g, '-')] = value;
      start = stop;
    }
  } catch (error) {
    result.error = (error as Error).message;
    return result;
  }
  for (let index = start; index < tokens.length; index++) {
    extra(index);
  }
  result.editable = true;
  if (result.extras.length) {
    result.error = `unrecognized arguments: ${result.extras.map(e => e.value).join(' ')}`;
  } else {
    result.options = { ...values };
  }
  return result;
}

/** The magic line's options, for a line that parses; throws MagicLineError otherwise. */
export function optionsOf(line: string): Options {
  const parsed = parseMagicLine(line);
  if (parsed.error !== null) {
    throw new MagicLineError(parsed.error);
  }
  return parsed.options;
}

// Python's str.splitlines() boundaries: the magic line ends at any of them.
const LINE_BREAKS = '\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029';
// Python's shlex.quote: words of these characters need no quotes.
const SHELL_SAFE = /^[A-Za-z0-9_@%+=:,./-]+$/;

/** Python's `shlex.quote(value)`: the word a POSIX shell (and `shlex.split`) reads as `value`. */
export function shellQuote(value: string): string {
  if (value === '') {
    return "''";
  }
  if (SHELL_SAFE.test(value)) {
    return value;
  }
  return "'" + value.replace(/'/g, `'"'"'`) + "'";
}

/** One option as written on the line; the kernel reads back exactly `value`. */
export function formatOption(flag: string, value: string | true): string {
  const rule = OPTION_BY_FLAG.get(flag);
  if (!rule) {
    throw new MagicLineError(`unknown option --${flag}`);
  }
  if (value === true) {
    if (rule.takes_value) {
      throw new MagicLineError(`${rule.option} needs a value`);
    }
    return rule.option;
  }
  if (!rule.takes_value) {
    throw new MagicLineError(`${rule.option} is a switch and takes no value`);
  }
  if (Array.from(value).some(char => LINE_BREAKS.includes(char))) {
    throw new MagicLineError(
      `${rule.option}: ${pyShown(value)} cannot be written on the ${MAGIC} line (it has a line break)`
    );
  }
  // Quoted as ClusterSpec.magic_line quotes; a value that could read as an option goes after '='.
  const quoted = shellQuote(value);
  return value.startsWith('-')
    ? `${rule.option}=${quoted}`
    : `${rule.option} ${quoted}`;
}

/** A fresh `%%flyte_dask` line with these options, in the magic's order of options. */
export function formatMagicLine(options: Options): string {
  return setOptions(MAGIC, options);
}

/**
 * Rewrite a `%%flyte_dask` line: each flag in `changes` is set (a value, or `true` for a
 * switch) or removed (`null`). Everything else on the line stays as it was, unknown arguments
 * included; a flag given twice keeps one occurrence. New options go where the magic's order of
 * options puts them. Throws MagicLineError for a line that cannot be edited safely.
 */
export function setOptions(
  line: string,
  changes: Record<string, string | true | null>
): string {
  const parsed = parseMagicLine(line);
  if (!parsed.editable) {
    throw new MagicLineError(parsed.error ?? 'cannot edit this line');
  }
  const order = (flag: string) =>
    RULES.options.findIndex(rule => rule.flag === flag);
  interface IItem {
    text: string;
    key: number; // position on the line
    flag: string | null;
  }
  let items: IItem[] = [
    ...parsed.occurrences.map(o => ({
      text: o.text,
      key: o.index,
      flag: o.rule.flag
    })),
    ...parsed.extras.map(e => ({ text: e.text, key: e.index, flag: null }))
  ];
  items.sort((a, b) => a.key - b.key);

  for (const [flag, value] of Object.entries(changes)) {
    const text = value === null ? null : formatOption(flag, value);
    const mine = items.filter(item => item.flag === flag);
    if (text === null || mine.length) {
      const keep = text === null ? null : mine[mine.length - 1];
      items = items.filter(item => item.flag !== flag || item === keep);
      if (keep) {
        keep.text = text as string;
      }
      continue;
    }
    // Before the first known option that comes later in the magic's order, else after the last
    // known option, else first.
    const rank = order(flag);
    const known = items.filter(item => item.flag !== null);
    const later = known.find(item => order(item.flag as string) > rank);
    const item = { text, key: 0, flag };
    if (later) {
      items.splice(items.indexOf(later), 0, item);
    } else if (known.length) {
      items.splice(items.indexOf(known[known.length - 1]) + 1, 0, item);
    } else {
      items.unshift(item);
    }
  }
  return [MAGIC, ...items.map(item => item.text)].join(' ');
}

/** Whether a cell's source starts with a `%%flyte_dask` line. */
export function hasMagicLine(source: string): boolean {
  const first = source.split('\n', 1)[0].replace(/^\s+/, '');
  return (
    first.startsWith(MAGIC) &&
    (first.length === MAGIC.length || /\s/.test(first[MAGIC.length]))
  );
}

/** The first line of a source and where the rest starts. */
export function splitFirstLine(source: string): { line: string; rest: string } {
  const newline = source.indexOf('\n');
  return newline < 0
    ? { line: source, rest: '' }
    : { line: source.slice(0, newline), rest: source.slice(newline) };
}
