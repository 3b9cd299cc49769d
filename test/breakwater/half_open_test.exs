defmodule Breakwater.HalfOpenTest do
  # The half-open rules at the API: a probe is stale only when it is late itself, and an
  # outcome counts for the admission it answers (tokens), or as documented for bare
  # outcomes. Moves the native clock (Breakwater.Native.advance_clock/1 and a timer
  # visit, never a sleep): async: false.
  use ExUnit.Case, async: false

  import Bitwise

  alias Breakwater.TestSubjects, as: T

  @moduletag :capture_log

  defp status(s), do: Breakwater.status(s)
  defp counters(s), do: status(s).counters

  defp breaker_history(s) do
    for %{breaker: {from, to}, cause: cause} <- Breakwater.History.history(s),
        from != to,
        do: {from, to, cause}
  end

  # Whether a token names a half-open probe: its bits 16..24 hold the probe's slot + 1
  # (native/breakwater_core/src/probes.rs, `Ticket`). Tests only: the token is opaque.
  defp probe_token?(token), do: (token >>> 16 &&& 0xFF) != 0

  # Trips the breaker of `s` (failure_threshold 1) and half-opens it by the timer.
  defp half_open!(s, open_ms) do
    :ok = Breakwater.record(s, :failure)
    assert status(s).breaker == :open
    T.advance(open_ms)
    assert status(s).breaker == :half_open
  end

  test "a half-open breaker whose probes answer in time is not re-opened as stale" do
    # Every probe answers 10 s after it was admitted, and its slot is refilled at once;
    # call_timeout_ms is 60 s. The breaker stays half-open for 80 s, well past
    # call_timeout_ms after the first probes.
    s =
      T.subject(
        failure_threshold: 1,
        open_timeout_ms: 10_000,
        half_open_max_calls: 2,
        success_threshold: 10,
        call_timeout_ms: 60_000
      )

    half_open!(s, 10_000)
    assert :ok = Breakwater.admit(s)
    assert :ok = Breakwater.admit(s)

    for round <- 1..8 do
      T.advance(10_000)
      :ok = Breakwater.record(s, :success)
      assert :ok = Breakwater.admit(s), "round #{round}: the answered slot is free again"
      assert status(s).breaker == :half_open, "round #{round}"
    end

    st = status(s)
    assert {st.probes_in_flight, st.probe_successes} == {2, 8}
    assert st.counters.stale_probes == 0
    assert st.counters.probe_successes == 8
    refute Enum.any?(breaker_history(s), &match?({_, _, :stale_probe}, &1))

    # Now nobody answers: the older probe in flight (admitted 10 s before the other)
    # goes stale 60 s after its admission, not before.
    T.advance(40_000)
    assert status(s).breaker == :half_open
    T.advance(10_000)
    assert status(s).breaker == :open
    assert List.last(breaker_history(s)) == {:half_open, :open, :stale_probe}
    assert counters(s).stale_probes == 1
  end

  test "with tokens, a late outcome frees no probe slot and the limit holds" do
    s =
      T.subject(
        failure_threshold: 1,
        open_timeout_ms: 10_000,
        half_open_max_calls: 3,
        success_threshold: 3,
        call_timeout_ms: 60_000
      )

    # A call admitted while closed, still out when the breaker opens and half-opens.
    {:ok, early} = Breakwater.admit(s, token: true)
    refute probe_token?(early)
    half_open!(s, 10_000)

    probes = for _ <- 1..3, do: elem(Breakwater.admit(s, token: true), 1)
    assert Enum.all?(probes, &probe_token?/1)
    assert status(s).probes_in_flight == 3

    # The early call succeeds now: late. The three probes are still out.
    :ok = Breakwater.record(s, :success, token: early)
    assert status(s).probes_in_flight == 3
    assert {:reject, :half_open_limit, _} = Breakwater.admit(s, token: true)
    assert counters(s).late_outcomes == 1

    # A bypass call in half-open takes no slot, and its failure decides nothing.
    {:ok, bypass} = Breakwater.admit(s, priority: :critical, token: true)
    refute probe_token?(bypass)
    :ok = Breakwater.record(s, :failure, token: bypass)
    assert status(s).breaker == :half_open
    assert counters(s).late_outcomes == 2

    # Each probe answers for itself, once.
    [a, b, c] = probes
    :ok = Breakwater.record(s, :success, token: b)
    :ok = Breakwater.record(s, :success, token: b)
    assert status(s).probes_in_flight == 2
    assert counters(s).late_outcomes == 3
    :ok = Breakwater.record(s, :success, token: a)
    :ok = Breakwater.record(s, :success, token: c)
    assert status(s).breaker == :closed
    assert List.last(breaker_history(s)) == {:half_open, :closed, :probe_successes}

    c = counters(s)
    assert {c.probe_successes, c.probe_failures, c.late_outcomes} == {3, 0, 3}
    assert c.successes == 5 and c.failures == 2
    assert c.successful_recoveries == 1
  end

  test "without tokens: outcomes answer the oldest probe in flight, and are late with none" do
    s =
      T.subject(
        failure_threshold: 1,
        open_timeout_ms: 10_000,
        half_open_max_calls: 3,
        success_threshold: 3,
        call_timeout_ms: 60_000
      )

    half_open!(s, 10_000)

    # No probe in flight: a late success frees nothing, a late failure re-opens nothing.
    :ok = Breakwater.record(s, :success)
    :ok = Breakwater.record(s, :failure)
    st = status(s)
    assert {st.breaker, st.probes_in_flight, st.probe_successes} == {:half_open, 0, 0}
    assert st.counters.late_outcomes == 2

    # With probes out, a bare outcome answers the oldest one: a late success of a call
    # admitted before the breaker half-opened is indistinguishable from a probe's
    # (tokens tell them apart, see above).
    for _ <- 1..3, do: :ok = Breakwater.admit(s)
    assert {:reject, :half_open_limit, _} = Breakwater.admit(s)
    :ok = Breakwater.record(s, :success)
    st = status(s)
    assert {st.probes_in_flight, st.probe_successes} == {2, 1}
    assert :ok = Breakwater.admit(s)

    # A bare failure answers a probe too: the breaker re-opens.
    :ok = Breakwater.record(s, :failure)
    assert status(s).breaker == :open
    assert List.last(breaker_history(s)) == {:half_open, :open, :probe_failure}

    # While open every outcome is late.
    :ok = Breakwater.record(s, :success)
    c = counters(s)
    assert {c.late_outcomes, c.probe_successes, c.probe_failures} == {3, 1, 1}
  end

  test "call/3 holds its admission: a call that ends after the breaker half-opened is late" do
    s =
      T.subject(
        failure_threshold: 1,
        open_timeout_ms: 10_000,
        half_open_max_calls: 1,
        success_threshold: 1,
        call_timeout_ms: 60_000
      )

    parent = self()

    slow =
      Task.async(fn ->
        Breakwater.call(s, fn ->
          send(parent, {:started, self()})
          receive do: (:finish -> {:ok, :late})
        end)
      end)

    assert_receive {:started, fun_pid}
    half_open!(s, 10_000)
    assert :ok = Breakwater.admit(s)
    assert status(s).probes_in_flight == 1

    send(fun_pid, :finish)
    assert Task.await(slow) == {:ok, :late}

    st = status(s)
    assert {st.breaker, st.probes_in_flight} == {:half_open, 1}
    assert st.counters.late_outcomes == 1
    assert st.counters.successes == 1
  end

  test "with tokens, the probes in flight never exceed the limit under concurrent callers" do
    max = 3

    s =
      T.subject(
        failure_threshold: 1,
        open_timeout_ms: 10_000,
        half_open_max_calls: max,
        success_threshold: 255,
        call_timeout_ms: 600_000
      )

    workers = 4 * System.schedulers_online()
    # Calls admitted while closed, whose outcomes will arrive among the probes'.
    early = for _ <- 1..(workers * 50), do: elem(Breakwater.admit(s, token: true), 1)
    half_open!(s, 10_000)
    held = :atomics.new(2, [])
    parent = self()

    pids =
      for {batch, i} <- Enum.with_index(Enum.chunk_every(early, 50)) do
        spawn_link(fn ->
          :rand.seed(:exsss, {i, 7, 99})
          send(parent, {:done, self(), worker(s, batch, held, max, 0, 0)})
        end)
      end

    {probes, late} =
      Enum.reduce(pids, {0, 0}, fn pid, {p, l} ->
        receive do: ({:done, ^pid, {p1, l1}} -> {p + p1, l + l1})
      end)

    assert :atomics.get(held, 2) <= max, "#{:atomics.get(held, 2)} probes held at once"
    st = status(s)
    assert {st.breaker, st.probes_in_flight} == {:half_open, 0}
    assert st.probe_successes == probes
    assert st.counters.probe_successes == probes
    assert st.counters.late_outcomes == late
    assert late == length(early)
  end

  # Until 15 probes and all of `early` are answered: admits with a token and, for a
  # probe, counts it held (atomics 1; the peak in 2) until just before recording it;
  # records the early calls' outcomes in between.
  defp worker(s, early, held, max, probes, late) do
    cond do
      probes >= 15 and early == [] ->
        {probes, late}

      early != [] and :rand.uniform(2) == 1 ->
        :ok = Breakwater.record(s, :success, token: hd(early))
        worker(s, tl(early), held, max, probes, late + 1)

      probes < 15 ->
        case Breakwater.admit(s, token: true) do
          {:ok, token} ->
            true = probe_token?(token)
            n = :atomics.add_get(held, 1, 1)
            peak(held, n)
            :atomics.sub(held, 1, 1)
            :ok = Breakwater.record(s, :success, token: token)
            worker(s, early, held, max, probes + 1, late)

          {:reject, :half_open_limit, _} ->
            worker(s, early, held, max, probes, late)
        end

      true ->
        worker(s, early, held, max, probes, late)
    end
  end

  defp peak(held, n) do
    old = :atomics.get(held, 2)

    if n > old and :atomics.compare_exchange(held, 2, old, n) != :ok,
      do: peak(held, n),
      else: :ok
  end

  test "bad tokens are an ArgumentError naming token, and change nothing" do
    s = T.subject(failure_threshold: 1)
    {:ok, token} = Breakwater.admit(s, token: true)
    before = counters(s)

    for bad <- [-1, 2_147_483_648, 1 <<< 70, 1.5, "1", :token, nil, [token], {token}] do
      e = assert_raise ArgumentError, fn -> Breakwater.record(s, :failure, token: bad) end
      assert e.message =~ "token"
    end

    for bad <- [1, nil, :yes, "true"] do
      e = assert_raise ArgumentError, fn -> Breakwater.admit(s, token: bad) end
      assert e.message =~ "token"
    end

    assert counters(s) == before
    assert status(s).breaker == :closed
    # A forged token of the right shape is only ever late or an ordinary outcome.
    :ok = Breakwater.record(s, :success, token: 2_147_483_647)
    assert counters(s).late_outcomes == before.late_outcomes + 1
  end
end
