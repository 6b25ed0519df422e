/**
 * The magic's options and the cluster spec's rules, generated from Python.
 *
 * `rules.json` is written by `python -m dask_flyte_jupyter.schema`; a pytest test fails when it
 * is out of date. Nothing in this extension restates those rules by hand.
 */
import rulesJson from './rules.json';

/** One option of `%%flyte_dask`, as the magic's argument parser declares it. */
export interface IOptionRule {
  option: string;
  flag: string;
  dest: string;
  takes_value: boolean;
  metavar: string | null;
  help: string | null;
  /** How the cluster spec validates it: int, cpu, memory, bool, image, name, cache-version, text. */
  kind: string;
  /** Whether the option is a field of the cluster spec (validated in Python's spec.py). */
  spec_field: boolean;
  default: number | boolean | string | null;
}

/** Outcome Python gives a value of one flag: accepted (`error` null) or the exact message. */
export interface IValueVector {
  flag: string;
  value: string;
  error: string | null;
}

export interface IOptionVector {
  options: Record<string, string | true>;
  error: string | null;
}

export interface IRules {
  magic: string;
  /** The longest argument string the kernel reads; a longer line is refused. */
  max_line_chars: number;
  options: IOptionRule[];
  spec_flags: string[];
  /** The order in which Python's `ClusterSpec.validate` checks the flags. */
  validate_order: string[];
  int_minimum: Record<string, number>;
  quantity: {
    pattern: string;
    suffixes: Record<string, [string, string]>;
    max: string;
    cpu_forms: string;
    memory_forms: string;
  };
  name_pattern: string;
  whitespace: string;
  /** Characters of a value an error message shows before cutting it (Python's `shown`). */
  shown_chars: number;
  negative_number: string;
  value_vectors: IValueVector[];
  option_vectors: IOptionVector[];
}

export const RULES = rulesJson as unknown as IRules;

/** Option rules by flag name (without the dashes). */
export const OPTION_BY_FLAG: ReadonlyMap<string, IOptionRule> = new Map(
  RULES.options.map(rule => [rule.flag, rule])
);
