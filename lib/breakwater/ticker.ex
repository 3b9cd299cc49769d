defmodule Breakwater.Ticker do
  @moduledoc """
  The timer. Every `tick_ms` (application key, default 100) it visits every subject in
  the native registry so that time-based transitions happen without traffic (open →
  half-open once the open time has passed, recovery → normal after the stability
  period, stale half-open probes, a stale pool exhaustion), keeps the overload signals
  current (counts the calls in flight, moves the latency window on and recomputes its
  p95, re-evaluates both flags), and writes the transitions it made to history.
  Besides, at a slower pace:

  - every `log_interval_ms`: the summary of suppressed log lines
    (`Breakwater.LogLimiter.flush/0`);
  - when `subject_idle_ms` is set, every quarter of it (at least every second, at most
    every minute): the idle sweep, which removes dynamic subjects idle that long with
    nothing spooled (`Breakwater.Lifecycle.expire_idle/1`);
  - every second: frees the memory of subjects removed more than the grace period ago
    (`Breakwater.Native.reclaim/0`).

  Its state is when it last did each; a restarted ticker starts them over, which costs
  at most one early summary or sweep.

  When `:telemetry` is loaded, it also emits
  `[:router_intake_backpressure, :backpressure_status]` for each subject whose signals
  it refreshed and that is not inactive or has a signal value above zero (at most once
  per visit per subject, and not for a subject whose status this visit changed: that
  change emitted it already).

  The state rules cost a few nanoseconds per resting subject, and so does the signals'
  upkeep for a subject with nothing to watch (no call admitted or latency recorded
  since the last visit, nothing in flight, nothing in the latency window); the upkeep
  of the others is bounded to a quarter of a millisecond per periodic visit (round
  robin beyond that), so a visit stays well under a millisecond for `max_subjects`
  subjects.
  """
  use GenServer

  @doc false
  def start_link(opts), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @doc """
  Runs one complete visit now (every subject's signals, without the periodic visit's
  time budget) and waits for it; tests use this instead of sleeping.
  """
  @spec tick() :: :ok
  def tick, do: GenServer.call(__MODULE__, :tick)

  @doc "Runs the idle sweep now and waits for it; the subjects removed."
  @spec sweep() :: [binary]
  def sweep, do: GenServer.call(__MODULE__, :sweep, 30_000)

  @impl true
  def init(opts) do
    now = now()

    state = %{
      interval: Keyword.get(opts, :tick_ms, 100),
      log_flushed: now,
      swept: now,
      reclaimed: now
    }

    {:ok, schedule(state)}
  end

  @impl true
  def handle_call(:tick, _from, state) do
    visit(false)
    {:reply, :ok, state}
  end

  def handle_call(:sweep, _from, state) do
    {:reply, sweep_now(), %{state | swept: now()}}
  end

  @impl true
  def handle_info(:tick, state) do
    visit(true)
    {:noreply, state |> slow_work() |> schedule()}
  end

  def handle_info(_other, state), do: {:noreply, state}

  @doc false
  # One visit, in the calling process (tests hold the ticker and visit by hand);
  # `budgeted`: the periodic visit's time budget for the signals' upkeep.
  @spec visit(boolean) :: :ok
  def visit(budgeted \\ false) do
    if Breakwater.Telemetry.available?() do
      {transitions, reports} = Breakwater.Native.tick_reporting(budgeted)
      record(transitions)
      changed = for {s, %{from_status: f, to_status: t}} <- transitions, f != t, do: s

      for {subject, status, depth, p95, inflight} <- reports, subject not in changed do
        Breakwater.Telemetry.backpressure_status(subject, status, {depth, p95, inflight})
      end
    else
      record(Breakwater.Native.tick(budgeted))
    end

    :ok
  end

  defp record(transitions) do
    for {subject, transition} <- transitions do
      Breakwater.History.record(subject, [transition])
    end
  end

  defp slow_work(state) do
    now = now()
    config = :persistent_term.get({Breakwater, :config}, %{})

    state =
      if now - state.log_flushed >= Map.get(config, :log_interval_ms, 1_000) do
        Breakwater.LogLimiter.flush()
        %{state | log_flushed: now}
      else
        state
      end

    state =
      case Map.get(config, :subject_idle_ms) do
        idle when is_integer(idle) ->
          if now - state.swept >= sweep_every(idle) do
            sweep_now()
            %{state | swept: now}
          else
            state
          end

        nil ->
          state
      end

    if now - state.reclaimed >= 1_000 do
      Breakwater.Native.reclaim()
      %{state | reclaimed: now}
    else
      state
    end
  end

  defp sweep_every(idle_ms), do: idle_ms |> div(4) |> max(1_000) |> min(60_000)

  defp sweep_now do
    case :persistent_term.get({Breakwater, :config}, %{}) do
      %{subject_idle_ms: idle} when is_integer(idle) -> Breakwater.Lifecycle.expire_idle(idle)
      _ -> []
    end
  end

  defp schedule(state) do
    Process.send_after(self(), :tick, state.interval)
    state
  end

  defp now, do: System.monotonic_time(:millisecond)
end
