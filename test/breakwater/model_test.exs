defmodule Breakwater.ModelTest do
  # Model-based tests (PropEr): random command sequences against a pure model of both
  # state machines (Breakwater.ModelBreakwater). Moves the native clock: async: false.
  use ExUnit.Case, async: false

  alias Breakwater.ModelBreakwater, as: Model
  alias Breakwater.TestSubjects, as: T

  @moduletag :capture_log
  @moduletag timeout: 300_000

  @router :router_intake_backpressure

  @numtests String.to_integer(System.get_env("BREAKWATER_MODEL_NUMTESTS", "500"))

  # The native clock runs in real time too. Every time constant below is a multiple
  # of the smallest clock step (10 s), so the few milliseconds of real time a test
  # case takes can never move a time rule across a threshold.
  @tolerance_ms 5_000

  # Shared, so that a peer's breaker open (:remote_open) applies.
  @base [
    share: :breaker,
    warning_threshold: 10,
    critical_threshold: 20,
    recovery_threshold: 0.5,
    stability_ms: 10_000,
    failure_threshold: 3,
    open_timeout_ms: 100_000,
    half_open_max_calls: 2,
    success_threshold: 2,
    call_timeout_ms: 20_000
  ]

  # ---- generators ---------------------------------------------------------------------

  defp depth do
    :proper_types.oneof([
      :proper_types.integer(0, 70),
      :proper_types.elements([0, 2, 3, 4, 5, 8, 9, 10, 15, 16, 19, 20, 21, 30, 48, 50, 60])
    ])
  end

  defp thresholds do
    :proper_types.elements([
      [warning_threshold: 10, critical_threshold: 20, recovery_threshold: 0.5],
      [warning_threshold: 5, critical_threshold: 8, recovery_threshold: 0.4],
      [warning_threshold: 30, critical_threshold: 60, recovery_threshold: 0.5],
      [warning_threshold: 10, critical_threshold: 50, recovery_threshold: 0.2]
    ])
  end

  defp policy do
    :proper_types.bind(
      {thresholds(), :proper_types.elements([10_000, 20_000]), :proper_types.elements([1, 2, 3]),
       :proper_types.elements([50_000, 100_000]), :proper_types.elements([nil, 400_000]),
       :proper_types.elements([1, 2, 3]), :proper_types.elements([1, 2]),
       :proper_types.elements([20_000, 1_000_000])},
      fn {t, stability, failures, open, max_open, probes, successes, call_timeout} ->
        t ++
          [
            stability_ms: stability,
            failure_threshold: failures,
            open_timeout_ms: open,
            max_open_timeout_ms: max_open,
            half_open_max_calls: probes,
            success_threshold: successes,
            call_timeout_ms: call_timeout,
            share: :breaker
          ]
      end,
      false
    )
  end

  defp outcome, do: :proper_types.elements([:success, :failure, :failure])

  defp command do
    :proper_types.frequency([
      {5, {:report_depth, depth()}},
      {4, {:record, outcome()}},
      {3, {:record_token, :proper_types.integer(0, 1_000), outcome()}},
      {4, {:admit, :proper_types.integer(0, 9)}},
      {3, {:admit_token, :proper_types.integer(0, 9)}},
      {3, {:advance, :proper_types.elements([10_000, 20_000, 50_000, 100_000])}},
      {1, {:configure, policy()}},
      {3, :check},
      {1, :reset},
      {1, :force_open},
      {2, :remote_open}
    ])
  end

  defp commands, do: :proper_types.list(command())

  # The half-open rules: probes admitted with and without tokens, answered in any order,
  # bare and late outcomes, the timer, and the policy's limits changing underneath.
  defp half_open_policy do
    :proper_types.bind(
      {:proper_types.integer(1, 4), :proper_types.integer(1, 5),
       :proper_types.elements([20_000, 30_000, 1_000_000])},
      fn {probes, successes, call_timeout} ->
        Keyword.merge(@base,
          half_open_max_calls: probes,
          success_threshold: successes,
          call_timeout_ms: call_timeout
        )
      end,
      false
    )
  end

  defp half_open_command do
    outcome = :proper_types.elements([:success, :success, :success, :failure])

    :proper_types.frequency([
      {8, {:admit_token, :proper_types.elements([5, 5, 5, 9])}},
      {3, {:admit, 5}},
      {8, {:record_token, :proper_types.integer(0, 1_000), outcome}},
      {3, {:record, outcome}},
      {3, {:advance, :proper_types.elements([10_000, 20_000])}},
      {1, {:advance, 100_000}},
      {1, {:configure, half_open_policy()}},
      {1, :check},
      {1, :reset}
    ])
  end

  # Trip the breaker (3 failures with a call admitted before, whose token answers late)
  # and half-open it, then the generated commands.
  defp half_open_commands do
    :proper_types.bind(
      {half_open_policy(), :proper_types.list(half_open_command())},
      fn {policy, cmds} ->
        [
          {:configure, policy},
          {:admit_token, 5},
          {:record, :failure},
          {:record, :failure},
          {:record, :failure},
          {:advance, 100_000}
          | cmds
        ]
      end,
      false
    )
  end

  # ---- running a case -------------------------------------------------------------------

  # `tokens`: the tokens `{:admit_token, p}` got so far, newest first.
  defp execute(s, {:admit_token, p}, tokens) do
    case admitted(s, Breakwater.admit(s, priority: p, token: true)) do
      {:ok, token} = ok -> {ok, [token | tokens]}
      other -> {other, tokens}
    end
  end

  defp execute(s, {:admit, p}, tokens),
    do: {admitted(s, Breakwater.admit(s, priority: p)), tokens}

  defp execute(s, {:record_token, _k, outcome}, []), do: {Breakwater.record(s, outcome), []}

  defp execute(s, {:record_token, k, outcome}, tokens) do
    token = Enum.at(tokens, length(tokens) - 1 - rem(k, length(tokens)))
    {Breakwater.record(s, outcome, token: token), tokens}
  end

  defp execute(s, cmd, tokens), do: {execute(s, cmd), tokens}

  # After an admission into a half-open breaker, lets the native clock tick over, so
  # that no two probes share a millisecond and "the oldest probe" is the first admitted
  # (the model breaks ties in admission order; the real slots, within one millisecond,
  # by slot). Then a timer visit, as the model makes (see Model.step/2).
  defp admitted(s, answer) do
    if Breakwater.status(s).breaker == :half_open do
      start = Breakwater.Native.now_ms()
      wait_tick(start)
    end

    T.advance(0)
    answer
  end

  defp wait_tick(start) do
    if Breakwater.Native.now_ms() == start, do: wait_tick(start)
  end

  defp execute(s, {:report_depth, n}), do: Breakwater.report_depth(s, n)
  defp execute(s, {:record, outcome}), do: Breakwater.record(s, outcome)
  defp execute(_s, {:advance, ms}), do: T.advance(ms)
  # The background timer applies a shortened open time within tick_ms of a configure:
  # visit now, so that it happens at a known point (the model does the same).
  defp execute(s, {:configure, policy}) do
    result = Breakwater.configure(s, policy)
    T.advance(0)
    result
  end

  defp execute(s, :check), do: @router.check_backpressure(s)
  defp execute(s, :reset), do: Breakwater.reset(s)
  defp execute(s, :force_open), do: Breakwater.force_open(s)
  defp execute(s, :remote_open), do: Breakwater.Cluster.remote_open(s, Model.peer(), 0)

  # Runs `cmds` on a fresh subject and on the model, comparing every answer and the
  # subject's status after every command. With `history: true` it also compares, at
  # the end, the history entries, events and recovery count with the transitions the
  # model made. `:ok` or `{:mismatch, details}`.
  defp run_case(cmds, opts) do
    s = T.subject(@base, "model")

    try do
      run_case(s, cmds, opts)
    after
      # Hundreds of runs would otherwise leave hundreds of open and half-open subjects
      # behind, which other tests' views of the worst subjects would have to rank.
      :ok = Breakwater.remove(s)
    end
  end

  defp run_case(s, cmds, opts) do
    model = Model.new(@base)

    result =
      cmds
      |> Enum.with_index(1)
      |> Enum.reduce_while({model, []}, fn {cmd, i}, {model, tokens} ->
        {expected, model} = Model.step(model, cmd)
        {actual, tokens} = execute(s, cmd, tokens)
        real = Breakwater.status(s)
        want = Model.expected_status(model)
        got = Model.observed_status(real)

        cond do
          not Model.answer_matches?(expected, actual, @tolerance_ms) ->
            {:halt, {:mismatch, %{step: i, command: cmd, expected: expected, actual: actual}}}

          want != got ->
            {:halt,
             {:mismatch,
              %{
                step: i,
                command: cmd,
                expected_status: diff(want, got),
                actual_status: diff(got, want)
              }}}

          true ->
            {:cont, {model, tokens}}
        end
      end)

    case result do
      {:mismatch, _} = mismatch -> mismatch
      {model, _tokens} -> if opts[:history], do: check_history(s, model), else: :ok
    end
  end

  defp diff(a, b) do
    a
    |> Enum.reject(fn {k, v} -> Map.get(b, k) == v end)
    |> Map.new(fn
      {:counters, c} -> {:counters, Map.reject(c, fn {k, v} -> b.counters[k] == v end)}
      kv -> kv
    end)
  end

  defp check_history(s, model) do
    # every writer has finished: ours synchronously, the timer's before this returns
    :ok = Breakwater.Ticker.tick()

    history =
      s
      |> Breakwater.History.history()
      |> Enum.map(&Map.take(&1, [:status, :previous_status, :breaker, :backpressure, :cause]))

    events = s |> @router.get_backpressure_events() |> Enum.map(& &1.event_type)
    recoveries = @router.get_backpressure_recovery_status(s).recovery_count
    metrics = @router.get_backpressure_metrics(s)
    want_events = Model.expected_events(model)

    cond do
      history != Model.expected_history(model) ->
        {:mismatch, %{history: history, expected_history: Model.expected_history(model)}}

      events != want_events ->
        {:mismatch, %{events: events, expected_events: want_events}}

      recoveries != Model.expected_recoveries(model) ->
        {:mismatch, %{recovery_count: recoveries, expected: Model.expected_recoveries(model)}}

      metrics.total_events != length(want_events) ->
        {:mismatch, %{metrics: metrics, expected_total: length(want_events)}}

      true ->
        :ok
    end
  end

  defp quickcheck(opts) do
    generator = Keyword.get(opts, :commands, commands())
    prop = :proper.forall(generator, fn cmds -> run_case(cmds, opts) == :ok end)

    case :proper.quickcheck(prop, [:quiet, :long_result, {:numtests, @numtests}, {:max_size, 100}]) do
      true ->
        :ok

      [cmds] ->
        flunk("""
        model and implementation disagree; shrunk counterexample:

        #{inspect(cmds, pretty: true, limit: :infinity)}

        #{inspect(run_case(cmds, opts), pretty: true, limit: :infinity)}
        """)

      other ->
        flunk("PropEr returned #{inspect(other, pretty: true)}")
    end
  end

  # ---- properties -------------------------------------------------------------------------

  test "both state machines follow the model: answers and status after every command" do
    quickcheck([])
  end

  test "history, events and recoveries are written exactly once per model transition" do
    quickcheck(history: true)
  end

  test "half-open: concurrent probes, late and bare outcomes, tokens and the timer follow the model" do
    quickcheck(commands: half_open_commands(), history: true)
  end

  # A few fixed sequences, so that the interesting paths are covered whatever the seed.
  test "fixed sequences through every state" do
    sequences = [
      # breaker: trip, half-open, probe limit, reopen with growth, close
      [
        {:configure, @base ++ [max_open_timeout_ms: 400_000]},
        {:record, :failure},
        {:record, :failure},
        {:record, :failure},
        {:admit, 5},
        :check,
        {:admit, 9},
        {:advance, 100_000},
        {:admit, 5},
        {:admit, 5},
        {:admit, 5},
        {:record, :failure},
        {:advance, 100_000},
        :check,
        {:advance, 100_000},
        {:admit, 5},
        {:record, :success},
        {:admit, 5},
        {:record, :success},
        :check
      ],
      # stale probes: every slot taken and unanswered for call_timeout_ms
      [
        {:record, :failure},
        {:record, :failure},
        {:record, :failure},
        {:advance, 100_000},
        {:admit, 5},
        {:admit, 5},
        {:advance, 20_000},
        :check
      ],
      # backpressure: pressure, dropping, recovery, back to dropping, stability, normal
      [
        {:report_depth, 10},
        {:admit, 1},
        {:report_depth, 16},
        {:admit, 1},
        {:admit, 3},
        {:report_depth, 20},
        {:admit, 5},
        :check,
        {:report_depth, 5},
        {:report_depth, 20},
        {:report_depth, 4},
        {:report_depth, 6},
        {:advance, 10_000},
        {:report_depth, 5},
        {:advance, 10_000},
        :check
      ],
      # a peer's open: from closed only; the breaker then runs on its own
      [
        :remote_open,
        :remote_open,
        {:admit, 5},
        {:advance, 100_000},
        :remote_open,
        {:admit, 5},
        {:record, :success},
        {:record, :success},
        :remote_open,
        :force_open,
        :remote_open,
        :reset,
        {:record, :failure},
        {:record, :failure},
        {:record, :failure},
        :remote_open
      ],
      # manual control across both machines
      [
        {:report_depth, 20},
        :force_open,
        :check,
        {:advance, 100_000},
        {:admit, 5},
        :reset,
        :check,
        {:record, :failure},
        {:record, :failure},
        {:record, :failure},
        :force_open,
        :reset,
        {:configure, @base ++ [warning_threshold: 30, critical_threshold: 60]},
        :check
      ]
    ]

    for cmds <- sequences do
      assert run_case(cmds, history: true) == :ok
    end
  end
end
