defmodule Breakwater.Telemetry do
  @moduledoc """
  `:telemetry` events, emitted only when the `:telemetry` module is present at
  run time. Breakwater has no dependency on it: whether it is loaded is checked once
  (`Code.ensure_loaded?(:telemetry)`) and cached in `:persistent_term`; `refresh/0`
  checks again (e.g. after loading `:telemetry` into a running node).

  | event | measurements | metadata |
  |---|---|---|
  | `[:breakwater, :transition]` | `%{count: 1}` | the transition map (`machine`, `cause`, `from_breaker`, `to_breaker`, `from_backpressure`, `to_backpressure`, `from_status`, `to_status`, `at_ms`, ...) and `subject` |
  | `[:breakwater, :events_dropped]` | `%{count: n}` | `subject` |
  | `[:breakwater, :rejected]` | `%{count: 1}` | `subject`, `reason` |
  | `[:router_intake_backpressure, :backpressure_status]` | `%{active: 0 \| 1, pending_messages: depth, latency_p95_ms: p95, inflight_messages: n}` | `subject` |
  | `[:router_intake_backpressure, :backpressure_triggered]` | `%{count: 1}` | `subject`, `trigger` (a binary: what made it active, e.g. `"latency"`) |

  The two `router_intake_backpressure` events are the ones an Erlang router's own
  intake module emitted, with its names and measurements: `backpressure_status` on
  every change of the router status (by whoever observed it) and from the timer
  (`Breakwater.Ticker`) at most once per tick for every subject it refreshed that is
  not inactive or has a signal value above zero; `backpressure_triggered` on every
  change to active. None is emitted on the hot paths.

  A failing `:telemetry` call never reaches the caller: emitting is best effort.

      iex> Breakwater.Telemetry.events()
      [[:breakwater, :transition], [:breakwater, :events_dropped], [:breakwater, :rejected],
       [:router_intake_backpressure, :backpressure_status],
       [:router_intake_backpressure, :backpressure_triggered]]
      iex> Breakwater.Telemetry.dropped("ledger", 3)
      :ok

  With the `:telemetry` application in the release, attach as usual:

      :telemetry.attach("log-transitions", [:breakwater, :transition],
        fn _event, _measurements, meta, _config -> IO.inspect(meta) end, nil)
  """

  @key {__MODULE__, :available}

  @doc "The event names Breakwater emits."
  @spec events() :: [[atom, ...]]
  def events,
    do: [
      [:breakwater, :transition],
      [:breakwater, :events_dropped],
      [:breakwater, :rejected],
      [:router_intake_backpressure, :backpressure_status],
      [:router_intake_backpressure, :backpressure_triggered]
    ]

  @doc """
  Whether `:telemetry` is loaded (checked once, then cached; see `refresh/0`).
  """
  @spec available?() :: boolean
  def available? do
    case :persistent_term.get(@key, nil) do
      nil -> refresh()
      available -> available
    end
  end

  @doc """
  Checks again whether the `:telemetry` module can be loaded, caches and returns the
  answer. Call it after adding `:telemetry` to a running node.
  """
  @spec refresh() :: boolean
  def refresh do
    available = Code.ensure_loaded?(:telemetry) and function_exported?(:telemetry, :execute, 3)
    put_available(available)
    available
  end

  @doc false
  # Overrides the cached answer (tests).
  @spec put_available(boolean) :: :ok
  def put_available(available) when is_boolean(available) do
    # persistent_term.put/2 of an equal value is a no-op (no global GC).
    :persistent_term.put(@key, available)
  end

  @doc """
  Emits `[:breakwater, :transition]` for a transition of `subject` (a map as
  `Breakwater.History` receives it from the native layer).
  """
  @spec transition(binary, map) :: :ok
  def transition(subject, transition) when is_map(transition) do
    if available?() do
      execute([:breakwater, :transition], %{count: 1}, Map.put(transition, :subject, subject))
    else
      :ok
    end
  end

  @doc "Emits `[:breakwater, :events_dropped]`: `n` events of `subject` were dropped."
  @spec dropped(binary, non_neg_integer) :: :ok
  def dropped(subject, n) when is_integer(n) do
    if available?() do
      execute([:breakwater, :events_dropped], %{count: n}, %{subject: subject})
    else
      :ok
    end
  end

  @doc "Emits `[:breakwater, :rejected]`: a call on `subject` was refused for `reason`."
  @spec rejected(binary, atom) :: :ok
  def rejected(subject, reason) do
    if available?() do
      execute([:breakwater, :rejected], %{count: 1}, %{subject: subject, reason: reason})
    else
      :ok
    end
  end

  @doc """
  Emits `[:router_intake_backpressure, :backpressure_status]` for `subject`, whose
  router status is `status` (`:inactive | :warning | :active`, or the
  `backpressure_*` atoms) with the signal values `{depth, latency_p95_ms, inflight}`.
  """
  @spec backpressure_status(binary, atom, {non_neg_integer, non_neg_integer, non_neg_integer}) ::
          :ok
  def backpressure_status(subject, status, {depth, p95, inflight}) do
    if available?() do
      active = if status in [:active, :backpressure_active], do: 1, else: 0

      execute(
        [:router_intake_backpressure, :backpressure_status],
        %{
          active: active,
          pending_messages: depth,
          latency_p95_ms: p95,
          inflight_messages: inflight
        },
        %{subject: subject}
      )
    else
      :ok
    end
  end

  @doc """
  Emits `[:router_intake_backpressure, :backpressure_triggered]`: `subject` became
  active because of `trigger` (a binary).
  """
  @spec backpressure_triggered(binary, binary) :: :ok
  def backpressure_triggered(subject, trigger) do
    if available?() do
      execute(
        [:router_intake_backpressure, :backpressure_triggered],
        %{count: 1},
        %{subject: subject, trigger: trigger}
      )
    else
      :ok
    end
  end

  @doc """
  On a change of `subject`'s router status by transition `t` (a map as the native layer
  reports it): emits `backpressure_status` with the signal values now, and
  `backpressure_triggered` when the change is to active. Reads the values only when
  `:telemetry` is loaded.
  """
  @spec status_changed(binary, map) :: :ok
  def status_changed(subject, t) do
    if available?() do
      values =
        case Breakwater.Native.signals(subject) do
          {_, _, _} = v -> v
          _ -> {0, 0, 0}
        end

      backpressure_status(subject, t.to_status, values)
      if t.to_status == :active, do: backpressure_triggered(subject, trigger(t)), else: :ok
    else
      :ok
    end
  catch
    _kind, _reason -> :ok
  end

  @doc """
  What made transition `t` a change to active, as a binary: its `cause` when the
  native layer gives one, else what changed: `"circuit_open"`, `"dropping"`, or the
  signal(s) that became overloaded (`"latency"`, `"depth,inflight"`, ...).

      iex> Breakwater.Telemetry.trigger(%{from_breaker: :closed, to_breaker: :closed,
      ...>   from_backpressure: :pressure, to_backpressure: :pressure,
      ...>   from_overloaded: [:depth], to_overloaded: [:depth, :latency]})
      "latency"
  """
  @spec trigger(map) :: binary
  def trigger(%{cause: cause}) when is_atom(cause) and cause not in [nil, true, false],
    do: Atom.to_string(cause)

  def trigger(t) do
    new_signals = Map.get(t, :to_overloaded, []) -- Map.get(t, :from_overloaded, [])

    cond do
      t[:to_breaker] == :open and t[:from_breaker] != :open -> "circuit_open"
      t[:to_backpressure] == :dropping and t[:from_backpressure] != :dropping -> "dropping"
      new_signals != [] -> Enum.map_join(new_signals, ",", &Atom.to_string/1)
      true -> "overload"
    end
  end

  defp execute(event, measurements, metadata) do
    # apply/3: no compile-time reference to the optional module.
    _ = apply(:telemetry, :execute, [event, measurements, metadata])
    :ok
  catch
    _kind, _reason -> :ok
  end
end
