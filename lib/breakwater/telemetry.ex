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

  A failing `:telemetry` call never reaches the caller: emitting is best effort.

      iex> Breakwater.Telemetry.events()
      [[:breakwater, :transition], [:breakwater, :events_dropped], [:breakwater, :rejected]]
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
    do: [[:breakwater, :transition], [:breakwater, :events_dropped], [:breakwater, :rejected]]

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

  defp execute(event, measurements, metadata) do
    # apply/3: no compile-time reference to the optional module.
    _ = apply(:telemetry, :execute, [event, measurements, metadata])
    :ok
  catch
    _kind, _reason -> :ok
  end
end
