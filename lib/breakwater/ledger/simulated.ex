defmodule Breakwater.Ledger.Simulated do
  @moduledoc """
  A `Breakwater.Ledger` for tests and demos, with a switchable mode per subject:

  | mode | `write_batch/2` | `health_check/1` |
  |---|---|---|
  | `:up` | stores the events, `:ok` | `:ok` |
  | `:down` | `{:error, :unavailable}` | `{:error, :unavailable}` |
  | `:hang` | never returns | never returns |
  | `{:slow, ms}` | sleeps `ms`, then as `:up` | sleeps `ms`, then `:ok` |
  | `:crash` | raises | raises |
  | `{:flapping, period_ms}` | `:up` and `:down` in turns of `period_ms` | same |

  Every event written is kept, in order, with a count of how often it was written, so
  tests can check that nothing was lost and count duplicates.

      iex> {:ok, _} = Breakwater.Ledger.Simulated.start_link([])
      iex> Breakwater.Ledger.Simulated.set_mode("ledger", :down)
      :ok
      iex> Breakwater.Ledger.Simulated.write_batch("ledger", ["e1"])
      {:error, :unavailable}
  """
  @behaviour Breakwater.Ledger
  use GenServer

  @modes :breakwater_simulated_ledger_modes
  @log :breakwater_simulated_ledger_log

  @typedoc "A simulated ledger's mode."
  @type mode :: :up | :down | :hang | :crash | {:slow, non_neg_integer} | {:flapping, pos_integer}

  @doc "Starts the process that owns the simulated ledger's tables."
  @spec start_link(keyword) :: GenServer.on_start()
  def start_link(opts \\ []), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @doc "Sets `subject`'s mode."
  @spec set_mode(binary, mode) :: :ok
  def set_mode(subject, mode) do
    valid =
      case mode do
        m when m in [:up, :down, :hang, :crash] -> true
        {:slow, ms} when is_integer(ms) and ms >= 0 -> true
        {:flapping, ms} when is_integer(ms) and ms > 0 -> true
        _ -> false
      end

    unless valid, do: raise(ArgumentError, "unknown simulated ledger mode: #{inspect(mode)}")
    :ets.insert(@modes, {subject, mode})
    :ok
  end

  @doc "`subject`'s mode (`:up` unless set)."
  @spec mode(binary) :: mode
  def mode(subject) do
    case :ets.lookup(@modes, subject) do
      [{_, mode}] -> effective(mode)
      [] -> :up
    end
  end

  defp effective({:flapping, period}) do
    if rem(div(System.monotonic_time(:millisecond), period), 2) == 0, do: :up, else: :down
  end

  defp effective(mode), do: mode

  @impl Breakwater.Ledger
  def write_batch(subject, events) do
    case behave(subject) do
      :ok ->
        for e <- events do
          :ets.update_counter(
            @log,
            {subject, e},
            {2, 1},
            {{subject, e}, 0, System.unique_integer([:monotonic])}
          )
        end

        :ets.update_counter(
          @log,
          {:total, subject},
          {2, length(events)},
          {{:total, subject}, 0, 0}
        )

        :ok

      error ->
        error
    end
  end

  @impl Breakwater.Ledger
  def health_check(subject), do: behave(subject)

  defp behave(subject) do
    case mode(subject) do
      :up ->
        :ok

      :down ->
        {:error, :unavailable}

      :hang ->
        Process.sleep(:infinity)

      :crash ->
        raise "simulated ledger crash"

      {:slow, ms} ->
        Process.sleep(ms)
        :ok
    end
  end

  @doc "Events `subject`'s ledger holds, in the order first written."
  @spec received(binary) :: [binary]
  def received(subject) do
    @log
    |> :ets.match({{subject, :"$1"}, :_, :"$2"})
    |> Enum.sort_by(fn [_, order] -> order end)
    |> Enum.map(fn [e, _] -> e end)
  end

  @doc "Writes `subject`'s ledger accepted (duplicates included)."
  @spec writes(binary) :: non_neg_integer
  def writes(subject) do
    case :ets.lookup(@log, {:total, subject}) do
      [{_, n, _}] -> n
      [] -> 0
    end
  end

  @doc "Events `subject`'s ledger received more than once, with the extra copies."
  @spec duplicates(binary) :: non_neg_integer
  def duplicates(subject) do
    @log
    |> :ets.match({{subject, :_}, :"$1", :_})
    |> Enum.map(fn [n] -> n - 1 end)
    |> Enum.sum()
  end

  @impl GenServer
  def init(_opts) do
    common = [:named_table, :public, write_concurrency: true, read_concurrency: true]
    :ets.new(@modes, [:set | common])
    :ets.new(@log, [:set | common])
    {:ok, nil}
  end
end
