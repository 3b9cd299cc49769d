defmodule Breakwater.Native do
  @moduledoc """
  The NIF stubs of the `breakwater_nif` crate. Internal: only the modules of this
  library call them (`Breakwater`, `:router_intake_backpressure` and their helpers),
  which validate input, resolve priority names and write history.

  Results that made a state transition come back as
  `{:transitions, result, [transition]}`; callers unwrap them with
  `Breakwater.History.observe/2`.

  Calls that write (admit, record, report_depth, enqueue, the manual controls) create
  their subject on first use, in the dynamic room; `configure/3` and `declare/1` put it
  in the configured room; reads (`check/1`, `status/1`, `drain/2`, `ack/2`, `nack/2`,
  `policy_extra/1`) never create one.
  """

  @on_load :load_nif

  @doc false
  def load_nif do
    path = :filename.join(:code.priv_dir(:breakwater), ~c"native/libbreakwater_nif")
    :erlang.load_nif(path, 0)
  end

  defp nif_error, do: :erlang.nif_error(:nif_not_loaded)

  @doc false
  def init(_config), do: nif_error()
  @doc false
  def started, do: nif_error()
  @doc false
  def configure(_subject, _native_policy, _extra), do: nif_error()
  @doc false
  def declare(_subject), do: nif_error()
  @doc false
  def touch(_subject), do: nif_error()
  @doc false
  def reset_policy(_subject), do: nif_error()
  @doc false
  def policy_extra(_subject), do: nif_error()
  @doc false
  def remove(_subject), do: nif_error()
  @doc false
  def expire_idle(_idle_ms, _keep), do: nif_error()
  @doc false
  def reclaim, do: nif_error()
  @doc false
  def overview(_max, _filter), do: nif_error()
  @doc false
  def totals, do: nif_error()
  @doc false
  def check(_subject), do: nif_error()
  @doc false
  def check_ms(_subject), do: nif_error()
  @doc false
  def admit(_subject, _priority), do: nif_error()
  @doc false
  def admit_event(_subject, _event_type), do: nif_error()
  @doc false
  def admit_write(_subject), do: nif_error()
  @doc false
  def record(_subject, _outcome, _latency_ms), do: nif_error()
  @doc false
  def admit_token(_subject, _priority), do: nif_error()
  @doc false
  def admit_event_token(_subject, _event_type), do: nif_error()
  @doc false
  def record_token(_subject, _outcome, _latency_ms, _token), do: nif_error()
  @doc false
  def record_write(_subject, _outcome, _latency_ms, _token), do: nif_error()
  @doc false
  def report_depth(_subject, _depth), do: nif_error()
  @doc false
  def report_latency(_subject, _p95_ms), do: nif_error()
  @doc false
  def report_inflight(_subject, _n), do: nif_error()
  @doc false
  def signals(_subject), do: nif_error()
  @doc false
  def enqueue(_subject, _event), do: nif_error()
  @doc false
  def drain(_subject, _max), do: nif_error()
  @doc false
  def ack(_subject, _batch_id), do: nif_error()
  @doc false
  def nack(_subject, _batch_id), do: nif_error()
  @doc false
  def nack_all(_subject), do: nif_error()
  @doc false
  def reset(_subject), do: nif_error()
  @doc false
  def force_open(_subject), do: nif_error()
  @doc false
  def remote_open(_subject), do: nif_error()
  @doc false
  def disable(_subject), do: nif_error()
  @doc false
  def enable(_subject), do: nif_error()
  @doc false
  def tick(_budgeted), do: nif_error()
  @doc false
  def tick_reporting(_budgeted), do: nif_error()
  @doc false
  def status(_subject), do: nif_error()
  @doc false
  def exists(_subject), do: nif_error()
  @doc false
  def subjects, do: nif_error()
  @doc false
  def pool_info, do: nif_error()
  @doc false
  def now_ms, do: nif_error()
  @doc false
  def advance_clock(_ms), do: nif_error()
  @doc false
  def load(_subject), do: nif_error()
  @doc false
  def spool_maintain, do: nif_error()
  @doc false
  def spool_sync, do: nif_error()
  @doc false
  def spool_info, do: nif_error()
end
