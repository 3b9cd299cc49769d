defmodule Breakwater.Bench.Specs do
  @moduledoc false
  # The measurements: what each worker runs, what is prepared untimed, and how each
  # round is checked (counters read back from the NIF must match the calls made).

  alias Breakwater.Bench.Loops
  alias Breakwater.Native

  @event_bytes 256
  @batch 1_000
  @hot "bench.hot"
  @enqueue "bench.enqueue"
  @pt_key {__MODULE__, :baseline_b}
  @ets_table :breakwater_bench_baseline_a

  def event_bytes, do: @event_bytes
  def batch, do: @batch

  @doc "Every spec, in report order. `max_procs` bounds the spool rounds."
  def all(max_procs) do
    [
      simple(:empty_loop, "empty loop (overhead)", &run_empty/3),
      simple(:nif_started, "NIF call, no argument (Native.started/0)", &run_started/3),
      simple(:nif_exists, "NIF call + subject lookup (Native.exists/1)", &run_exists/3),
      simple(:nif_now_ms, "NIF call + clock read (Native.now_ms/0)", &run_now_ms/3),
      simple(:ets_a, "baseline (a): ETS lookup + update_counter", &run_ets_a/3,
        setup: &setup_ets/1,
        verify: &verify_ets/3
      ),
      simple(:ets_lookup, "baseline (a'): ETS lookup only", &run_ets_lookup/3, setup: &setup_ets/1),
      simple(:pt_b, "baseline (b): persistent_term + atomics + counters", &run_pt_b/3,
        setup: &setup_pt/1,
        verify: &verify_pt/3
      ),
      simple(:nif_check, "Native.check/1 (NIF alone)", &run_nif_check/3),
      simple(:check, "check_backpressure/1", &run_check/3),
      simple(:admit, "Breakwater.admit/2 ([])", &run_admit/3, verify: &verify_admit/3),
      simple(:record, "Breakwater.record/2 (:success)", &run_record/3, verify: &verify_record/3),
      simple(:admit_token, "Breakwater.admit/2 (token: true)", &run_admit_token/3,
        verify: &verify_admit/3
      ),
      simple(:record_token, "Breakwater.record/3 (:success, token:)", &run_record_token/3,
        setup: &setup_token/1,
        verify: &verify_record/3
      ),
      simple(
        :record_latency,
        "Breakwater.record/3 (:success, latency_ms: 12)",
        &run_record_latency/3,
        verify: &verify_record/3
      ),
      simple(:nif_record, "Native.record/3 (NIF alone, no latency)", &run_nif_record/3,
        verify: &verify_record/3
      ),
      simple(
        :nif_record_latency,
        "Native.record/3 (NIF alone, latency 12 ms)",
        &run_nif_record_latency/3,
        verify: &verify_record/3
      ),
      enqueue_spec(max_procs),
      drain_spec(max_procs),
      mix_spec(),
      mix_caller_spec()
    ]
  end

  defp simple(id, label, run, opts \\ []) do
    %{
      id: id,
      name: label,
      unit: 1,
      unit_name: "call",
      max_per_round: :infinity,
      setup: Keyword.get(opts, :setup, &setup_hot/1),
      prepare: &prepare_nothing/3,
      run: run,
      verify: Keyword.get(opts, :verify, &verify_nothing/3)
    }
  end

  defp prepare_nothing(_ctx, _i, _n), do: :ok
  defp verify_nothing(_ctx, _procs, _n), do: :ok

  # ---- the shared hot subject -------------------------------------------------------

  defp setup_hot(_procs) do
    # The loops admit without recording and record without admitting, millions of
    # times: with the overload signals (where the tree under test has them) off, the
    # calls they leave in flight and their latencies never change the subject's state,
    # so every loop measures the quiet path it claims to.
    if :inflight_overload in Breakwater.Policy.keys() do
      :ok = Breakwater.configure(@hot, inflight_overload: nil, latency_overload_ms: nil)
    end

    # A write creates the subject (a check is a read and creates nothing).
    :ok = Breakwater.report_depth(@hot, 0)
    {:backpressure_inactive, 0} = :router_intake_backpressure.check_backpressure(@hot)
    counters = Native.status(@hot).counters
    Process.put(:accepted, counters.accepted)
    Process.put(:successes, counters.successes)
    %{subject: @hot}
  end

  defp run_empty(_ctx, _i, n), do: Loops.empty(n)
  defp run_started(_ctx, _i, n), do: Loops.nif_started(n)
  defp run_exists(ctx, _i, n), do: Loops.nif_exists(n, ctx.subject)
  defp run_now_ms(_ctx, _i, n), do: Loops.nif_now_ms(n)
  defp run_nif_check(ctx, _i, n), do: Loops.nif_check(n, ctx.subject)
  defp run_check(ctx, _i, n), do: Loops.check(n, ctx.subject)
  defp run_admit(ctx, _i, n), do: Loops.admit(n, ctx.subject)
  defp run_record(ctx, _i, n), do: Loops.record(n, ctx.subject)
  defp run_admit_token(ctx, _i, n), do: Loops.admit_token(n, ctx.subject)
  defp run_record_token(ctx, _i, n), do: Loops.record_token(n, ctx.subject, ctx.token)

  # A token of the hot subject's closed breaker: its outcomes count as any closed one.
  defp setup_token(procs) do
    ctx = setup_hot(procs)
    {:ok, token} = Breakwater.admit(ctx.subject, token: true)
    Process.put(:accepted, Native.status(ctx.subject).counters.accepted)
    Map.put(ctx, :token, token)
  end

  defp run_record_latency(ctx, _i, n), do: Loops.record_latency(n, ctx.subject)
  defp run_nif_record(ctx, _i, n), do: Loops.nif_record(n, ctx.subject, nil)
  defp run_nif_record_latency(ctx, _i, n), do: Loops.nif_record(n, ctx.subject, 12)

  defp verify_admit(ctx, procs, n), do: counter_delta(ctx.subject, :accepted, procs * n)
  defp verify_record(ctx, procs, n), do: counter_delta(ctx.subject, :successes, procs * n)

  defp counter_delta(subject, key, expected) do
    now = Map.fetch!(Native.status(subject).counters, key)
    delta = now - Process.get(key)
    Process.put(key, now)

    if delta != expected do
      raise "#{subject}: counter #{key} moved by #{delta}, expected #{expected}"
    end

    :ok
  end

  # ---- baselines --------------------------------------------------------------------

  defp setup_ets(_procs) do
    if :ets.whereis(@ets_table) == :undefined do
      # Owned by the bench's main process, which outlives every measurement.
      :ets.new(@ets_table, [
        :set,
        :public,
        :named_table,
        read_concurrency: true,
        write_concurrency: true
      ])

      :ets.insert(@ets_table, [{"ledger", :ok}, {{"ledger", :calls}, 0}])
    end

    Process.put(:ets_calls, :ets.lookup_element(@ets_table, {"ledger", :calls}, 2))
    %{table: @ets_table, key: "ledger", counter: {"ledger", :calls}}
  end

  defp run_ets_a(ctx, _i, n), do: Loops.ets_lookup_update(n, ctx.table, ctx.key, ctx.counter)
  defp run_ets_lookup(ctx, _i, n), do: Loops.ets_lookup(n, ctx.table, ctx.key)

  defp verify_ets(ctx, procs, n) do
    now = :ets.lookup_element(ctx.table, ctx.counter, 2)
    delta = now - Process.get(:ets_calls)
    Process.put(:ets_calls, now)
    if delta != procs * n, do: raise("baseline (a) counted #{delta}, expected #{procs * n}")
    :ok
  end

  defp setup_pt(_procs) do
    case :persistent_term.get(@pt_key, nil) do
      nil ->
        :persistent_term.put(
          @pt_key,
          {:atomics.new(1, signed: false), :counters.new(1, [:write_concurrency])}
        )

      _ ->
        :ok
    end

    {_, counters} = :persistent_term.get(@pt_key)
    Process.put(:pt_calls, :counters.get(counters, 1))
    %{key: @pt_key}
  end

  defp run_pt_b(ctx, _i, n), do: Loops.pt_atomics_counters(n, ctx.key)

  defp verify_pt(ctx, procs, n) do
    {_, counters} = :persistent_term.get(ctx.key)
    now = :counters.get(counters, 1)
    delta = now - Process.get(:pt_calls)
    Process.put(:pt_calls, now)
    if delta != procs * n, do: raise("baseline (b) counted #{delta}, expected #{procs * n}")
    :ok
  end

  # ---- enqueue: every worker into one shared subject, drained between rounds ----------

  # Thresholds far above any depth a round reaches, and the whole pool as quota: every
  # enqueue must be accepted, without a transition.
  defp spool_policy(segments),
    do: [warning_threshold: 100_000_000, critical_threshold: 200_000_000, max_segments: segments]

  defp free_events do
    info = Native.pool_info()
    info.free_segments * min(info.segment_capacity, div(info.segment_bytes, @event_bytes))
  end

  defp enqueue_spec(max_procs) do
    # At most half the free pool per round, and 5000 events per worker.
    per_round = free_events() |> div(2 * max_procs) |> min(5_000) |> max(1)

    %{
      id: :enqueue,
      name: "Breakwater.enqueue/2 (256 B), durability :crash",
      unit: 1,
      unit_name: "call",
      max_per_round: per_round,
      setup: &setup_enqueue/1,
      prepare: &prepare_nothing/3,
      run: &run_enqueue/3,
      verify: &verify_enqueue/3
    }
  end

  defp setup_enqueue(_procs) do
    :ok = Breakwater.configure(@enqueue, spool_policy(Native.pool_info().segments))
    _ = drain_all(@enqueue)
    status = Native.status(@enqueue)
    0 = status.counters.spooled_events
    Process.put(:enqueue_transitions, transitions(status))
    %{subject: @enqueue, event: :binary.copy(<<42>>, @event_bytes)}
  end

  defp run_enqueue(ctx, _i, n), do: Loops.enqueue(n, ctx.subject, ctx.event)

  defp verify_enqueue(ctx, procs, n) do
    drained = drain_all(ctx.subject)
    status = Native.status(ctx.subject)

    cond do
      drained != procs * n ->
        raise "enqueue: drained #{drained} events after a round of #{procs * n} enqueues"

      status.counters.spooled_events != 0 or status.backpressure != :normal ->
        raise "enqueue: spool not empty or not normal after the round: #{inspect(status)}"

      transitions(status) != Process.get(:enqueue_transitions) ->
        raise "enqueue: a round made a transition"

      true ->
        :ok
    end
  end

  defp transitions(status),
    do: status.counters.backpressure_transitions + status.counters.breaker_transitions

  @doc "Drains and acks everything pending in `subject`; returns the events taken."
  def drain_all(subject, acc \\ 0) do
    case Breakwater.drain(subject, 10_000) do
      {:ok, id, events} ->
        :ok = Breakwater.ack(subject, id)
        drain_all(subject, acc + length(events))

      :empty ->
        acc
    end
  end

  # ---- drain + ack: one subject per worker (one ledger worker per subject) ------------

  defp drain_spec(max_procs) do
    per_round = free_events() |> div(2 * max_procs * @batch) |> min(50) |> max(1)

    %{
      id: :drain_ack,
      name: "drain + ack, batches of 1000 x 256 B",
      unit: @batch,
      unit_name: "event",
      max_per_round: per_round,
      setup: &setup_drain/1,
      prepare: &prepare_drain/3,
      run: &run_drain/3,
      verify: &verify_drain/3
    }
  end

  defp drain_subject(i), do: "bench.drain.#{i}"

  defp setup_drain(procs) do
    segments = Native.pool_info().segments

    subjects =
      for i <- 0..(procs - 1) do
        s = drain_subject(i)
        :ok = Breakwater.configure(s, spool_policy(segments))
        _ = drain_all(s)
        s
      end

    Process.put(:delivered, Enum.map(subjects, &Native.status(&1).counters.delivered_events))
    %{subjects: List.to_tuple(subjects), event: :binary.copy(<<7>>, @event_bytes)}
  end

  defp prepare_drain(ctx, i, n) do
    Loops.enqueue(n * @batch, elem(ctx.subjects, i), ctx.event)
  end

  defp run_drain(ctx, i, n), do: Loops.drain_ack(n, elem(ctx.subjects, i), @batch)

  defp verify_drain(ctx, _procs, n) do
    subjects = Tuple.to_list(ctx.subjects)
    now = Enum.map(subjects, &Native.status(&1).counters.delivered_events)

    for {{s, before}, after_} <- Enum.zip(Enum.zip(subjects, Process.get(:delivered)), now) do
      status = Native.status(s)

      cond do
        after_ - before != n * @batch ->
          raise "#{s}: #{after_ - before} events delivered, expected #{n * @batch}"

        status.counters.spooled_events != 0 or status.counters.in_flight_events != 0 ->
          raise "#{s}: events left after the round: #{inspect(status.counters)}"

        true ->
          :ok
      end
    end

    Process.put(:delivered, now)
    :ok
  end

  # ---- transition-heavy mix: one subject per worker -----------------------------------

  defp mix_spec do
    %{
      id: :mix,
      name: "transition mix: report_depth/check, 1 call in 2 a transition",
      unit: 4,
      unit_name: "call",
      max_per_round: :infinity,
      setup: &setup_mix/1,
      prepare: &prepare_nothing/3,
      run: &run_mix/3,
      verify: &verify_mix/3
    }
  end

  # The same, timing only the callers: the alert manager catches up untimed, after the
  # round (it runs concurrently on another scheduler when there is one).
  defp mix_caller_spec do
    %{
      mix_spec()
      | id: :mix_caller,
        name: "  same, callers only (alert manager untimed)",
        run: &run_mix_caller/3,
        verify: &verify_mix_caller/3
    }
  end

  defp run_mix_caller(ctx, i, n),
    do: Loops.transition_mix(n, elem(ctx.subjects, i), ctx.high, ctx.low)

  defp verify_mix_caller(ctx, procs, n) do
    _ = Breakwater.Alerts.list()
    verify_mix(ctx, procs, n)
  end

  defp mix_subject(i), do: "bench.mix.#{i}"

  defp setup_mix(procs) do
    policy = Breakwater.Policy.defaults()
    high = policy.warning_threshold
    low = floor(policy.recovery_threshold * policy.warning_threshold)

    subjects =
      for i <- 0..(procs - 1) do
        s = mix_subject(i)
        :ok = Breakwater.report_depth(s, low)
        {:backpressure_inactive, 0} = :router_intake_backpressure.check_backpressure(s)
        s
      end

    Process.put(:mix_transitions, Enum.map(subjects, &transitions(Native.status(&1))))
    %{subjects: List.to_tuple(subjects), high: high, low: low}
  end

  defp run_mix(ctx, i, n) do
    :ok = Loops.transition_mix(n, elem(ctx.subjects, i), ctx.high, ctx.low)
    # The alert manager is told of every transition (a cast): wait until it has seen
    # them all, so their cost is in the time.
    _ = Breakwater.Alerts.list()
    :ok
  end

  defp verify_mix(ctx, _procs, n) do
    subjects = Tuple.to_list(ctx.subjects)
    now = Enum.map(subjects, &transitions(Native.status(&1)))

    for {{s, before}, after_} <- Enum.zip(Enum.zip(subjects, Process.get(:mix_transitions)), now),
        after_ - before != 2 * n do
      raise "#{s}: #{after_ - before} transitions, expected #{2 * n}"
    end

    Process.put(:mix_transitions, now)
    Process.put(:mix_transitions_total, Process.get(:mix_transitions_total, 0) + 2 * n)
    :ok
  end
end
