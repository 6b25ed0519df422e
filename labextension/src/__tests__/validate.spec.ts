/** The sidebar's validation against Python's own outcomes, recorded in the generated rules. */
import { Options } from '../magicLine';
import { pyInt, pyRepr, pyStrip } from '../pytext';
import { RULES } from '../rules';
import { validateOptions, validateValue } from '../validate';

describe('each value is accepted or rejected as Python does, with its message', () => {
  test.each(RULES.value_vectors.map(v => [v.flag, v.value, v.error] as const))(
    '--%s %j',
    (flag, value, error) => {
      expect(validateValue(flag, value)).toBe(error);
    }
  );
});

describe('whole option sets report the error Python reports first', () => {
  test.each(
    RULES.option_vectors.map(v => [JSON.stringify(v.options), v] as const)
  )('%s', (_name, vector) => {
    expect(validateOptions(vector.options as Options).first).toBe(vector.error);
  });
});

test('per-field errors name their field', () => {
  const { byFlag } = validateOptions({
    workers: '0',
    'worker-mem': 'x',
    image: 'ok'
  });
  expect(Object.keys(byFlag).sort()).toEqual(['worker-mem', 'workers']);
});

test('Python text helpers', () => {
  expect(pyRepr("it's")).toBe(`"it's"`);
  expect(pyRepr('a\\b\n')).toBe("'a\\\\b\\n'");
  expect(pyRepr('\u00a0\u2028')).toBe("'\\xa0\\u2028'");
  expect(pyStrip('\u3000 x\x1c')).toBe('x');
  expect(pyInt(' -1_0 ')).toBe(-10n);
  expect(pyInt('\u0663')).toBe(3n);
  expect(pyInt('1__0')).toBeNull();
});
