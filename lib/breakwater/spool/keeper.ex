defmodule Breakwater.Spool.Keeper do
  @moduledoc """
  The spool's upkeep, in a process of its own so that no router ever waits on a disk:
  every `interval_ms` (the `{:fsync, interval_ms}` interval, else one second) it calls
  a dirty I/O NIF that deletes the overflow files whose events are all released,
  retries the pool files a full disk refused, and, with `durability: {:fsync, _}`,
  writes every spool file to disk. It logs what the spool reports, once per incident:
  an outage of file operations when it starts (with the OS error) and when it clears,
  events counted as lost at recovery or when a file is read back (one line per segment
  file), another owner's files left alone.

      iex> Process.whereis(Breakwater.Spool.Keeper) |> is_pid()
      true
      iex> Breakwater.Spool.Keeper.run_now()
      :ok
  """
  use GenServer
  require Breakwater.Log, as: Log

  alias Breakwater.Native

  @doc false
  def start_link(opts), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @doc "Runs the upkeep now (rather than at the next interval) and logs its reports."
  @spec run_now() :: :ok
  def run_now, do: GenServer.call(__MODULE__, :run, 60_000)

  @doc """
  Logs spool reports (as `Breakwater.Native.spool_maintain/0` and `init/1` return
  them): errors (outages) at `:error`, losses and skipped files at `:warning`, the
  rest at `:info`.
  """
  @spec log_reports([map], non_neg_integer) :: :ok
  def log_reports(reports, suppressed) do
    for %{level: level, message: message} = r <- reports do
      Log.log(level, message, %{breakwater_spool_report: r.kind})
    end

    if suppressed > 0 do
      Log.warning("breakwater spool: #{suppressed} more reports suppressed since the last ones")
    end

    :ok
  end

  @impl true
  def init(opts) do
    state = %{interval: Keyword.fetch!(opts, :interval_ms)}
    {:ok, schedule(state)}
  end

  @impl true
  def handle_call(:run, _from, state) do
    run()
    {:reply, :ok, state}
  end

  @impl true
  def handle_info(:tick, state) do
    run()
    {:noreply, schedule(state)}
  end

  def handle_info(_other, state), do: {:noreply, state}

  defp run do
    {reports, suppressed} = Native.spool_maintain()
    log_reports(reports, suppressed)
  end

  defp schedule(state) do
    Process.send_after(self(), :tick, state.interval)
    state
  end
end
