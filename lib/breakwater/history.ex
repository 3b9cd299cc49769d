defmodule Breakwater.History do
  @moduledoc """
  Writes history, events and recovery records: once per transition, by the process
  that observed it.

  The native layer reports a transition to exactly one caller, the winner of the
  compare-and-swap that made it, by returning `{:transitions, result, [transition]}`
  instead of `result`. `observe/2` unwraps that: in the common case (no transition) it
  is one pattern match; otherwise it writes

  - one status-history entry per transition (`router_backpressure_status_history`),
    with the router status, breaker and backpressure state and overloaded signals
    before and after, and the `cause` of the transition (see `t:cause/0`: a close by
    `:probe_successes` is a recovery, a close by `:reset` is an operator's);
  - events (`router_backpressure_events`): `backpressure_active`,
    `backpressure_warning`, `recovery`, `circuit_open`, `circuit_half_open`,
    `circuit_closed`;
  - a recovery record (`router_backpressure_recovery`) for active → inactive,
    active → warning and warning → inactive;

  and tells `Breakwater.Alerts` and, on a change of router status,
  `Breakwater.Telemetry` (`backpressure_status`, `backpressure_triggered`). Every table
  is trimmed per subject to its limit, oldest first.

  Event counts are kept as lifetime totals per event type (at most
  #{64} distinct types per subject; more are counted as `other`) and in sixteen
  one-minute buckets per subject, for the 1, 5 and 15 minute windows of
  `metrics/1`, and as node-wide totals per type (at most 256 types) for the totals of
  `/metrics`. Every key of the counters table starts with the subject (node totals
  with `:node`), so `forget/1` deletes a subject's entries by key range.

  Each transition is also logged (`Breakwater.LogLimiter` keeps it to one line per
  subject per `log_interval_ms`).
  """
  require Breakwater.Log, as: Log

  alias Breakwater.Tables

  @events :router_backpressure_events
  @history :router_backpressure_status_history
  @recovery :router_backpressure_recovery
  @counters :breakwater_counters
  @max_event_types 64
  @max_node_event_types 256
  @buckets 16

  @typedoc """
  Why a transition happened. Breaker: `:failures` (`failure_threshold` consecutive
  failures), `:failure_rate` (the failure rate over `window_ms`), `:remote_open` (the
  same subject's breaker opened on a peer node, `share: :breaker`), `:probe_failure`,
  `:stale_probe` (every probe slot taken and the oldest probe unanswered for
  `call_timeout_ms`), `:open_timeout` (the open time passed), `:probe_successes`
  (`success_threshold` probe successes). Backpressure: `:depth` (a threshold crossed),
  `:pool` (no segment for the subject), `:stability` (calm for `stability_ms`).
  Overload signals: `:depth`, `:latency` (the p95 latency crossed
  `latency_overload_ms` or its recovery value), `:inflight` (the calls in flight
  crossed `inflight_overload` or its recovery value). By hand: `:reset`, `:force_open`, `:disable`, `:enable`, `:configure` (a new
  policy's thresholds). History entries appended with
  `router_intake_backpressure:track_backpressure_status_history/2` say `:external`.
  """
  @type cause ::
          :failures
          | :failure_rate
          | :remote_open
          | :probe_failure
          | :stale_probe
          | :open_timeout
          | :probe_successes
          | :depth
          | :pool
          | :stability
          | :latency
          | :inflight
          | :reset
          | :force_open
          | :disable
          | :enable
          | :configure

  @typedoc "A transition as the native layer reports it."
  @type transition :: %{
          machine: :breaker | :backpressure | :signal | :manual,
          cause: cause,
          from_breaker: atom,
          to_breaker: atom,
          from_backpressure: atom,
          to_backpressure: atom,
          from_status: :inactive | :warning | :active,
          to_status: :inactive | :warning | :active,
          from_overloaded: [:depth | :latency | :inflight],
          to_overloaded: [:depth | :latency | :inflight],
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
        cause: t.cause,
        breaker: {t.from_breaker, t.to_breaker},
        backpressure: {t.from_backpressure, t.to_backpressure},
        overloaded: {Map.get(t, :from_overloaded, []), Map.get(t, :to_overloaded, [])}
      })

    append(@history, subject, {to, from, now, entry}, limit(:history_limit))

    if t.from_breaker != t.to_breaker do
      event(subject, breaker_event(t.to_breaker), now, entry)
      breaker_moved(subject, t, meta, now)
    end

    if from != to do
      case to do
        :backpressure_active -> event(subject, :backpressure_active, now, entry)
        :backpressure_warning -> event(subject, :backpressure_warning, now, entry)
        :backpressure_inactive -> :ok
      end

      if recovery?(from, to), do: recovery(subject, from, to, now)
    end

    log_transition(subject, t, meta)
    Breakwater.Alerts.transition(subject, t, now)
    Breakwater.Telemetry.transition(subject, t)
    if from != to, do: Breakwater.Telemetry.status_changed(subject, t)
    :ok
  end

  # One log line per transition, at most one per subject per log_interval_ms
  # (Breakwater.LogLimiter counts the others for its summary): warning when the ledger
  # is cut off (breaker open) or events are refused (dropping), info otherwise. The
  # alarm a transition raises is not logged again (see Breakwater.Alerts). Lazy:
  # nothing is formatted when the level is off.
  defp log_transition(subject, t, meta) do
    if Breakwater.LogLimiter.allow?(subject), do: write_transition_line(subject, t, meta)
  end

  # Who opened the breaker, for the cluster: a remote open (cause `:remote_open`: a
  # peer's breaker opened, see Breakwater.Cluster) is remembered until the breaker moves
  # again, for `opened_by/1`; a trip from closed by this node's own rules (`:failures`,
  # `:failure_rate`) is told to the peers. Nothing else propagates: not a re-trip from
  # half-open, not `force_open`, never a remote open (no echo).
  defp breaker_moved(subject, t, meta, now) do
    case {t.cause, meta} do
      {:remote_open, %{opened_by: origin}} ->
        :ets.insert(@counters, {{subject, :opened_by}, origin})

      {cause, _} ->
        :ets.delete(@counters, {subject, :opened_by})

        if cause in [:failures, :failure_rate] and t.from_breaker == :closed,
          do: Breakwater.Cluster.breaker_opened(subject, now)
    end
  end

  @doc """
  The peer node whose breaker opening opened `subject`'s breaker here, while it stays
  open from that; `nil` otherwise.
  """
  @spec opened_by(binary) :: node | nil
  def opened_by(subject) do
    case :ets.lookup(@counters, {subject, :opened_by}) do
      [{_, origin}] -> origin
      [] -> nil
    end
  rescue
    ArgumentError -> nil
  end

  defp write_transition_line(subject, t, meta) do
    {level, what} =
      cond do
        t.from_breaker != t.to_breaker ->
          {if(t.to_breaker == :open, do: :warning, else: :info),
           "breaker #{t.from_breaker} -> #{t.to_breaker}"}

        t.from_backpressure != t.to_backpressure ->
          {if(t.to_backpressure == :dropping, do: :warning, else: :info),
           "backpressure #{t.from_backpressure} -> #{t.to_backpressure}"}

        t.machine == :signal ->
          {if(t.to_status == :active, do: :warning, else: :info),
           "overloaded #{signals_text(t.from_overloaded)} -> #{signals_text(t.to_overloaded)}"}

        true ->
          {:info, "disabled: #{t.disabled}, forced open: #{t.forced_open}"}
      end

    Log.log(level, "breakwater #{inspect(subject)}: #{what} (#{cause_text(t, meta)})", %{
      breakwater_subject: subject
    })
  end

  defp cause_text(%{cause: :remote_open}, %{opened_by: origin}),
    do: "remote_open: opened on peer #{origin}"

  defp cause_text(t, _meta), do: Atom.to_string(t.cause)

  defp signals_text([]), do: "none"
  defp signals_text(signals), do: Enum.map_join(signals, ",", &Atom.to_string/1)

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
    key = {subject, :events_dropped_at}

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
      {status, previous, now, Map.merge(meta, %{machine: :manual, cause: :external})},
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
    slot = {subject, :bucket, rem(minute, @buckets)}
    # Reset a slot left from an older minute, atomically, then count into it.
    :ets.select_replace(@counters, [
      {{slot, :"$1", :"$2"}, [{:"/=", :"$1", minute}], [{{{:const, slot}, minute, 0}}]}
    ])

    :ets.update_counter(@counters, slot, {3, 1}, {slot, minute, 0})
    :ets.insert(@counters, {{subject, :last_event}, now})
    :ok
  end

  defp count_type(subject, type) do
    type = bounded_type(subject, type, @max_event_types)
    bump({subject, :event_total, type})
    bump({:node, :event_total, bounded_type(:node, type, @max_node_event_types)})
    type
  end

  # `type`, or `:other` once `owner` (a subject, or `:node`) has `max` types.
  defp bounded_type(owner, type, max) do
    cond do
      :ets.member(@counters, {owner, :event_total, type}) ->
        type

      bump({owner, :event_types}) <= max ->
        type

      true ->
        :ets.update_counter(@counters, {owner, :event_types}, {2, -1})
        :other
    end
  end

  defp bump(key), do: :ets.update_counter(@counters, key, {2, 1}, {key, 0})

  defp append(table, subject, value, limit) do
    key = {subject, :erlang.unique_integer([:monotonic, :positive])}
    :ets.insert(table, List.to_tuple([key | Tuple.to_list(value)]))
    count_key = {subject, :held, table}

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
  Event metrics of `subject`: lifetime counts by type (`events_by_type`) and of the
  router's three (`active_events`, `warning_events`, `recovery_events`), the total,
  the last event time (`last_event_at`, and `last_event_time` as the router module
  names it), and counts over the last 1, 5 and 15 minutes.
  """
  @spec metrics(binary) :: map
  def metrics(subject) do
    by_type = Map.new(event_counts(subject))

    now_minute = div(System.system_time(:millisecond), 60_000)

    buckets =
      for slot <- 0..(@buckets - 1),
          [{_, minute, n}] <- [:ets.lookup(@counters, {subject, :bucket, slot})],
          do: {now_minute - minute, n}

    window = fn minutes ->
      buckets
      |> Enum.filter(fn {age, _} -> age >= 0 and age < minutes end)
      |> Enum.map(&elem(&1, 1))
      |> Enum.sum()
    end

    last =
      case :ets.lookup(@counters, {subject, :last_event}) do
        [{_, ts}] -> ts
        [] -> nil
      end

    %{
      subject: subject,
      events_by_type: by_type,
      total_events: by_type |> Map.values() |> Enum.sum(),
      active_events: Map.get(by_type, :backpressure_active, 0),
      warning_events: Map.get(by_type, :backpressure_warning, 0),
      recovery_events: Map.get(by_type, :recovery, 0),
      last_event_at: last,
      last_event_time: last,
      last_1m: window.(1),
      last_5m: window.(5),
      last_15m: window.(15)
    }
  end

  @known_event_types [
    :backpressure_active,
    :backpressure_warning,
    :recovery,
    :circuit_open,
    :circuit_half_open,
    :circuit_closed,
    :events_dropped
  ]

  @doc "The event types Breakwater records itself."
  @spec known_event_types() :: [atom]
  def known_event_types, do: @known_event_types

  @doc """
  The known event type named by `name` (an atom or a binary such as
  `"backpressure_active"`), or `nil`. Makes no atom.
  """
  @spec known_event_type(term) :: atom | nil
  def known_event_type(name) when is_atom(name),
    do: if(name in @known_event_types, do: name)

  def known_event_type(name) when is_binary(name),
    do: Enum.find(@known_event_types, &(Atom.to_string(&1) == name))

  def known_event_type(_name), do: nil
  @doc "Lifetime event counts of `subject` by type: `[{type, count}]`."
  @spec event_counts(binary) :: [{atom | binary, non_neg_integer}]
  def event_counts(subject) do
    @counters
    |> :ets.select([{{{subject, :event_total, :"$1"}, :"$2"}, [], [{{:"$1", :"$2"}}]}])
  end

  @doc "Lifetime event counts of every subject together, by type: `[{type, count}]`."
  @spec node_event_counts() :: [{atom | binary, non_neg_integer}]
  def node_event_counts, do: event_counts(:node)

  @doc "Recovery count of `subject`."
  @spec recovery_count(binary) :: non_neg_integer
  def recovery_count(subject) do
    case :ets.lookup(@recovery, subject) do
      [{_, n, _, _, _}] -> n
      [] -> 0
    end
  end

  @doc "Recoveries of every subject together."
  @spec node_recovery_count() :: non_neg_integer
  def node_recovery_count do
    :ets.foldl(fn {_, n, _, _, _}, acc -> acc + n end, 0, @recovery)
  end

  @doc """
  Deletes every entry of `subject`: history, events, its recovery record and its
  counts (node-wide totals keep what it added). Called when the subject is removed.
  """
  @spec forget(binary) :: :ok
  def forget(subject) when is_binary(subject) do
    :ets.match_delete(@events, {{subject, :_}, :_, :_, :_})
    :ets.match_delete(@history, {{subject, :_}, :_, :_, :_, :_})
    # Key ranges of every key arity the counters table holds for a subject.
    for pattern <- [{subject, :_}, {subject, :_, :_}] do
      :ets.select_delete(@counters, [
        {{pattern, :_}, [], [true]},
        {{pattern, :_, :_}, [], [true]}
      ])
    end

    :ets.delete(@recovery, subject)
    :ok
  end

  @doc false
  def tables, do: Enum.map([:events, :history, :recovery, :counters], &Tables.name/1)
end
