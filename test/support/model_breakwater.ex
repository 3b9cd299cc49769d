defmodule Breakwater.ModelBreakwater do
  @moduledoc false
  # A pure model of one subject's two state machines (the exact rules are the module
  # docs of native/breakwater_core/src/breaker.rs, subject.rs, backpressure.rs and
  # state.rs), for the model-based tests in test/breakwater/model_test.exs.
  #
  # Commands:
  #
  #   {:report_depth, n} | {:record, :success | :failure} | {:admit, priority}
  #   | {:advance, ms} | {:configure, overrides} | :check | :reset | :force_open
  #
  # `{:advance, ms}` moves the model clock and then applies every time rule, as the
  # real test does with `Breakwater.Native.advance_clock/1` followed by a synchronous
  # timer visit (`Breakwater.Ticker.tick/0`).
  #
  # `step/2` returns the expected answer of the command and the new model. The model
  # also keeps the log of transitions it made (each one is a history entry), from
  # which `expected_history/1` and `expected_events/1` derive what the ETS tables must
  # hold.

  import Bitwise

  @retry_after_ms 30_000
  @bypass_priority 8
  @low_priority_max 2
  @shed_ratio 0.8

  @counters [
    :accepted,
    :bypassed,
    :rejected_circuit_open,
    :rejected_half_open_limit,
    :rejected_backpressure,
    :rejected_shed_low_priority,
    :successes,
    :failures,
    :circuit_opens,
    :recovery_attempts,
    :successful_recoveries,
    :breaker_transitions,
    :backpressure_transitions,
    :status_changes
  ]

  @doc false
  def counter_keys, do: @counters

  @doc false
  # A fresh subject configured with `overrides` (a keyword list of policy keys).
  def new(overrides) do
    %{
      now: 0,
      policy: policy(overrides),
      breaker: :closed,
      forced: false,
      probes: 0,
      probe_successes: 0,
      streak: 0,
      breaker_since: nil,
      probes_since: nil,
      consecutive: 0,
      backpressure: :normal,
      depth: 0,
      calm_since: nil,
      counters: Map.new(@counters, &{&1, 0}),
      log: []
    }
  end

  @doc false
  # The policy values the model needs, derived as the native layer derives them.
  def policy(overrides) do
    p = Map.new(overrides)
    warning = Map.get(p, :warning_threshold, 10_000)
    critical = Map.get(p, :critical_threshold, 50_000)
    ratio = Map.get(p, :recovery_threshold, 0.5)

    %{
      warning: warning,
      critical: critical,
      recovery: trunc(Float.floor(ratio * warning)),
      shed: trunc(Float.ceil(@shed_ratio * critical)),
      stability_ms: Map.get(p, :stability_ms, 1_000),
      failure_threshold: Map.get(p, :failure_threshold, 5),
      open_timeout_ms: Map.get(p, :open_timeout_ms, 30_000),
      max_open_timeout_ms: Map.get(p, :max_open_timeout_ms),
      half_open_max_calls: Map.get(p, :half_open_max_calls, 3),
      success_threshold: Map.get(p, :success_threshold, 3),
      call_timeout_ms: Map.get(p, :call_timeout_ms, 5_000)
    }
  end

  # ---- derived values ------------------------------------------------------------

  @doc false
  def status(%{breaker: b, backpressure: bp}), do: status(b, bp)

  defp status(:open, _), do: :active
  defp status(_, :dropping), do: :active
  defp status(:half_open, _), do: :warning
  defp status(_, :pressure), do: :warning
  defp status(_, :recovery), do: :warning
  defp status(_, _), do: :inactive

  defp quiet?(m), do: m.breaker == :closed and m.backpressure == :normal

  defp open_time(%{policy: p, streak: streak}) do
    case p.max_open_timeout_ms do
      nil -> p.open_timeout_ms
      cap -> min(p.open_timeout_ms <<< streak, cap)
    end
  end

  # ms until an open breaker half-opens; nil when forced
  defp open_remaining(%{forced: true}), do: nil
  defp open_remaining(m), do: max(m.breaker_since + open_time(m) - m.now, 0)

  defp bump(m, key, n \\ 1), do: update_in(m.counters[key], &(&1 + n))

  # ---- transitions -----------------------------------------------------------------

  # Applies `changes` to the state; when breaker, backpressure or the forced flag
  # change, that is one reported transition, made by `cause`: counted and logged.
  defp swap(m, changes, cause) do
    to = Map.merge(m, changes)
    breaker_changed = to.breaker != m.breaker
    bp_changed = to.backpressure != m.backpressure

    # a breaker transition starts a new breaker epoch: clears probe bookkeeping
    to =
      if breaker_changed,
        do: %{to | probes: 0, probe_successes: 0, probes_since: nil},
        else: to

    if breaker_changed or bp_changed or to.forced != m.forced do
      from_status = status(m)
      to_status = status(to)

      to
      |> then(&if breaker_changed, do: bump(&1, :breaker_transitions), else: &1)
      |> then(&if bp_changed, do: bump(&1, :backpressure_transitions), else: &1)
      |> then(&if from_status != to_status, do: bump(&1, :status_changes), else: &1)
      |> Map.update!(:log, fn log ->
        [
          %{
            breaker: {m.breaker, to.breaker},
            backpressure: {m.backpressure, to.backpressure},
            cause: cause,
            from_status: from_status,
            to_status: to_status
          }
          | log
        ]
      end)
    else
      to
    end
  end

  # backpressure.rs `next/4` (no pool exhaustion in the model)
  defp next_backpressure(state, depth, t) do
    critical = depth >= t.critical

    case state do
      :normal when critical -> :dropping
      :normal when depth >= t.warning -> :pressure
      :pressure when critical -> :dropping
      :pressure when depth <= t.recovery -> :normal
      :dropping when depth <= t.recovery -> :recovery
      :recovery when critical -> :dropping
      s -> s
    end
  end

  # subject.rs `evaluate`: the backpressure state the depth leads to, with the
  # stability period of `recovery`. `configure`: a new policy is the cause.
  defp evaluate(m, configure \\ false) do
    t = m.policy
    current = m.backpressure
    target = next_backpressure(current, m.depth, t)

    {m, target} =
      if current == :recovery and target == :recovery do
        cond do
          m.depth <= t.recovery and m.calm_since == :no_time ->
            {%{m | calm_since: m.now}, target}

          m.depth <= t.recovery and is_integer(m.calm_since) and
              m.now - m.calm_since >= t.stability_ms ->
            {m, :normal}

          m.depth > t.recovery and is_integer(m.calm_since) ->
            {%{m | calm_since: :no_time}, target}

          true ->
            {m, target}
        end
      else
        {m, target}
      end

    cause =
      cond do
        configure -> :configure
        current == :recovery and target == :normal -> :stability
        true -> :depth
      end

    cond do
      target == current ->
        m

      target == :recovery ->
        m |> swap(%{backpressure: :recovery, calm_since: m.now}, cause) |> evaluate(configure)

      true ->
        swap(m, %{backpressure: target}, cause)
    end
  end

  # subject.rs `advance_time`: open -> half_open once the open time has passed, then
  # the stability period of `recovery`.
  defp advance_time(m) do
    m =
      if m.breaker == :open and open_remaining(m) == 0 do
        m
        |> swap(%{breaker: :half_open, breaker_since: m.now}, :open_timeout)
        |> bump(:recovery_attempts)
      else
        m
      end

    if m.backpressure == :recovery, do: evaluate(m), else: m
  end

  defp trip(m, from, cause) do
    if m.breaker == from do
      streak = if from == :half_open, do: min(m.streak + 1, 255), else: 0

      m
      |> swap(%{breaker: :open, streak: streak, breaker_since: m.now, consecutive: 0}, cause)
      |> bump(:circuit_opens)
    else
      m
    end
  end

  # the timer's visit (subject.rs `tick`)
  defp tick(m) do
    if quiet?(m) do
      m
    else
      m = m |> evaluate() |> advance_time()
      p = m.policy

      stale =
        m.breaker == :half_open and m.probes >= p.half_open_max_calls and
          is_integer(m.probes_since) and m.now - m.probes_since >= p.call_timeout_ms

      if stale, do: trip(m, :half_open, :stale_probe), else: m
    end
  end

  # ---- commands ------------------------------------------------------------------------

  @doc false
  # `{expected, model}`. `expected` is the exact answer, except that a retry hint that
  # depends on the open time left is `{:open_remaining, ms}` (the real clock runs on
  # between steps, so the real hint may be a little smaller).
  def step(m, {:report_depth, n}), do: {:ok, evaluate(%{m | depth: n})}
  # Then a timer visit (see the test's execute/2 for :configure).
  def step(m, {:configure, overrides}),
    do: {:ok, tick(evaluate(%{m | policy: policy(overrides)}, true))}

  def step(m, {:advance, ms}), do: {:ok, tick(%{m | now: m.now + ms})}
  def step(m, {:record, outcome}), do: {:ok, record(m, outcome)}
  def step(m, {:admit, p}), do: admit(m, p)
  def step(m, :check), do: check(m)
  def step(m, :reset), do: {:ok, reset(m)}
  def step(m, :force_open), do: {:ok, force_open(m)}

  defp record(m, :success) do
    m = bump(m, :successes)

    case m.breaker do
      :closed ->
        %{m | consecutive: 0}

      :half_open ->
        successes = m.probe_successes + 1

        if successes >= m.policy.success_threshold do
          m
          |> swap(%{breaker: :closed, streak: 0, consecutive: 0}, :probe_successes)
          |> bump(:successful_recoveries)
        else
          %{m | probes: max(m.probes - 1, 0), probe_successes: successes}
        end

      :open ->
        m
    end
  end

  defp record(m, :failure) do
    m = bump(m, :failures)

    case m.breaker do
      :closed ->
        m = %{m | consecutive: m.consecutive + 1}
        if m.consecutive >= m.policy.failure_threshold, do: trip(m, :closed, :failures), else: m

      :half_open ->
        trip(m, :half_open, :probe_failure)

      :open ->
        m
    end
  end

  defp shed(m, p) do
    if p <= @low_priority_max and m.depth >= m.policy.shed do
      {{:reject, :shed_low_priority, @retry_after_ms}, bump(m, :rejected_shed_low_priority)}
    end
  end

  defp backpressure_reject(m, p) do
    if m.backpressure == :dropping do
      {{:reject, :backpressure, @retry_after_ms}, bump(m, :rejected_backpressure)}
    else
      shed(m, p)
    end
  end

  defp admit(m, p) when p >= @bypass_priority, do: {:ok, bump(m, :bypassed)}

  defp admit(m, p) do
    cond do
      quiet?(m) ->
        shed(m, p) || {:ok, bump(m, :accepted)}

      m.breaker == :open ->
        case open_remaining(m) do
          0 ->
            admit(advance_time(m), p)

          remaining ->
            retry =
              if remaining,
                do: {:open_remaining, max(remaining, 1)},
                # Forced open: no timer ends it; the retry hint is the policy's.
                else: @retry_after_ms

            {{:reject, :circuit_open, retry}, bump(m, :rejected_circuit_open)}
        end

      m.breaker == :half_open and m.probes >= m.policy.half_open_max_calls ->
        {{:reject, :half_open_limit, m.policy.call_timeout_ms},
         bump(m, :rejected_half_open_limit)}

      m.breaker == :half_open ->
        backpressure_reject(m, p) ||
          {:ok,
           m
           |> Map.merge(%{
             probes: m.probes + 1,
             probes_since: if(m.probes == 0, do: m.now, else: m.probes_since)
           })
           |> bump(:accepted)}

      true ->
        backpressure_reject(m, p) || {:ok, bump(m, :accepted)}
    end
  end

  defp check(m) do
    if quiet?(m) do
      {{:backpressure_inactive, 0}, m}
    else
      m = advance_time(m)

      case status(m) do
        :active ->
          open_part =
            cond do
              m.breaker != :open -> 0
              m.forced -> @retry_after_ms
              true -> open_remaining(m)
            end

          bp_part = if m.backpressure == :dropping, do: @retry_after_ms, else: 0

          retry =
            if m.breaker == :open and not m.forced and open_part > bp_part,
              do: {:open_remaining, max(open_part, 1)},
              else: max(max(open_part, bp_part), 1)

          {{:backpressure_active, retry}, m}

        :warning ->
          {{:backpressure_warning, 0}, m}

        :inactive ->
          {{:backpressure_inactive, 0}, m}
      end
    end
  end

  defp reset(m) do
    m =
      if m.breaker != :closed or m.forced or m.streak != 0,
        do: swap(m, %{breaker: :closed, forced: false, streak: 0}, :reset),
        else: m

    %{m | consecutive: 0}
  end

  defp force_open(m) do
    cond do
      m.forced ->
        m

      m.breaker == :open ->
        swap(m, %{forced: true, breaker_since: m.now}, :force_open)

      true ->
        m
        |> swap(%{breaker: :open, forced: true, breaker_since: m.now}, :force_open)
        |> bump(:circuit_opens)
    end
  end

  # ---- comparing with the real subject ----------------------------------------------------

  @doc false
  # Does the real answer `actual` match the model's `expected`? `tolerance_ms`: how
  # much further the real clock may have run since the open time started.
  def answer_matches?(expected, actual, tolerance_ms) do
    case {expected, actual} do
      {{:reject, reason, {:open_remaining, ms}}, {:reject, reason, real}} ->
        retry_close?(ms, real, tolerance_ms)

      {{status, {:open_remaining, ms}}, {status, real}} ->
        retry_close?(ms, real, tolerance_ms)

      {same, same} ->
        true

      _ ->
        false
    end
  end

  defp retry_close?(ms, real, tolerance_ms),
    do: is_integer(real) and real >= 1 and real <= ms and real >= ms - tolerance_ms

  @doc false
  # The fields of `Breakwater.status/1` the model predicts.
  def expected_status(m) do
    %{
      breaker: m.breaker,
      backpressure: m.backpressure,
      status: status(m),
      forced_open: m.forced,
      probes_in_flight: m.probes,
      probe_successes: m.probe_successes,
      trip_streak: m.streak,
      consecutive_failures: m.consecutive,
      queue_depth: m.depth,
      counters: m.counters
    }
  end

  @doc false
  # The same fields of a real `Breakwater.status/1` map.
  def observed_status(real) do
    real
    |> Map.take([
      :breaker,
      :backpressure,
      :status,
      :forced_open,
      :probes_in_flight,
      :probe_successes,
      :trip_streak,
      :consecutive_failures,
      :queue_depth
    ])
    |> Map.put(:counters, Map.take(real.counters, @counters))
  end

  @router_status %{
    inactive: :backpressure_inactive,
    warning: :backpressure_warning,
    active: :backpressure_active
  }

  @doc false
  # The transitions the model made, oldest first, as history entries look.
  def expected_history(m) do
    m.log
    |> Enum.reverse()
    |> Enum.map(fn t ->
      %{
        status: @router_status[t.to_status],
        previous_status: @router_status[t.from_status],
        breaker: t.breaker,
        backpressure: t.backpressure,
        cause: t.cause
      }
    end)
  end

  @doc false
  # The event types the model's transitions write, oldest first (History.record_one).
  def expected_events(m) do
    m.log
    |> Enum.reverse()
    |> Enum.flat_map(fn t ->
      {from_b, to_b} = t.breaker
      breaker = if from_b != to_b, do: [breaker_event(to_b)], else: []

      status =
        cond do
          t.from_status == t.to_status -> []
          t.to_status == :active -> [:backpressure_active]
          t.to_status == :warning -> [:backpressure_warning]
          true -> []
        end

      recovery = if recovery?(t.from_status, t.to_status), do: [:recovery], else: []
      breaker ++ status ++ recovery
    end)
  end

  @doc false
  def expected_recoveries(m), do: m |> expected_events() |> Enum.count(&(&1 == :recovery))

  defp breaker_event(:open), do: :circuit_open
  defp breaker_event(:half_open), do: :circuit_half_open
  defp breaker_event(:closed), do: :circuit_closed

  defp recovery?(:active, :inactive), do: true
  defp recovery?(:active, :warning), do: true
  defp recovery?(:warning, :inactive), do: true
  defp recovery?(_, _), do: false
end
