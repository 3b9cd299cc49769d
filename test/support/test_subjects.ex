defmodule Breakwater.TestSubjects do
  @moduledoc false
  # Unique subject names: the native registry lives as long as the VM, so every test
  # works on subjects of its own.

  @doc false
  def unique(prefix \\ "t"), do: "#{prefix}-#{System.unique_integer([:positive, :monotonic])}"

  @doc false
  # Configures a fresh subject with `policy` and returns its name.
  def subject(policy \\ [], prefix \\ "t") do
    s = unique(prefix)
    :ok = Breakwater.configure(s, policy)
    s
  end

  @doc false
  # Polls `fun` every 5 ms until it returns true; flunks after `timeout_ms`.
  def wait_until(fun, timeout_ms \\ 10_000) do
    do_wait(fun, System.monotonic_time(:millisecond) + timeout_ms)
  end

  defp do_wait(fun, deadline) do
    cond do
      fun.() ->
        :ok

      System.monotonic_time(:millisecond) > deadline ->
        ExUnit.Assertions.flunk("condition not reached in time")

      true ->
        Process.sleep(5)
        do_wait(fun, deadline)
    end
  end

  @doc false
  # Drains and acks `subject` in batches of `batch` until it is empty; the events, in
  # order.
  def drain_all(subject, batch \\ 10_000), do: drain_all(subject, batch, [])

  defp drain_all(subject, batch, acc) do
    case Breakwater.drain(subject, batch) do
      {:ok, id, events} ->
        :ok = Breakwater.ack(subject, id)
        drain_all(subject, batch, [events | acc])

      :empty ->
        acc |> Enum.reverse() |> Enum.concat()
    end
  end

  @doc false
  # Moves the native clock and runs a timer visit.
  def advance(ms) do
    :ok = Breakwater.Native.advance_clock(ms)
    Breakwater.Ticker.tick()
  end
end
