defmodule Breakwater.Ticker do
  @moduledoc """
  The breaker timer: every `tick_ms` (application env, default 100) it visits every
  subject in the native registry so that time-based transitions happen without
  traffic (open → half-open once the open time has passed, recovery → normal after
  the stability period, stale half-open probes, a stale pool exhaustion), and writes
  the transitions it made to history.

  A visit costs a few nanoseconds per resting subject and stays well under a
  millisecond for `max_subjects` subjects.
  """
  use GenServer

  @doc false
  def start_link(opts), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @doc "Runs one visit now and waits for it (tests use this instead of sleeping)."
  @spec tick() :: :ok
  def tick, do: GenServer.call(__MODULE__, :tick)

  @impl true
  def init(opts) do
    interval = Keyword.get(opts, :tick_ms, 100)
    {:ok, schedule(%{interval: interval})}
  end

  @impl true
  def handle_call(:tick, _from, state) do
    visit()
    {:reply, :ok, state}
  end

  @impl true
  def handle_info(:tick, state) do
    visit()
    {:noreply, schedule(state)}
  end

  defp visit do
    for {subject, transition} <- Breakwater.Native.tick() do
      Breakwater.History.record(subject, [transition])
    end

    :ok
  end

  defp schedule(state) do
    Process.send_after(self(), :tick, state.interval)
    state
  end
end
