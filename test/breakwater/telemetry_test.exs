defmodule Breakwater.TelemetryTest do
  # Not async: the stand-in's listener name and the availability flag are node-wide.
  use ExUnit.Case, async: false

  alias Breakwater.Telemetry
  alias Breakwater.TestSubjects

  doctest Breakwater.Telemetry

  setup do
    :ok = :telemetry.listen()
    on_exit(fn -> Telemetry.refresh() end)
    :ok
  end

  test "the :telemetry module is found at run time and the answer cached" do
    assert Telemetry.refresh()
    assert Telemetry.available?()
    assert :persistent_term.get({Telemetry, :available}) == true
  end

  test "transition/2 emits [:breakwater, :transition] with the subject and the transition" do
    s = TestSubjects.unique()
    t = %{machine: :breaker, from_breaker: :closed, to_breaker: :open, at_ms: 1}
    assert Telemetry.transition(s, t) == :ok
    assert_receive {:telemetry, [:breakwater, :transition], %{count: 1}, %{subject: ^s} = meta}
    assert meta == Map.put(t, :subject, s)
  end

  test "dropped/2 emits [:breakwater, :events_dropped] with the count" do
    s = TestSubjects.unique()
    assert Telemetry.dropped(s, 17) == :ok
    assert_receive {:telemetry, [:breakwater, :events_dropped], %{count: 17}, %{subject: ^s}}
  end

  test "rejected/2 emits [:breakwater, :rejected] with the reason" do
    s = TestSubjects.unique()
    assert Telemetry.rejected(s, :circuit_open) == :ok

    assert_receive {:telemetry, [:breakwater, :rejected], %{count: 1},
                    %{subject: ^s, reason: :circuit_open}}
  end

  test "backpressure_status/3 and backpressure_triggered/2: the router module's events" do
    s = TestSubjects.unique()
    assert Telemetry.backpressure_status(s, :warning, {1_500, 20, 3}) == :ok

    assert_receive {:telemetry, [:router_intake_backpressure, :backpressure_status],
                    %{
                      active: 0,
                      pending_messages: 1_500,
                      latency_p95_ms: 20,
                      inflight_messages: 3
                    }, %{subject: ^s}}

    assert Telemetry.backpressure_status(s, :backpressure_active, {0, 6_000, 0}) == :ok

    assert_receive {:telemetry, [:router_intake_backpressure, :backpressure_status],
                    %{active: 1, latency_p95_ms: 6_000}, %{subject: ^s}}

    assert Telemetry.backpressure_triggered(s, "latency") == :ok

    assert_receive {:telemetry, [:router_intake_backpressure, :backpressure_triggered],
                    %{count: 1}, %{subject: ^s, trigger: "latency"}}
  end

  test "trigger/1 names what made a transition active" do
    base = %{
      from_breaker: :closed,
      to_breaker: :closed,
      from_backpressure: :pressure,
      to_backpressure: :pressure,
      from_overloaded: [],
      to_overloaded: []
    }

    assert Telemetry.trigger(%{base | to_breaker: :open}) == "circuit_open"
    assert Telemetry.trigger(%{base | to_backpressure: :dropping}) == "dropping"

    assert Telemetry.trigger(%{
             base
             | from_overloaded: [:depth],
               to_overloaded: [:depth, :inflight]
           }) ==
             "inflight"

    assert Telemetry.trigger(Map.put(base, :cause, :failures)) == "failures"
    assert Telemetry.trigger(base) == "overload"
  end

  test "nothing is emitted while :telemetry is known to be absent" do
    s = TestSubjects.unique()
    :ok = Telemetry.put_available(false)
    refute Telemetry.available?()
    assert Telemetry.transition(s, %{machine: :manual}) == :ok
    assert Telemetry.dropped(s, 1) == :ok
    assert Telemetry.rejected(s, :backpressure) == :ok
    refute_receive {:telemetry, _, _, %{subject: ^s}}, 50

    assert Telemetry.refresh()
    assert Telemetry.dropped(s, 1) == :ok
    assert_receive {:telemetry, [:breakwater, :events_dropped], _, %{subject: ^s}}
  end

  test "a failing :telemetry call does not reach the caller" do
    s = TestSubjects.unique()
    Process.put(:telemetry_stand_in_raise, true)
    assert Telemetry.transition(s, %{}) == :ok
    assert Telemetry.dropped(s, 1) == :ok
    assert Telemetry.rejected(s, :backpressure) == :ok
    refute_receive {:telemetry, _, _, %{subject: ^s}}, 20
  after
    Process.delete(:telemetry_stand_in_raise)
  end

  test "without a registered listener the stand-in does nothing" do
    s = TestSubjects.unique()
    Process.unregister(:telemetry.listener())
    assert Telemetry.dropped(s, 1) == :ok
    refute_receive {:telemetry, _, _, %{subject: ^s}}, 20
  end

  describe "through the public API" do
    test "a breaker transition, a rejection and a drop each emit their event" do
      Telemetry.refresh()
      s = TestSubjects.subject(failure_threshold: 1, max_segments: 1)

      :ok = Breakwater.record(s, :failure)

      assert_receive {:telemetry, [:breakwater, :transition], %{count: 1},
                      %{subject: ^s, to_breaker: :open}}

      assert {:reject, :circuit_open, _} = Breakwater.admit(s)

      assert_receive {:telemetry, [:breakwater, :rejected], %{count: 1},
                      %{subject: ^s, reason: :circuit_open}}

      # One segment of 256 events, then the pool refuses (drop_newest).
      for i <- 1..256, do: :ok = Breakwater.enqueue(s, "e#{i}")
      assert {:reject, :pool_exhausted, _} = Breakwater.enqueue(s, "one too many")
      assert_receive {:telemetry, [:breakwater, :events_dropped], %{count: 1}, %{subject: ^s}}

      assert_receive {:telemetry, [:breakwater, :rejected], %{count: 1},
                      %{subject: ^s, reason: :pool_exhausted}}
    end
  end
end
