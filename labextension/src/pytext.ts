/**
 * Small pieces of Python's text semantics that messages and parsing depend on.
 */
import { RULES } from './rules';

const WHITESPACE = new Set(Array.from(RULES.whitespace));

/** `str.isspace()` for one character. */
export function isPySpace(char: string): boolean {
  return WHITESPACE.has(char);
}

/** `str.strip()` with no argument. */
export function pyStrip(text: string): string {
  const chars = Array.from(text);
  let start = 0;
  let end = chars.length;
  while (start < end && isPySpace(chars[start])) {
    start++;
  }
  while (end > start && isPySpace(chars[end - 1])) {
    end--;
  }
  return chars.slice(start, end).join('');
}

/** `any(c.isspace() for c in text)`. */
export function hasPySpace(text: string): boolean {
  return Array.from(text).some(isPySpace);
}

const NOT_PRINTABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}]/u;

function escapeChar(char: string): string {
  const code = char.codePointAt(0) as number;
  const hex = code.toString(16);
  if (code < 0x100) {
    return '\\x' + hex.padStart(2, '0');
  }
  if (code < 0x10000) {
    return '\\u' + hex.padStart(4, '0');
  }
  return '\\U' + hex.padStart(8, '0');
}

/** `repr(text)` of a Python str, as error messages show values. */
export function pyRepr(text: string): string {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  let body = '';
  for (const char of Array.from(text)) {
    if (char === '\\' || char === quote) {
      body += '\\' + char;
    } else if (char === '\t') {
      body += '\\t';
    } else if (char === '\n') {
      body += '\\n';
    } else if (char === '\r') {
      body += '\\r';
    } else if (char !== ' ' && NOT_PRINTABLE.test(char)) {
      body += escapeChar(char);
    } else {
      body += char;
    }
  }
  return quote + body + quote;
}

/** Python's `spec.shown(text)`: `repr`, cut after `shown_chars` characters of a long text. */
export function pyShown(text: string): string {
  const chars = Array.from(text);
  const limit = RULES.shown_chars;
  if (chars.length <= limit) {
    return pyRepr(text);
  }
  return `${pyRepr(chars.slice(0, limit).join(''))}… (${chars.length} characters)`;
}

const DIGIT = /^\p{Nd}$/u;

function digitValue(char: string): number {
  // Unicode decimal digits come in runs of ten, zero first.
  let code = char.codePointAt(0) as number;
  let offset = 0;
  while (DIGIT.test(String.fromCodePoint(code - 1))) {
    code--;
    offset++;
  }
  return offset % 10;
}

const PY_INT = /^[+-]?\p{Nd}+(?:_\p{Nd}+)*$/u;

/** `int(text)` for a str: the integer, or null where Python raises ValueError. */
export function pyInt(text: string): bigint | null {
  const body = pyStrip(text);
  if (!PY_INT.test(body)) {
    return null;
  }
  let value = 0n;
  for (const char of Array.from(body)) {
    if (DIGIT.test(char)) {
      value = value * 10n + BigInt(digitValue(char));
    }
  }
  return body.startsWith('-') ? -value : value;
}
