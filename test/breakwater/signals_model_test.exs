defmodule Breakwater.SignalsModelTest do
  # Model-based test (PropEr) of the overload signals: random sequences of depth,
  # latency and in-flight reports, admissions, records (with latencies), timer visits
  # and policy changes against a pure model of the signals' hysteresis and the router
  # status they lead to (Breakwater.ModelSignals), compared after every command.
  #
  # The timer is held for the whole test and visited by hand (a `:tick` command moves
  # the native clock by one second, so that the p95 is due, and visits), so that
  # nothing moves between commands. async: false: holding the timer is node-wide.
  use ExUnit.Case, async: false

  alias Breakwater.ModelSignals, as: Model
  alias Breakwater.TestSubjects, as: T

  @moduletag :capture_log
  @moduletag timeout: 300_000

  @router :router_intake_backpressure

  @numtests String.to_integer(System.get_env("BREAKWATER_MODEL_NUMTESTS", "500"))

  # Latencies the test records are below 64 ms, where the histogram is exact; its
  # window (100 000 s) outlasts any test case, so nothing ages out. Neither do calls
  # in flight (call_timeout_ms): their expiry is tested apart, in the router callers'
  # test.
  @base [
    warning_threshold: 10,
    critical_threshold: 40,
    recovery_threshold: 0.5,
    stability_ms: 0,
    latency_overload_ms: 30,
    inflight_overload: 5,
    latency_window_ms: 100_000_000,
    call_timeout_ms: 100_000_000,
    failure_threshold: 1_000
  ]

  # ---- generators ---------------------------------------------------------------------

  defp around(values), do: :proper_types.elements(values)

  defp configure do
    :proper_types.bind(
      {around([5, 10, 20]), around([nil, 20, 30, 45]), around([nil, 3, 5, 8]),
       around([0.2, 0.5, 0.8])},
      fn {warning, latency, inflight, ratio} ->
        Keyword.merge(@base,
          warning_threshold: warning,
          latency_overload_ms: latency,
          inflight_overload: inflight,
          recovery_threshold: ratio
        )
      end,
      false
    )
  end

  defp command do
    :proper_types.frequency([
      {4, {:report_depth, around([0, 2, 3, 4, 5, 6, 9, 10, 11, 15, 20, 21, 39, 40, 45])}},
      {4, {:report_latency, around([0, 10, 14, 15, 16, 29, 30, 31, 60, 200, 10_000])}},
      {4, {:report_inflight, around([0, 1, 2, 3, 5, 6, 9, 20])}},
      {5, {:admit, :proper_types.integer(0, 9)}},
      {5, {:record, around([nil, 1, 10, 15, 16, 29, 30, 31, 45, 63])}},
      {4, :tick},
      {2, :check},
      {1, {:configure, configure()}}
    ])
  end

  defp commands, do: :proper_types.list(command())

  # ---- running a case -------------------------------------------------------------------

  defp execute(s, {:report_depth, n}), do: Breakwater.report_depth(s, n)
  defp execute(s, {:report_latency, ms}), do: Breakwater.report_latency(s, ms)
  defp execute(s, {:report_inflight, n}), do: Breakwater.report_inflight(s, n)
  defp execute(s, {:admit, p}), do: Breakwater.admit(s, priority: p)
  defp execute(s, {:record, nil}), do: Breakwater.record(s, :success)
  defp execute(s, {:record, ms}), do: Breakwater.record(s, :success, latency_ms: ms)
  defp execute(s, :check), do: @router.check_backpressure(s)
  defp execute(s, {:configure, policy}), do: Breakwater.configure(s, policy)

  defp execute(_s, :tick) do
    :ok = Breakwater.Native.advance_clock(1_000)
    Breakwater.Ticker.visit()
  end

  defp run_case(cmds) do
    s = T.subject(@base, "signals")

    try do
      run_case(s, cmds)
    after
      # Runs end with signals overloaded; other tests rank the worst subjects.
      :ok = Breakwater.remove(s)
    end
  end

  defp run_case(s, cmds) do
    cmds
    |> Enum.with_index(1)
    |> Enum.reduce_while(Model.new(@base), fn {cmd, i}, model ->
      {expected, model} = Model.step(model, cmd)
      actual = execute(s, cmd)
      want = Model.expected(model)
      got = Model.observed(Breakwater.status(s))

      cond do
        expected != actual ->
          {:halt, {:mismatch, %{step: i, command: cmd, expected: expected, actual: actual}}}

        want != got ->
          {:halt, {:mismatch, %{step: i, command: cmd, expected: want, actual: got}}}

        true ->
          {:cont, model}
      end
    end)
    |> case do
      {:mismatch, _} = mismatch -> mismatch
      _model -> :ok
    end
  end

  defp quickcheck(prop) do
    case :proper.quickcheck(prop, [:quiet, :long_result, {:numtests, @numtests}, {:max_size, 80}]) do
      true ->
        :ok

      [cmds] ->
        flunk("""
        model and implementation disagree; shrunk counterexample:

        #{inspect(cmds, pretty: true, limit: :infinity)}

        #{inspect(run_case(cmds), pretty: true, limit: :infinity)}
        """)

      other ->
        flunk("PropEr returned #{inspect(other, pretty: true)}")
    end
  end

  setup do
    # Only the commands move the subject: hold the timer, visit by hand.
    :ok = :sys.suspend(Breakwater.Ticker)
    on_exit(fn -> :sys.resume(Breakwater.Ticker) end)
    :ok
  end

  test "signals, hysteresis and router status follow the model after every command" do
    quickcheck(:proper.forall(commands(), fn cmds -> run_case(cmds) == :ok end))
  end

  test "fixed sequences through every rule" do
    sequences = [
      # the router's example: pending over, then p95 over, then both back
      [
        {:configure, Keyword.put(@base, :latency_overload_ms, 5_000)},
        {:report_depth, 15},
        :check,
        {:report_latency, 6_000},
        :check,
        {:admit, 5},
        {:admit, 9},
        {:report_depth, 5},
        :check,
        {:report_latency, 200},
        :check
      ],
      # hysteresis: between recovery and threshold nothing moves
      [
        {:report_latency, 31},
        {:report_latency, 16},
        :check,
        {:report_latency, 15},
        :check,
        {:report_inflight, 6},
        {:report_inflight, 3},
        {:report_inflight, 2},
        :check
      ],
      # measured: latencies need a timer visit; admitted calls count until recorded
      [
        {:record, 45},
        {:record, 45},
        :check,
        :tick,
        :check,
        {:admit, 5},
        {:admit, 5},
        {:admit, 5},
        {:admit, 9},
        {:admit, 9},
        {:admit, 5},
        :tick,
        {:admit, 5},
        {:record, 1},
        {:record, 1},
        {:record, 1},
        {:record, 1},
        :tick,
        :check
      ],
      # records nobody admitted are forgotten at the next visit, not carried
      [
        {:record, nil},
        {:record, nil},
        {:record, nil},
        :tick,
        {:admit, 5},
        {:admit, 5},
        {:admit, 5},
        {:admit, 5},
        {:admit, 5},
        {:admit, 5},
        :tick,
        :check
      ],
      # a policy change turns signals off and on
      [
        {:report_latency, 100},
        {:report_inflight, 20},
        {:admit, 5},
        {:configure, Keyword.merge(@base, latency_overload_ms: nil)},
        {:admit, 5},
        {:configure, Keyword.merge(@base, inflight_overload: 50)},
        :check
      ]
    ]

    for cmds <- sequences, do: assert(run_case(cmds) == :ok)
  end
end
