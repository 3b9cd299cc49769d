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
  # Moves the native clock and runs a timer visit.
  def advance(ms) do
    :ok = Breakwater.Native.advance_clock(ms)
    Breakwater.Ticker.tick()
  end
end
