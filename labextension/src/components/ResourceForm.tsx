/** The resource picker: one labelled input per option the sidebar manages. */
import * as React from 'react';

import { FieldValue, FieldValues, placeholderFor } from '../fields';
import { KernelDefaults } from '../protocol';
import { OPTION_BY_FLAG } from '../rules';

export interface IResourceFormProps {
  values: FieldValues;
  errors: Record<string, string>;
  disabled: boolean;
  /** The kernel's defaults, for the placeholders (null: the built-in ones). */
  defaults: KernelDefaults | null;
  onChange: (flag: string, value: FieldValue) => void;
  /** The user left a field. */
  onDone: (flag: string) => void;
}

interface ITextField {
  flag: string;
  /** Short: the label column is narrow. */
  label: string;
}

const WORKER_FIELDS: ITextField[] = [
  { flag: 'workers', label: 'Workers' },
  { flag: 'worker-cpu', label: 'CPU each' },
  { flag: 'worker-mem', label: 'Memory each' },
  { flag: 'worker-gpu', label: 'GPUs each' }
];
const SCHEDULER_FIELDS: ITextField[] = [
  { flag: 'scheduler-cpu', label: 'CPU' },
  { flag: 'scheduler-mem', label: 'Memory' }
];

function TextField(props: {
  field: ITextField;
  value: FieldValue;
  error?: string;
  disabled: boolean;
  defaults: KernelDefaults | null;
  onChange: (flag: string, value: FieldValue) => void;
  onDone: (flag: string) => void;
}): JSX.Element {
  const { field, error } = props;
  const rule = OPTION_BY_FLAG.get(field.flag);
  const placeholder = placeholderFor(field.flag, props.defaults);
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
        placeholder={placeholder}
        title={`--${field.flag}: ${rule?.help ?? ''} (${placeholder})`}
        aria-invalid={!!error}
        aria-describedby={error ? `${id}-error` : undefined}
        onChange={event => props.onChange(field.flag, event.target.value)}
        onBlur={() => props.onDone(field.flag)}
      />
      {error && (
        <div
          className="jp-FlyteDask-error"
          id={`${id}-error`}
          data-error-for={field.flag}
        >
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
      defaults={props.defaults}
      onChange={onChange}
      onDone={props.onDone}
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
          label="Interruptible (spot)"
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
        {text({ flag: 'image', label: 'Image' })}
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
          title="local: a dask cluster on this machine; remote: on your Flyte cluster (--remote)"
        >
          <span className="jp-FlyteDask-targetLabel">Run</span>
          <label>
            <input
              type="radio"
              name="jp-FlyteDask-target"
              data-target="local"
              disabled={disabled}
              checked={!remote}
              onChange={() => onChange('remote', false)}
            />
            local
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
            remote
          </label>
        </div>
        {remote && text({ flag: 'project', label: 'Project' })}
        {remote && text({ flag: 'domain', label: 'Domain' })}
      </fieldset>
    </form>
  );
}
