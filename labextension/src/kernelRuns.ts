/**
 * The runs of one notebook's kernel, over the comm that the sidebar opens to it.
 */
import { ISessionContext } from '@jupyterlab/apputils';
import { Kernel, KernelMessage } from '@jupyterlab/services';
import { UUID } from '@lumino/coreutils';
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import {
  COMM_TARGET,
  IRunRecord,
  ISpareCluster,
  isReply,
  KernelDefaults,
  LOAD_CODE,
  PROTOCOL,
  Reply,
  spareAfter
} from './protocol';

/**
 * - `no-kernel`: the notebook has no kernel (yet).
 * - `connecting`: asked the kernel; it answers once it is free (a running cell delays it).
 * - `not-loaded`: the kernel runs, without `%load_ext dask_flyte_jupyter`.
 * - `loading`: the sidebar asked the kernel to load the extension.
 * - `ready`: the run list is live.
 * - `error`: the kernel answered something this sidebar does not understand.
 */
export type ConnectionState =
  'no-kernel' | 'connecting' | 'not-loaded' | 'loading' | 'ready' | 'error';

export class KernelRuns implements IDisposable {
  constructor(readonly sessionContext: ISessionContext) {
    sessionContext.kernelChanged.connect(this._onKernelChanged, this);
    sessionContext.statusChanged.connect(this._onStatus, this);
    this._attach(sessionContext.session?.kernel ?? null);
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }
  get state(): ConnectionState {
    return this._state;
  }
  get runs(): readonly IRunRecord[] {
    return this._runs;
  }
  /** The spare cluster waiting for the next cell, if any. */
  get spare(): ISpareCluster | null {
    return this._spare;
  }
  /** The kernel's defaults for a cell without flags (null until it told them). */
  get defaults(): KernelDefaults | null {
    return this._defaults;
  }
  /** Whether the kernel has the extension loaded, as far as the sidebar knows. */
  get hasExtension(): boolean {
    return this._state === 'ready';
  }
  /** What went wrong, for the `error` and `not-loaded` states. */
  get message(): string {
    return this._message;
  }
  get isDisposed(): boolean {
    return this._disposed;
  }

  /** Ask the kernel for its runs (replies and pushes update `runs`). */
  refresh(): void {
    if (this._comm && !this._comm.isDisposed && this._state === 'ready') {
      this._comm.send({ type: 'runs', request_id: UUID.uuid4() });
    }
  }

  /** Load the extension in the kernel: one silent execute request, then talk to it. */
  async load(): Promise<void> {
    const kernel = this._kernel;
    if (!kernel) {
      return;
    }
    this._setState('loading');
    const future = kernel.requestExecute({
      code: LOAD_CODE,
      silent: true,
      store_history: false,
      allow_stdin: false,
      stop_on_error: false
    });
    const reply = await future.done;
    if (reply.content.status !== 'ok') {
      const content = reply.content as KernelMessage.IReplyErrorContent;
      this._message = `${LOAD_CODE} failed: ${content.ename}: ${content.evalue}`;
      this._setState('not-loaded');
      return;
    }
    if (this._state !== 'ready') {
      this._connect();
    }
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._detach();
    Signal.clearData(this);
  }

  private _onKernelChanged(
    _: ISessionContext,
    change: { newValue: Kernel.IKernelConnection | null }
  ): void {
    this._attach(change.newValue);
  }

  private _onStatus(_: ISessionContext, status: Kernel.Status): void {
    if (
      status === 'restarting' ||
      status === 'autorestarting' ||
      status === 'dead'
    ) {
      this._closeComm();
      this._runs = [];
      this._spare = null;
      this._defaults = null;
      this._setState(status === 'dead' ? 'no-kernel' : 'connecting');
      this._restarted = true;
    } else if (status === 'idle' && this._restarted) {
      this._restarted = false;
      this._connect();
    }
  }

  private _onIOPub(
    _: Kernel.IKernelConnection,
    msg: KernelMessage.IIOPubMessage
  ): void {
    // A cell finished: ask again (cheap, and covers a missed push). Only after executions: the
    // kernel also goes busy and idle for each comm message, including our own requests.
    if (
      KernelMessage.isStatusMsg(msg) &&
      msg.content.execution_state === 'idle' &&
      (msg.parent_header as Partial<KernelMessage.IHeader>).msg_type ===
        'execute_request'
    ) {
      this.refresh();
    }
  }

  private _attach(kernel: Kernel.IKernelConnection | null): void {
    this._detach();
    this._kernel = kernel;
    this._runs = [];
    this._spare = null;
    this._defaults = null;
    if (!kernel) {
      this._setState('no-kernel');
      return;
    }
    // The kernel says hello when the extension gets loaded (by a cell or by us).
    kernel.registerCommTarget(COMM_TARGET, this._onAnnounce);
    kernel.iopubMessage.connect(this._onIOPub, this);
    this._connect();
  }

  private _detach(): void {
    this._closeComm();
    if (this._kernel && !this._kernel.isDisposed) {
      this._kernel.removeCommTarget(COMM_TARGET, this._onAnnounce);
      this._kernel.iopubMessage.disconnect(this._onIOPub, this);
    }
    this._kernel = null;
  }

  private _onAnnounce = (): void => {
    // The announcing comm closes itself; we talk over our own.
    if (this._state !== 'ready') {
      this._connect();
    }
  };

  private _connect(): void {
    const kernel = this._kernel;
    if (!kernel || kernel.isDisposed) {
      return;
    }
    this._closeComm();
    const comm = kernel.createComm(COMM_TARGET);
    this._comm = comm;
    let answered = false;
    comm.onMsg = msg => {
      answered = true;
      this._onReply(msg.content.data);
    };
    comm.onClose = () => {
      if (this._comm !== comm) {
        return;
      }
      this._comm = null;
      // Closed before any answer: the kernel has no such comm target.
      this._message = answered ? 'the kernel closed the connection' : '';
      this._setState('not-loaded');
    };
    this._setState('connecting');
    comm.open({ type: 'hello', request_id: UUID.uuid4() });
  }

  private _closeComm(): void {
    const comm = this._comm;
    this._comm = null;
    if (comm && !comm.isDisposed) {
      try {
        comm.close();
      } catch {
        // the kernel is gone already
      }
    }
  }

  private _onReply(data: unknown): void {
    if (!isReply(data)) {
      return;
    }
    const reply = data as Reply;
    this._spare = spareAfter(this._spare, reply);
    switch (reply.type) {
      case 'hello':
        if (reply.protocol !== PROTOCOL) {
          this._message =
            `the kernel's dask_flyte_jupyter ${reply.version} speaks protocol ` +
            `${reply.protocol}, this sidebar ${PROTOCOL}: install the same version in both`;
          this._setState('error');
          return;
        }
        this._defaults = reply.defaults ?? this._defaults;
        this._setState('ready');
        this.refresh();
        return;
      case 'runs':
        this._runs = reply.runs;
        this._defaults = reply.defaults ?? this._defaults;
        this._changed.emit();
        return;
      case 'defaults':
        this._defaults = reply.defaults;
        this._changed.emit();
        return;
      case 'spare':
        this._changed.emit();
        return;
      case 'error':
        console.warn(`flyte dask sidebar: the kernel said: ${reply.message}`);
        return;
    }
  }

  private _setState(state: ConnectionState): void {
    this._state = state;
    this._changed.emit();
  }

  private _changed = new Signal<this, void>(this);
  private _state: ConnectionState = 'no-kernel';
  private _runs: readonly IRunRecord[] = [];
  private _spare: ISpareCluster | null = null;
  private _defaults: KernelDefaults | null = null;
  private _message = '';
  private _kernel: Kernel.IKernelConnection | null = null;
  private _comm: Kernel.IComm | null = null;
  private _restarted = false;
  private _disposed = false;
}
