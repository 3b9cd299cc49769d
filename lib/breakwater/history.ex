defmodule Breakwater.History do
  @moduledoc """
  Writes history, events and recovery records: once per transition, by the process
  that observed it.

  The native layer reports a transition to exactly one caller, the winner of the
  compare-and-swap that made it, by returning `{:transitions, result, [transition]}`
  instead of `result`. `observe/2` unwraps that: in the common case (no transition) it
  is one pattern match; otherwise it writes

  - one status-history entry per transition (`router_backpressure_status_history`),
    with the router status, breaker and backpressure state before and after;
  - events (`router_backpressure_events`): `backpressure_active`,
    `backpressure_warning`, `recovery`, `circuit_open`, `circuit_half_open`,
    `circuit_closed`;
  - a recovery record (`router_backpressure_recovery`) for active → inactive,
    active → warning and warning → inactive;

  and tells `Breakwater.Alerts`. Every table is trimmed per subject to its limit,
  oldest first.

  Event counts are kept as lifetime totals per event type (at most
  #{64} distinct types per subject; more are counted as `other`) and in sixteen
  one-minute buckets per subject, for the 1, 5 and 15 minute windows of
  `metrics/1`.
  """
  require Breakwater.Log, as: Log

  alias Breakwater.Tables

  @events :router_backpressure_events
  @history :router_backpressure_status_history
  @recovery :router_backpressure_recovery
  @counters :breakwater_counters
  @max_event_types 64
  @buckets 16

  @typedoc "A transition as the native layer reports it."
  @type transition :: %{
          machine: :breaker | :backpressure | :manual,
          from_breaker: atom,
          to_breaker: atom,
          from_backpressure: atom,
          to_backpressure: atom,
          from_status: :inactive | :warning | :active,
          to_status: :inactive | :warning | :active,
          at_ms: non_neg_integer
        }

  @router_status %{
    inactive: :backpressure_inactive,
    warning: :backpressure_warning,
    active: :backpressure_active
  }

  @doc """
  Unwraps a native result, writing the transitions it reports. `meta` is attached to
  the entries (e.g. the failure reason that opened a breaker).
  """
  @spec observe(binary, term, map) :: term
  def observe(subject, result, meta \\ %{})

  def observe(subject, {:transitions, result, transitions}, meta) do
    record(subject, transitions, meta)
    result
  end

  def observe(_subject, result, _meta), do: result

  @doc "Writes `transitions` of `subject` to history, events and recovery."
  @spec record(binary, [transition], map) :: :ok
  def record(subject, transitions, meta \\ %{}) do
    now = System.system_time(:millisecond)
    Enum.each(transitions, &record_one(subject, &1, now, meta))
  end

  defp record_one(subject, t, now, meta) do
    from = Map.fetch!(@router_status, t.from_status)
    to = Map.fetch!(@router_status, t.to_status)

    entry =
      Map.merge(meta, %{
        machine: t.machine,
        breaker: {t.from_breaker, t.to_breaker},
        backpressure: {t.from_backpressure, t.to_backpressure}
      })

    append(@history, subject, {to, from, now, entry}, limit(:history_limit))

    if t.from_breaker != t.to_breaker do
      event(subject, breaker_event(t.to_breaker), now, entry)
    end

    if from != to do
      case to do
        :backpressure_active -> event(subject, :backpressure_active, now, entry)
        :backpressure_warning -> event(subject, :backpressure_warning, now, entry)
        :backpressure_inactive -> :ok
      end

      if recovery?(from, to), do: recovery(subject, from, to, now)
    end

    log_transition(subject, t)
    Breakwater.Alerts.transition(subject, t, now)
    Breakwater.Telemetry.transition(subject, t)
  end

  # One log line per transition: warning when the ledger is cut off (breaker open)
  # or events are refused (dropping), info otherwise. Lazy: nothing is formatted when
  # the level is off.
  defp log_transition(subject, t) do
    {level, what} =
      cond do
        t.from_breaker != t.to_breaker ->
          {if(t.to_breaker == :open, do: :warning, else: :info),
           "breaker #{t.from_breaker} -> #{t.to_breaker}"}

        t.from_backpressure != t.to_backpressure ->
          {if(t.to_backpressure == :dropping, do: :warning, else: :info),
           "backpressure #{t.from_backpressure} -> #{t.to_backpressure}"}

        true ->
          {:info, "disabled: #{t.disabled}, forced open: #{t.forced_open}"}
      end

    Log.log(level, "breakwater #{inspect(subject)}: #{what}", %{breakwater_subject: subject})
  end

  defp breaker_event(:open), do: :circuit_open
  defp breaker_event(:half_open), do: :circuit_half_open
  defp breaker_event(:closed), do: :circuit_closed

  @doc "True for the status changes that count as a recovery."
  @spec recovery?(atom, atom) :: boolean
  def recovery?(:backpressure_active, :backpressure_inactive), do: true
  def recovery?(:backpressure_active, :backpressure_warning), do: true
  def recovery?(:backpressure_warning, :backpressure_inactive), do: true
  def recovery?(_, _), do: false

  @doc "Records a recovery of `subject` from `from` to `to` (and its event)."
  @spec recovery(binary, atom, atom, integer) :: :ok
  def recovery(subject, from, to, now \\ System.system_time(:millisecond)) do
    :ets.update_counter(@recovery, subject, {2, 1}, {subject, 0, 0, nil, nil})
    :ets.update_element(@recovery, subject, [{3, now}, {4, from}, {5, to}])
    event(subject, :recovery, now, %{from: from, to: to})
  end

  @doc """
  Notes that `n` events of `subject` were dropped: an `events_dropped` event, at most
  one per second per subject (the exact counts are in the subject's counters).
  """
  @spec dropped(binary, pos_integer) :: :ok
  def dropped(subject, n) do
    Breakwater.Telemetry.dropped(subject, n)
    now = System.system_time(:millisecond)
    key = {:events_dropped_at, subject}

    due =
      :ets.insert_new(@counters, {key, now}) or
        :ets.select_replace(@counters, [
          {{key, :"$1"}, [{:"=<", :"$1", now - 1_000}], [{{{:const, key}, now}}]}
        ]) == 1

    if due, do: event(subject, :events_dropped, now, %{dropped: n}), else: :ok
  end

  @doc "Appends a status-history entry by hand (`track_backpressure_status_history/2`)."
  @spec status(binary, atom, atom, map) :: :ok
  def status(subject, status, previous, meta \\ %{}) do
    now = System.system_time(:millisecond)

    append(
      @history,
      subject,
      {status, previous, now, Map.put(meta, :machine, :manual)},
      limit(:history_limit)
    )
  end

  @doc """
  Records an event of `type` (an atom or a binary) for `subject`: an entry in the
  events table (trimmed), the lifetime count of its type and the minute bucket.
  """
  @spec event(binary, atom | binary, integer, map) :: :ok
  def event(subject, type, now \\ System.system_time(:millisecond), meta \\ %{}) do
    type = count_type(subject, type)
    append(@events, subject, {type, now, meta}, limit(:events_limit))
    minute = div(now, 60_000)
    slot = {:bucket, subject, rem(minute, @buckets)}
    # Reset a slot left from an older minute, atomically, then count into it.
    :ets.select_replace(@counters, [
      {{slot, :"$1", :"$2"}, [{:"/=", :"$1", minute}], [{{{:const, slot}, minute, 0}}]}
    ])

    :ets.update_counter(@counters, slot, {3, 1}, {slot, minute, 0})
    :ets.insert(@counters, {{:last_event, subject}, now})
    :ok
  end

  defp count_type(subject, type) do
    key = {:event_total, subject, type}

    type =
      cond do
        :ets.member(@counters, key) ->
          type

        :ets.update_counter(
          @counters,
          {:event_types, subject},
          {2, 1},
          {{:event_types, subject}, 0}
        ) <=
            @max_event_types ->
          type

        true ->
          :ets.update_counter(@counters, {:event_types, subject}, {2, -1})
          :other
      end

    :ets.update_counter(
      @counters,
      {:event_total, subject, type},
      {2, 1},
      {{:event_total, subject, type}, 0}
    )

    type
  end

  defp append(table, subject, value, limit) do
    key = {subject, :erlang.unique_integer([:monotonic, :positive])}
    :ets.insert(table, List.to_tuple([key | Tuple.to_list(value)]))
    count_key = {table, subject}

    if :ets.update_counter(@counters, count_key, {2, 1}, {count_key, 0}) > limit do
      trim_oldest(table, subject, count_key)
    end

    :ok
  end

  defp trim_oldest(table, subject, count_key) do
    case :ets.next(table, {subject, 0}) do
      {^subject, _} = oldest ->
        # take/2 tells whether this process removed it, so two trimmers never count
        # one removal twice.
        if :ets.take(table, oldest) != [], do: :ets.update_counter(@counters, count_key, {2, -1})

      _ ->
        :ok
    end
  end

  defp limit(key) do
    case :persistent_term.get({Breakwater, :limits}, nil) do
      %{^key => n} -> n
      _ -> 1_000
    end
  end

  # ---- reading -------------------------------------------------------------------

  @doc "Events of `subject`, oldest first, as maps with `event_type` and `timestamp`."
  @spec events(binary) :: [map]
  def events(subject) do
    @events
    |> :ets.select([{{{subject, :_}, :"$1", :"$2", :"$3"}, [], [{{:"$1", :"$2", :"$3"}}]}])
    |> Enum.map(fn {type, ts, meta} -> Map.merge(meta, %{event_type: type, timestamp: ts}) end)
  end

  @doc "Status history of `subject`, oldest first."
  @spec history(binary) :: [map]
  def history(subject) do
    @history
    |> :ets.select([
      {{{subject, :_}, :"$1", :"$2", :"$3", :"$4"}, [], [{{:"$1", :"$2", :"$3", :"$4"}}]}
    ])
    |> Enum.map(fn {status, previous, ts, meta} ->
      Map.merge(meta, %{status: status, previous_status: previous, timestamp: ts})
    end)
  end

  @doc "The status before the current one, from history (`backpressure_inactive` if none)."
  @spec previous_status(binary) :: atom
  def previous_status(subject) do
    subject
    |> history()
    |> Enum.reverse()
    |> Enum.find_value(:backpressure_inactive, fn %{status: s, previous_status: p} ->
      if s != p, do: p
    end)
  end

  @doc "The recovery record of `subject`."
  @spec recovery_record(binary) :: map
  def recovery_record(subject) do
    case :ets.lookup(@recovery, subject) do
      [{_, count, last, from, to}] ->
        %{
          recovery_count: count,
          last_recovery_at: last,
          last_recovery_from: from,
          last_recovery_to: to
        }

      [] ->
        %{
          recovery_count: 0,
          last_recovery_at: nil,
          last_recovery_from: nil,
          last_recovery_to: nil
        }
    end
  end

  @doc """
  Event metrics of `subject`: lifetime counts by type, total, last event time, and
  counts over the last 1, 5 and 15 minutes.
  """
  @spec metrics(binary) :: map
  def metrics(subject) do
    by_type =
      @counters
      |> :ets.match({{:event_total, subject, :"$1"}, :"$2"})
      |> Map.new(fn [type, n] -> {type, n} end)

    now_minute = div(System.system_time(:millisecond), 60_000)

    buckets =
      for slot <- 0..(@buckets - 1),
          [{_, minute, n}] <- [:ets.lookup(@counters, {:bucket, subject, slot})],
          do: {now_minute - minute, n}

    window = fn minutes ->
      buckets
      |> Enum.filter(fn {age, _} -> age >= 0 and age < minutes end)
      |> Enum.map(&elem(&1, 1))
      |> Enum.sum()
    end

    last =
      case :ets.lookup(@counters, {:last_event, subject}) do
        [{_, ts}] -> ts
        [] -> nil
      end

    %{
      subject: subject,
      events_by_type: by_type,
      total_events: by_type |> Map.values() |> Enum.sum(),
      last_event_at: last,
      last_1m: window.(1),
      last_5m: window.(5),
      last_15m: window.(15)
    }
  end

  @doc "Lifetime event totals of every subject: `[{subject, type, count}]`."
  @spec event_totals() :: [{binary, atom | binary, non_neg_integer}]
  def event_totals do
    @counters
    |> :ets.match({{:event_total, :"$1", :"$2"}, :"$3"})
    |> Enum.map(fn [s, t, n] -> {s, t, n} end)
  end

  @doc "Recovery counts of every subject: `[{subject, count}]`."
  @spec recovery_totals() :: [{binary, non_neg_integer}]
  def recovery_totals do
    :ets.foldl(fn {s, n, _, _, _}, acc -> [{s, n} | acc] end, [], @recovery)
  end

  @doc false
  def tables, do: Enum.map([:events, :history, :recovery, :policies, :counters], &Tables.name/1)
end
