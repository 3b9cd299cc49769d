defmodule Breakwater.Bench.Loops do
  @moduledoc false
  # The timed loops: compiled, tail-recursive, one call per iteration (four in the
  # transition mix, one drain and one ack per batch), every result matched, so a call
  # that answers something else crashes the worker and fails the bench.

  alias Breakwater.Native

  # ---- reference points -------------------------------------------------------------

  def empty(0), do: :ok
  def empty(n), do: empty(n - 1)

  def nif_started(0), do: :ok

  def nif_started(n) do
    true = Native.started()
    nif_started(n - 1)
  end

  def nif_exists(0, _s), do: :ok

  def nif_exists(n, s) do
    true = Native.exists(s)
    nif_exists(n - 1, s)
  end

  def nif_now_ms(0), do: :ok

  def nif_now_ms(n) do
    t = Native.now_ms()
    true = is_integer(t)
    nif_now_ms(n - 1)
  end

  def nif_check(0, _s), do: :ok

  def nif_check(n, s) do
    {:backpressure_inactive, 0} = Native.check(s)
    nif_check(n - 1, s)
  end

  # ---- the public hot paths ---------------------------------------------------------

  def check(0, _s), do: :ok

  def check(n, s) do
    {:backpressure_inactive, 0} = :router_intake_backpressure.check_backpressure(s)
    check(n - 1, s)
  end

  def admit(0, _s), do: :ok

  def admit(n, s) do
    :ok = Breakwater.admit(s, [])
    admit(n - 1, s)
  end

  def record(0, _s), do: :ok

  def record(n, s) do
    :ok = Breakwater.record(s, :success)
    record(n - 1, s)
  end

  def admit_token(0, _s), do: :ok

  def admit_token(n, s) do
    {:ok, _} = Breakwater.admit(s, token: true)
    admit_token(n - 1, s)
  end

  def record_token(0, _s, _t), do: :ok

  def record_token(n, s, t) do
    :ok = Breakwater.record(s, :success, token: t)
    record_token(n - 1, s, t)
  end

  def record_latency(0, _s), do: :ok

  def record_latency(n, s) do
    :ok = Breakwater.record(s, :success, latency_ms: 12)
    record_latency(n - 1, s)
  end

  # The NIF alone, without and with a latency (into the histogram).
  def nif_record(0, _s, _latency), do: :ok

  def nif_record(n, s, latency) do
    :ok = Native.record(s, :success, latency)
    nif_record(n - 1, s, latency)
  end

  def enqueue(0, _s, _event), do: :ok

  def enqueue(n, s, event) do
    :ok = Breakwater.enqueue(s, event)
    enqueue(n - 1, s, event)
  end

  def drain_ack(0, _s, _batch), do: :ok

  def drain_ack(n, s, batch) do
    {:ok, id, [_ | _]} = Breakwater.drain(s, batch)
    :ok = Breakwater.ack(s, id)
    drain_ack(n - 1, s, batch)
  end

  # Four calls, two of them transitions: normal → pressure (inactive → warning) and
  # pressure → normal (warning → inactive, a recovery).
  def transition_mix(0, _s, _high, _low), do: :ok

  def transition_mix(n, s, high, low) do
    :ok = Breakwater.report_depth(s, high)
    {:backpressure_warning, 0} = :router_intake_backpressure.check_backpressure(s)
    :ok = Breakwater.report_depth(s, low)
    {:backpressure_inactive, 0} = :router_intake_backpressure.check_backpressure(s)
    transition_mix(n - 1, s, high, low)
  end

  # ---- pure-BEAM baselines ----------------------------------------------------------

  # (a) The shape of ETS-based Erlang breakers such as fuse: the state looked up in a
  # read_concurrency table, a shared counter bumped with update_counter.
  def ets_lookup_update(0, _table, _key, _counter), do: :ok

  def ets_lookup_update(n, table, key, counter) do
    [{_, :ok}] = :ets.lookup(table, key)
    _ = :ets.update_counter(table, counter, 1)
    ets_lookup_update(n - 1, table, key, counter)
  end

  def ets_lookup(0, _table, _key), do: :ok

  def ets_lookup(n, table, key) do
    [{_, :ok}] = :ets.lookup(table, key)
    ets_lookup(n - 1, table, key)
  end

  # (b) persistent_term for the handles, an atomics state word, a write_concurrency
  # counter.
  def pt_atomics_counters(0, _key), do: :ok

  def pt_atomics_counters(n, key) do
    {atomics, counters} = :persistent_term.get(key)
    0 = :atomics.get(atomics, 1)
    :ok = :counters.add(counters, 1, 1)
    pt_atomics_counters(n - 1, key)
  end
end
