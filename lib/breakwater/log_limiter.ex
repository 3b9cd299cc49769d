defmodule Breakwater.LogLimiter do
  @moduledoc """
  Keeps Breakwater's transition log to at most one line per subject per
  `log_interval_ms` (application key, default 1 000), plus one summary line per interval
  of what was left out.

  A transition storm (a depth oscillating around a threshold, a flapping ledger) can
  make thousands of transitions a second; each is still written to history, events,
  telemetry and the alert manager, but only the first of each subject in an interval
  gets a log line. The others are counted per subject, and `Breakwater.Ticker` calls
  `flush/0` every interval, which writes one line:

  ```text
  breakwater: 2904 transition log lines suppressed for 20 subjects in the last 1000 ms
  (at most one line per subject per log_interval_ms); most: "storm-3" 160, "storm-7" 158, "storm-1" 155
  ```

  State is one entry per subject, `{subject, last_line_ms, suppressed}` in the
  `breakwater_log` table (see `Breakwater.Tables`), deleted with the subject.
  """
  require Breakwater.Log, as: Log

  @table :breakwater_log

  @doc """
  True when a line about `subject` may be written now (and notes it); false when one
  was written less than `log_interval_ms` ago (and counts this one as suppressed).
  """
  @spec allow?(binary) :: boolean
  def allow?(subject) do
    now = System.monotonic_time(:millisecond)

    cond do
      :ets.insert_new(@table, {subject, now, 0}) ->
        true

      # A compare-and-swap on the time of the last line: one process wins the interval.
      :ets.select_replace(@table, [
        {{subject, :"$1", :"$2"}, [{:"=<", :"$1", now - interval_ms()}],
         [{{{:const, subject}, now, :"$2"}}]}
      ]) == 1 ->
        true

      true ->
        :ets.update_counter(@table, subject, {3, 1})
        false
    end
  rescue
    # The table is gone (a double fault, or the application is not running): log.
    ArgumentError -> true
  end

  @doc """
  Writes the summary of what was suppressed since the last call, if anything was, and
  resets the counts. Returns the number of lines suppressed.
  """
  @spec flush() :: non_neg_integer
  def flush do
    suppressed = :ets.select(@table, [{{:"$1", :_, :"$2"}, [{:>, :"$2", 0}], [{{:"$1", :"$2"}}]}])

    for {subject, n} <- suppressed, do: :ets.update_counter(@table, subject, {3, -n})

    total = suppressed |> Enum.map(&elem(&1, 1)) |> Enum.sum()

    if total > 0 do
      most =
        suppressed
        |> Enum.sort_by(&elem(&1, 1), :desc)
        |> Enum.take(3)
        |> Enum.map_join(", ", fn {s, n} -> "#{inspect(s, printable_limit: 64)} #{n}" end)

      Log.warning(
        "breakwater: #{total} transition log lines suppressed for #{length(suppressed)} " <>
          "subjects in the last #{interval_ms()} ms (at most one line per subject per " <>
          "log_interval_ms); most: #{most}"
      )
    end

    total
  rescue
    ArgumentError -> 0
  end

  @doc "Forgets `subject` (it was removed)."
  @spec forget(binary) :: :ok
  def forget(subject) do
    :ets.delete(@table, subject)
    :ok
  rescue
    ArgumentError -> :ok
  end

  @doc "The interval: the `log_interval_ms` of the running configuration."
  @spec interval_ms() :: pos_integer
  def interval_ms do
    case :persistent_term.get({Breakwater, :config}, nil) do
      %{log_interval_ms: ms} -> ms
      _ -> 1_000
    end
  end
end
