/**
 * The cluster spec's checks (Python's `spec_from_options` + `ClusterSpec.validate`), driven by
 * the generated rules: the quantity grammar, suffix multipliers, bounds, name pattern and integer
 * minimums all come from `rules.json`. The jest tests replay Python's own outcomes
 * (`value_vectors`, `option_vectors`), messages included.
 */
import { Options } from './magicLine';
import { OPTION_BY_FLAG, RULES } from './rules';
import { hasPySpace, pyInt, pyShown, pyStrip } from './pytext';

/** An exact non-negative rational. */
interface IFraction {
  num: bigint;
  den: bigint;
}

const QUANTITY = new RegExp(`^(?:${RULES.quantity.pattern})$`);
const NAME = new RegExp(`^(?:${RULES.name_pattern})$`);
const MAX = BigInt(RULES.quantity.max);

function lessThan(a: IFraction, b: IFraction): boolean {
  return a.num * b.den < b.num * a.den;
}

function parseQuantity(
  value: string,
  flag: string,
  what: string,
  forms: string
): IFraction {
  const match = QUANTITY.exec(pyStrip(value));
  if (!match || !match.groups) {
    throw new Error(`--${flag}: ${pyShown(value)} is not a ${what} (${forms})`);
  }
  const { num, exp, suffix } = match.groups;
  const [whole, fraction = ''] = num.split('.');
  let result: IFraction = {
    num: BigInt((whole || '0') + fraction),
    den: 10n ** BigInt(fraction.length)
  };
  if (exp !== undefined) {
    const power = 10n ** BigInt(Math.abs(parseInt(exp, 10)));
    result = exp.startsWith('-')
      ? { num: result.num, den: result.den * power }
      : { num: result.num * power, den: result.den };
  } else if (suffix !== undefined) {
    const [n, d] = RULES.quantity.suffixes[suffix];
    result = { num: result.num * BigInt(n), den: result.den * BigInt(d) };
  }
  if (result.num <= 0n) {
    throw new Error(`--${flag}: must be > 0, got ${pyShown(value)}`);
  }
  return result;
}

function checkCpu(value: string, flag: string): void {
  const cores = parseQuantity(
    value,
    flag,
    'Kubernetes CPU quantity',
    RULES.quantity.cpu_forms
  );
  const millicores = { num: cores.num * 1000n, den: cores.den };
  if (lessThan(millicores, { num: 1n, den: 1n })) {
    throw new Error(
      `--${flag}: ${pyShown(value)} is below 1m, the smallest CPU amount`
    );
  }
  if (lessThan({ num: MAX, den: 1n }, millicores)) {
    throw new Error(`--${flag}: ${pyShown(value)} is too large`);
  }
}

function checkMemory(value: string, flag: string): void {
  const forms = RULES.quantity.memory_forms;
  const size = parseQuantity(value, flag, 'Kubernetes quantity', forms);
  if (lessThan(size, { num: 1n, den: 1n })) {
    throw new Error(
      `--${flag}: ${pyShown(value)} is less than 1 byte (${forms})`
    );
  }
  if (lessThan({ num: MAX, den: 1n }, size)) {
    throw new Error(`--${flag}: ${pyShown(value)} is too large`);
  }
}

function intError(flag: string, got: string): Error {
  return new Error(
    `--${flag}: must be a whole number >= ${RULES.int_minimum[flag]}, got ${got}`
  );
}

/** Python's `_coerce` of an int flag: the integer, or the error for text that is not one. */
function coerceInt(flag: string, value: string): bigint {
  const number = pyInt(value);
  if (number === null) {
    throw intError(flag, pyShown(value));
  }
  return number;
}

/** One field's own checks (`ClusterSpec.validate`), given the line's value. */
function checkField(
  flag: string,
  value: string | true,
  options: Options
): void {
  const kind = OPTION_BY_FLAG.get(flag)?.kind;
  if (value === true) {
    return;
  }
  switch (kind) {
    case 'int':
      if (coerceInt(flag, value) < BigInt(RULES.int_minimum[flag])) {
        throw intError(flag, coerceInt(flag, value).toString());
      }
      return;
    case 'cpu':
      return checkCpu(pyStrip(value), flag);
    case 'memory':
      return checkMemory(pyStrip(value), flag);
    case 'image':
      if (value === '' || hasPySpace(value)) {
        throw new Error(
          `--image: ${pyShown(value)} must be non-empty and contain no spaces`
        );
      }
      return;
    case 'cache-version':
      if (options.cache !== true) {
        throw new Error('--cache-version needs --cache');
      }
      if (!pyStrip(value)) {
        throw new Error('--cache-version: must not be empty');
      }
      return;
    case 'name':
      if (!NAME.test(value)) {
        throw new Error(
          `--name: ${pyShown(value)} is not a valid task name (start with a letter; then ` +
            "letters, digits, '_', '-', '.'; at most 63 characters)"
        );
      }
      return;
  }
}

function messageOf(check: () => void): string | null {
  try {
    check();
    return null;
  } catch (error) {
    return (error as Error).message;
  }
}

export interface IValidation {
  /** The error the kernel reports first for these options, or null. */
  first: string | null;
  /** Each field's own error. */
  byFlag: Record<string, string>;
}

/** Validate the spec options of a line like the kernel (`spec_from_options`) does. */
export function validateOptions(options: Options): IValidation {
  const byFlag: Record<string, string> = {};
  let first: string | null = null;
  // Text that is not an integer fails while coercing, in the options' order, before validate().
  for (const [flag, value] of Object.entries(options)) {
    if (flag in RULES.int_minimum && typeof value === 'string') {
      const error = messageOf(() => coerceInt(flag, value));
      first = first ?? error;
    }
  }
  for (const flag of RULES.validate_order) {
    const value = options[flag];
    if (value !== undefined) {
      const error = messageOf(() => checkField(flag, value, options));
      if (error !== null) {
        byFlag[flag] = error;
        first = first ?? error;
      }
    }
  }
  return { first, byFlag };
}

/** The kernel's error for one flag's value alone (`cache-version` assumes `--cache`). */
export function validateValue(flag: string, value: string): string | null {
  const options: Options = { [flag]: value };
  if (flag === 'cache-version') {
    options.cache = true;
  }
  return validateOptions(options).first;
}
