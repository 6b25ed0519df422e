/** The resource picker: one labelled input per option the sidebar manages. */
import * as React from 'react';

import { OPTION_BY_FLAG } from '../rules';
import { FieldValue, FieldValues } from '../model';

export interface IResourceFormProps {
  values: FieldValues;
  errors: Record<string, string>;
  disabled: boolean;
  onChange: (flag: string, value: FieldValue) => void;
}

interface ITextField {
  flag: string;
  label: string;
  placeholder?: string;
}

const WORKER_FIELDS: ITextField[] = [
  { flag: 'workers', label: 'Workers' },
  {
    flag: 'worker-cpu',
    label: 'CPU per worker',
    placeholder: 'e.g. 2 or 500m'
  },
  { flag: 'worker-mem', label: 'Memory per worker', placeholder: 'e.g. 4Gi' },
  { flag: 'worker-gpu', label: 'GPUs per worker', placeholder: '0' }
];
const SCHEDULER_FIELDS: ITextField[] = [
  { flag: 'scheduler-cpu', label: 'Scheduler CPU', placeholder: 'e.g. 1' },
  { flag: 'scheduler-mem', label: 'Scheduler memory', placeholder: 'e.g. 2Gi' }
];

function TextField(props: {
  field: ITextField;
  value: FieldValue;
  error?: string;
  disabled: boolean;
  onChange: (flag: string, value: FieldValue) => void;
}): JSX.Element {
  const { field, error } = props;
  const rule = OPTION_BY_FLAG.get(field.flag);
  const fallback =
    rule?.default !== null && rule?.default !== undefined
      ? String(rule.default)
      : '';
  const id = `jp-FlyteDask-field-${field.flag}`;
  return (
    <div
      className={'jp-FlyteDask-field' + (error ? ' jp-FlyteDask-invalid' : '')}
    >
      <label htmlFor={id} title={rule?.help ?? ''}>
        {field.label}
      </label>
      <input
        id={id}
        className="jp-mod-styled"
        data-flag={field.flag}
        type="text"
        spellCheck={false}
        disabled={props.disabled}
        value={typeof props.value === 'string' ? props.value : ''}
        placeholder={
          field.placeholder ?? (fallback ? `default ${fallback}` : '')
        }
        title={`--${field.flag}: ${rule?.help ?? ''}`}
        aria-invalid={!!error}
        onChange={event => props.onChange(field.flag, event.target.value)}
      />
      {error && (
        <div className="jp-FlyteDask-error" data-error-for={field.flag}>
          {error}
        </div>
      )}
    </div>
  );
}

function Switch(props: {
  flag: string;
  label: string;
  values: FieldValues;
  disabled: boolean;
  onChange: (flag: string, value: FieldValue) => void;
}): JSX.Element {
  const rule = OPTION_BY_FLAG.get(props.flag);
  return (
    <label
      className="jp-FlyteDask-switch"
      title={`--${props.flag}: ${rule?.help ?? ''}`}
    >
      <input
        type="checkbox"
        data-flag={props.flag}
        disabled={props.disabled}
        checked={props.values[props.flag] === true}
        onChange={event => props.onChange(props.flag, event.target.checked)}
      />
      {props.label}
    </label>
  );
}

export function ResourceForm(props: IResourceFormProps): JSX.Element {
  const { values, errors, disabled, onChange } = props;
  const text = (field: ITextField) => (
    <TextField
      key={field.flag}
      field={field}
      value={values[field.flag] ?? ''}
      error={errors[field.flag]}
      disabled={disabled}
      onChange={onChange}
    />
  );
  const remote = values.remote === true;
  return (
    <form
      className="jp-FlyteDask-form"
      onSubmit={event => event.preventDefault()}
    >
      <fieldset disabled={disabled}>
        <legend>Dask workers</legend>
        {WORKER_FIELDS.map(text)}
        <Switch
          flag="interruptible"
          label="Interruptible (spot) workers"
          values={values}
          disabled={disabled}
          onChange={onChange}
        />
      </fieldset>
      <fieldset disabled={disabled}>
        <legend>Scheduler</legend>
        {SCHEDULER_FIELDS.map(text)}
      </fieldset>
      <fieldset disabled={disabled}>
        <legend>Task</legend>
        {text({
          flag: 'image',
          label: 'Image',
          placeholder: 'default image'
        })}
        <Switch
          flag="cache"
          label="Cache the task"
          values={values}
          disabled={disabled}
          onChange={onChange}
        />
        <div
          className="jp-FlyteDask-target"
          role="radiogroup"
          aria-label="Where to run"
        >
          <label>
            <input
              type="radio"
              name="jp-FlyteDask-target"
              data-target="local"
              disabled={disabled}
              checked={!remote}
              onChange={() => onChange('remote', false)}
            />
            Local
          </label>
          <label>
            <input
              type="radio"
              name="jp-FlyteDask-target"
              data-target="remote"
              disabled={disabled}
              checked={remote}
              onChange={() => onChange('remote', true)}
            />
            Flyte cluster
          </label>
        </div>
        {remote &&
          text({
            flag: 'project',
            label: 'Project',
            placeholder: 'e.g. flytesnacks'
          })}
        {remote &&
          text({
            flag: 'domain',
            label: 'Domain',
            placeholder: 'e.g. development'
          })}
      </fieldset>
    </form>
  );
}
