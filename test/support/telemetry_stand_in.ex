defmodule :telemetry do
  @moduledoc false
  # A stand-in for the `:telemetry` library (not available on these machines), compiled
  # into the test build only. It forwards each event to the process registered as
  # `:breakwater_telemetry_listener` (a test registers itself; the name goes away when
  # that process exits) and does nothing when none is registered, so the rest of the
  # test suite is unaffected. A caller whose process dictionary holds
  # `:telemetry_stand_in_raise` makes it raise, to test that failures stay contained.

  @listener :breakwater_telemetry_listener

  @doc false
  def execute(event, measurements, metadata) do
    if Process.get(:telemetry_stand_in_raise), do: raise("telemetry stand-in failure")

    case Process.whereis(@listener) do
      nil -> :ok
      pid -> send(pid, {:telemetry, event, measurements, metadata})
    end

    :ok
  end

  @doc false
  def listener, do: @listener

  @doc false
  # Registers the calling process as the listener. The previous test's process may
  # still hold the name: ExUnit starts the next test once a test has reported, not once
  # its process is gone, and on a loaded machine the next setup can come first. So wait
  # for the holder to exit (it is a finished test's process) before registering.
  def listen do
    case Process.whereis(@listener) do
      me when me == self() ->
        :ok

      nil ->
        Process.register(self(), @listener)
        :ok

      pid ->
        ref = Process.monitor(pid)

        receive do
          {:DOWN, ^ref, :process, ^pid, _} -> listen()
        after
          5_000 -> raise "#{inspect(pid)} holds #{inspect(@listener)} for more than 5 s"
        end
    end
  end
end
