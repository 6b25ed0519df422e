/**
 * The sidebar's parser and writer against the shared vectors that pytest checks against Python's
 * reference parser (`tests/magic_line_vectors.json`), plus the editing rules of the panel.
 */
import { readFileSync } from 'fs';
import { join } from 'path';

import {
  formatMagicLine,
  formatOption,
  hasMagicLine,
  MagicLineError,
  Options,
  parseMagicLine,
  setOptions,
  shellQuote,
  splitArgs
} from '../magicLine';
import { RULES } from '../rules';

interface IParseVector {
  line: string;
  options?: Options;
  error?: string;
}

const VECTORS: {
  parse: IParseVector[];
  write: { options: Options; line: string }[];
} = JSON.parse(
  readFileSync(
    join(__dirname, '..', '..', '..', 'tests', 'magic_line_vectors.json'),
    'utf-8'
  )
);

describe('parseMagicLine matches the reference parser', () => {
  test.each(VECTORS.parse.map(v => [v.line, v] as const))(
    '%j',
    (_line, vector) => {
      const parsed = parseMagicLine(vector.line);
      if (vector.error !== undefined) {
        expect(parsed.error).toBe(vector.error);
      } else {
        expect(parsed.error).toBeNull();
        expect(parsed.options).toEqual(vector.options);
      }
    }
  );
});

describe('formatMagicLine writes what ClusterSpec.magic_line writes', () => {
  test.each(VECTORS.write.map(v => [v.line, v] as const))(
    '%s',
    (_line, vector) => {
      expect(formatMagicLine(vector.options)).toBe(vector.line);
      expect(parseMagicLine(vector.line).options).toEqual(vector.options);
    }
  );
});

describe('the writer round-trips every value the kernel can read back', () => {
  test.each([
    ['image', 'ghcr.io/org/img:1.0'],
    ['image', '-starts-with-dash'],
    ['project', '-5'],
    ['name', "it's"],
    ['image', '"quoted"'],
    ['image', "'single"],
    ['cache-version', 'a=b'],
    ['workers', ''],
    ['domain', 'x\u00a0y'],
    ['image', 'a b'],
    ['name', 'tab\there'],
    ['cache-version', 'a\\b'],
    ['cache-version', '"it\'s"'],
    ['project', '-x y'],
    ['export', 'my cell.py'],
    ['config', '~/flyte configs/c.yaml'],
    ['out', '$HOME'],
    ['inputs', 'a, b']
  ])('--%s %j', (flag, value) => {
    const line = formatMagicLine({ [flag]: value });
    expect(parseMagicLine(line)).toMatchObject({
      error: null,
      options: { [flag]: value }
    });
  });

  test('values are quoted as a shell needs them, like shlex.quote', () => {
    expect(formatOption('image', 'a b')).toBe("--image 'a b'");
    expect(formatOption('name', "it's")).toBe(`--name 'it'"'"'s'`);
    expect(formatOption('image', '')).toBe("--image ''");
    expect(formatOption('image', 'ghcr.io/o/i:1@sha256:0')).toBe(
      '--image ghcr.io/o/i:1@sha256:0'
    );
    expect(formatOption('project', '-x y')).toBe("--project='-x y'");
    expect(shellQuote('caf\u00e9')).toBe("'caf\u00e9'");
  });

  test('values with a line break cannot be written', () => {
    expect(() => formatOption('image', 'a\nb')).toThrow(MagicLineError);
    expect(() => formatOption('name', 'a\u2028b')).toThrow(/line break/);
  });

  test('switches and values are not mixed up', () => {
    expect(() => formatOption('cache', 'yes')).toThrow(MagicLineError);
    expect(() => formatOption('workers', true)).toThrow(MagicLineError);
    expect(() => formatOption('nope', '1')).toThrow(/unknown option/);
  });
});

describe('setOptions edits the line in place', () => {
  test('replaces a value and keeps unknown arguments and their order', () => {
    const line = '%%flyte_dask --foo=1 --workers 2 --out run --bar baz';
    expect(setOptions(line, { workers: '3' })).toBe(
      '%%flyte_dask --foo=1 --workers 3 --out run --bar baz'
    );
  });

  test('adds new options in the magic order, next to the known ones', () => {
    const line = '%%flyte_dask --extra --workers 3 --out run';
    expect(
      setOptions(line, {
        'worker-mem': '1Gi',
        interruptible: true,
        image: 'x:1'
      })
    ).toBe(
      '%%flyte_dask --extra --workers 3 --worker-mem 1Gi --image x:1 --interruptible --out run'
    );
    expect(setOptions('%%flyte_dask', { remote: true, workers: '4' })).toBe(
      '%%flyte_dask --workers 4 --remote'
    );
    expect(setOptions('%%flyte_dask --unknown', { workers: '4' })).toBe(
      '%%flyte_dask --workers 4 --unknown'
    );
  });

  test('removes options, and duplicates keep one occurrence', () => {
    expect(
      setOptions('%%flyte_dask --cache --workers 2 --workers 5', {
        workers: '6'
      })
    ).toBe('%%flyte_dask --cache --workers 6');
    expect(
      setOptions('%%flyte_dask --cache --workers=2 --im y', {
        cache: null,
        image: null
      })
    ).toBe('%%flyte_dask --workers=2');
  });

  test('keeps abbreviations it does not touch, rewrites those it does', () => {
    expect(setOptions('%%flyte_dask --im y --interr', { image: 'z' })).toBe(
      '%%flyte_dask --image z --interr'
    );
  });

  test('the result always parses to the intended options', () => {
    const line = setOptions('%%flyte_dask --name t --bogus', {
      workers: '3',
      'worker-mem': '1Gi',
      'scheduler-cpu': '-1'
    });
    expect(parseMagicLine(line).extras.map(e => e.text)).toEqual(['--bogus']);
    expect(parseMagicLine(line.replace(' --bogus', '')).options).toEqual({
      workers: '3',
      'worker-mem': '1Gi',
      'scheduler-cpu': '-1',
      name: 't'
    });
  });

  test('keeps quoted options and arguments as they were written', () => {
    const line = `%%flyte_dask --name 'my-task' --foo 'a b' --image "x:1"`;
    expect(setOptions(line, { workers: '3' })).toBe(
      `%%flyte_dask --workers 3 --name 'my-task' --foo 'a b' --image "x:1"`
    );
    expect(parseMagicLine(line).error).toBe(
      'unrecognized arguments: --foo a b'
    );
    expect(setOptions(line, { image: 'my image' })).toBe(
      `%%flyte_dask --name 'my-task' --foo 'a b' --image 'my image'`
    );
  });

  test('refuses lines that cannot be read safely', () => {
    expect(() =>
      setOptions("%%flyte_dask --image 'open", { workers: '2' })
    ).toThrow('No closing quotation');
    expect(() => setOptions('%%flyte_dask --work 2', { workers: '2' })).toThrow(
      /ambiguous/
    );
  });
});

describe('a line too long to be typed', () => {
  test('is refused at once, as the kernel refuses it', () => {
    const max = RULES.max_line_chars;
    const line = `%%flyte_dask  --name ${'a'.repeat(max)} `;
    const start = Date.now();
    expect(parseMagicLine(line).error).toBe(
      `the magic line is ${max + 7} characters long (at most ${max}): ` +
        'is a value pasted by mistake?'
    );
    expect(Date.now() - start).toBeLessThan(1000);
    const fits = `%%flyte_dask --name ${'a'.repeat(max - 7)}`;
    expect(parseMagicLine(fits).options).toEqual({ name: 'a'.repeat(max - 7) });
  });
});

describe('cell detection and splitting', () => {
  test('hasMagicLine', () => {
    expect(hasMagicLine('%%flyte_dask\nx')).toBe(true);
    expect(hasMagicLine('%%flyte_dask --workers 2')).toBe(true);
    expect(hasMagicLine('  %%flyte_dask')).toBe(true);
    expect(hasMagicLine('%%flyte_dasker\nx')).toBe(false);
    expect(hasMagicLine('x = 1\n%%flyte_dask')).toBe(false);
  });

  test('splitArgs removes quotes like shlex.split, and keeps what was written', () => {
    const tokens = splitArgs(`a "b c"d 'e' '' x\\ y`);
    expect(tokens.map(t => t.text)).toEqual(['a', 'b cd', 'e', '', 'x y']);
    expect(tokens.map(t => t.raw)).toEqual([
      'a',
      '"b c"d',
      "'e'",
      "''",
      'x\\ y'
    ]);
  });
});
