defmodule Breakwater.ModelBreakwater do
  @moduledoc false
  # A pure model of one subject's two state machines (the exact rules are the module
  # docs of native/breakwater_core/src/breaker.rs, subject.rs, backpressure.rs and
  # state.rs), for the model-based tests in test/breakwater/model_test.exs.
  #
  # Commands:
  #
  #   {:report_depth, n} | {:record, :success | :failure} | {:admit, priority}
  #   | {:admit_token, priority} | {:record_token, k, :success | :failure}
  #   | {:advance, ms} | {:configure, overrides} | :check | :reset | :force_open
  #   | :remote_open
  #
  # `:remote_open` is a peer node's breaker opening for the subject (what the cluster
  # receiver applies): a closed breaker opens as on a first trip, counted in
  # `remote_opens`; every other state is left alone. `opened_by` is the peer while the
  # breaker stays open from that.
  #
  # `{:admit_token, p}` is `admit/2` with `token: true`; the tokens it hands out are
  # numbered 0, 1, ... in order. `{:record_token, k, outcome}` records `outcome` with
  # token number `rem(k, tokens handed out)`, or bare when none was.
  #
  # The model tracks each half-open probe in flight (when and in which order it was
  # admitted, and the token that names it, if any) and each token (the breaker epoch
  # that admitted it and the probe it names), and applies the rules of
  # native/breakwater_core/src/breaker.rs: a half-open episode counts only the outcomes
  # of its own probes; a token answers its own probe, once; a bare outcome answers the
  # oldest probe in flight (first admitted among equally old ones: the real test makes
  # sure no two probes share a millisecond) and is late with none in flight; the timer
  # re-opens the breaker when every probe slot is taken and the oldest probe is
  # call_timeout_ms old.
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
  @peer :peer@model

  @counters [
    :accepted,
    :bypassed,
    :rejected_circuit_open,
    :rejected_half_open_limit,
    :rejected_backpressure,
    :rejected_shed_low_priority,
    :successes,
    :failures,
    :late_outcomes,
    :probe_successes,
    :probe_failures,
    :stale_probes,
    :circuit_opens,
    :remote_opens,
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
      # the breaker epoch of the state word: bumped by every breaker transition
      epoch: 0,
      forced: false,
      # half-open probes in flight, oldest first: %{seq: n, at: ms}
      in_flight: [],
      probe_successes: 0,
      # tokens handed out: number => %{epoch: e, seq: probe seq | nil}
      tokens: %{},
      seq: 0,
      streak: 0,
      breaker_since: nil,
      consecutive: 0,
      backpressure: :normal,
      depth_overloaded: false,
      depth: 0,
      calm_since: nil,
      opened_by: nil,
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

  defp quiet?(m),
    do: m.breaker == :closed and m.backpressure == :normal and not m.depth_overloaded

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

  # Applies `changes` to the state; when breaker, backpressure, the depth signal's flag
  # or the forced flag change, that is one reported transition, made by `cause`:
  # counted and logged.
  defp swap(m, changes, cause) do
    to = Map.merge(m, changes)
    breaker_changed = to.breaker != m.breaker
    bp_changed = to.backpressure != m.backpressure

    # a breaker transition starts a new breaker epoch and ends the probes in flight
    to =
      if breaker_changed,
        do: %{to | epoch: m.epoch + 1, in_flight: [], probe_successes: 0, opened_by: nil},
        else: to

    if breaker_changed or bp_changed or to.forced != m.forced or
         to.depth_overloaded != m.depth_overloaded do
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

  # signals.rs: the depth signal is overloaded above warning and calm again at or
  # below the recovery depth.
  defp depth_overloaded(m) do
    cond do
      m.depth > m.policy.warning -> true
      m.depth <= m.policy.recovery -> false
      true -> m.depth_overloaded
    end
  end

  # subject.rs `evaluate`: the backpressure state the depth leads to, with the
  # stability period of `recovery`, and the depth signal's flag (in the same CAS).
  # `configure`: a new policy is the cause.
  defp evaluate(m, configure \\ false) do
    t = m.policy
    current = m.backpressure
    target = next_backpressure(current, m.depth, t)
    flag = depth_overloaded(m)

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
      target == current and flag == m.depth_overloaded ->
        m

      target == current ->
        swap(m, %{depth_overloaded: flag}, cause)

      target == :recovery ->
        m
        |> swap(%{backpressure: :recovery, calm_since: m.now, depth_overloaded: flag}, cause)
        |> evaluate(configure)

      true ->
        swap(m, %{backpressure: target, depth_overloaded: flag}, cause)
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
        m.breaker == :half_open and length(m.in_flight) >= p.half_open_max_calls and
          m.now - Enum.min_by(m.in_flight, & &1.at).at >= p.call_timeout_ms

      if stale, do: m |> trip(:half_open, :stale_probe) |> bump(:stale_probes), else: m
    end
  end

  # ---- commands ------------------------------------------------------------------------

  @doc false
  # `{expected, model}`. `expected` is the exact answer, except that a retry hint that
  # depends on the open time left is `{:open_remaining, ms}` (admit, in ms) or
  # `{:open_remaining_seconds, ms}` (check, in whole seconds): the real clock runs on
  # between steps, so the real hint may be a little smaller.
  def step(m, {:report_depth, n}), do: {:ok, evaluate(%{m | depth: n})}
  # Then a timer visit (see the test's execute/2 for :configure).
  def step(m, {:configure, overrides}),
    do: {:ok, tick(evaluate(%{m | policy: policy(overrides)}, true))}

  def step(m, {:advance, ms}), do: {:ok, tick(%{m | now: m.now + ms})}
  def step(m, {:record, outcome}), do: {:ok, record(m, outcome, nil)}

  def step(m, {:record_token, k, outcome}) do
    case map_size(m.tokens) do
      0 -> {:ok, record(m, outcome, nil)}
      n -> {:ok, record(m, outcome, Map.fetch!(m.tokens, rem(k, n)))}
    end
  end

  # An admission can fill the last probe slot while the oldest probe is already
  # call_timeout_ms old: the background timer would re-open the breaker at any moment,
  # so the real test runs a timer visit after every admission, and the model too.
  def step(m, {:admit, p}) do
    {answer, m, _ticket} = admit(m, p)
    {answer, tick(m)}
  end

  def step(m, {:admit_token, p}) do
    case admit(m, p) do
      {:ok, m, ticket} ->
        {{:ok, :token}, tick(%{m | tokens: Map.put(m.tokens, map_size(m.tokens), ticket)})}

      {reject, m, nil} ->
        {reject, tick(m)}
    end
  end

  def step(m, :check), do: check(m)
  def step(m, :reset), do: {:ok, reset(m)}
  def step(m, :force_open), do: {:ok, force_open(m)}

  def step(m, :remote_open) do
    if m.breaker == :closed do
      m = m |> trip(:closed, :remote_open) |> bump(:remote_opens)
      {true, %{m | opened_by: @peer}}
    else
      {false, m}
    end
  end

  @doc false
  # The peer the model's remote opens come from.
  def peer, do: @peer

  # An outcome, bare (`ticket` nil) or with the ticket of its admission.
  defp record(m, outcome, ticket) do
    m = bump(m, if(outcome == :success, do: :successes, else: :failures))

    cond do
      ticket != nil and ticket.epoch != m.epoch -> bump(m, :late_outcomes)
      m.breaker == :closed -> record_closed(m, outcome)
      m.breaker == :open -> bump(m, :late_outcomes)
      true -> record_half_open(m, outcome, ticket)
    end
  end

  defp record_closed(m, :success), do: %{m | consecutive: 0}

  defp record_closed(m, :failure) do
    m = %{m | consecutive: m.consecutive + 1}
    if m.consecutive >= m.policy.failure_threshold, do: trip(m, :closed, :failures), else: m
  end

  # The probe the outcome answers: the one its ticket names if still in flight; with no
  # ticket the oldest (first admitted among equally old ones).
  defp record_half_open(m, outcome, ticket) do
    answered =
      case ticket do
        nil -> Enum.min_by(m.in_flight, &{&1.at, &1.seq}, fn -> nil end)
        %{seq: nil} -> nil
        %{seq: seq} -> Enum.find(m.in_flight, &(&1.seq == seq))
      end

    if answered == nil do
      bump(m, :late_outcomes)
    else
      m = %{m | in_flight: List.delete(m.in_flight, answered)}
      probe_outcome(m, outcome)
    end
  end

  defp probe_outcome(m, :failure),
    do: m |> bump(:probe_failures) |> trip(:half_open, :probe_failure)

  defp probe_outcome(m, :success) do
    m = bump(m, :probe_successes)
    successes = m.probe_successes + 1

    if successes >= m.policy.success_threshold do
      m
      |> swap(%{breaker: :closed, streak: 0, consecutive: 0}, :probe_successes)
      |> bump(:successful_recoveries)
    else
      %{m | probe_successes: successes}
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

  # `{answer, model, ticket}`: the ticket of an admitted call (nil when rejected).
  defp admit(m, p) when p >= @bypass_priority,
    do: {:ok, bump(m, :bypassed), %{epoch: m.epoch, seq: nil}}

  defp admit(m, p) do
    cond do
      quiet?(m) ->
        admitted(shed(m, p) || {:ok, bump(m, :accepted)})

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

            {{:reject, :circuit_open, retry}, bump(m, :rejected_circuit_open), nil}
        end

      m.breaker == :half_open and length(m.in_flight) >= m.policy.half_open_max_calls ->
        {{:reject, :half_open_limit, m.policy.call_timeout_ms},
         bump(m, :rejected_half_open_limit), nil}

      m.breaker == :half_open ->
        case backpressure_reject(m, p) do
          nil ->
            probe = %{seq: m.seq, at: m.now}

            m = %{m | in_flight: m.in_flight ++ [probe], seq: m.seq + 1}
            {:ok, bump(m, :accepted), %{epoch: m.epoch, seq: probe.seq}}

          {reject, m} ->
            {reject, m, nil}
        end

      true ->
        admitted(backpressure_reject(m, p) || {:ok, bump(m, :accepted)})
    end
  end

  defp admitted({:ok, m}), do: {:ok, m, %{epoch: m.epoch, seq: nil}}
  defp admitted({reject, m}), do: {reject, m, nil}

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

          # check_backpressure/1 answers whole seconds, rounded up.
          retry =
            if m.breaker == :open and not m.forced and open_part > bp_part,
              do: {:open_remaining_seconds, max(open_part, 1)},
              else: seconds(max(max(open_part, bp_part), 1))

          {{:backpressure_active, retry}, m}

        :warning ->
          {{:backpressure_warning, 0}, m}

        :inactive ->
          {{:backpressure_inactive, 0}, m}
      end
    end
  end

  defp seconds(ms), do: div(ms + 999, 1000)

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

      {{status, {:open_remaining_seconds, ms}}, {status, real}} ->
        is_integer(real) and real >= seconds(max(ms - tolerance_ms, 1)) and
          real <= seconds(ms)

      {{:ok, :token}, {:ok, token}} ->
        is_integer(token) and token >= 0

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
      probes_in_flight: length(m.in_flight),
      probe_successes: m.probe_successes,
      trip_streak: m.streak,
      consecutive_failures: m.consecutive,
      queue_depth: m.depth,
      opened_by: m.opened_by,
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
      :queue_depth,
      :opened_by
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
