defmodule Breakwater.NativeTest do
  # The NIF boundary itself: the library loads, every NIF answers through the
  # VM with its documented shape, and bad arguments raise ArgumentError naming the
  # argument. Calls the stubs directly, which only the library does in production.
  # Moves the native clock (force_open, tick): async: false.
  use ExUnit.Case, async: false

  import Bitwise

  alias Breakwater.Native
  alias Breakwater.TestSubjects, as: T

  # Unwraps `{:transitions, result, ts}`, checking each transition's shape.
  defp unwrap({:transitions, result, ts}) do
    assert is_list(ts) and ts != []

    for t <- ts do
      assert %{from_status: _, to_status: _, at_ms: at} = t
      assert is_integer(at)
    end

    result
  end

  defp unwrap(result), do: result

  defp raises_naming(argument, fun) do
    e = assert_raise ArgumentError, fun
    assert e.message =~ argument
  end

  test "the library is loaded and the instance started" do
    assert {:file, _} = :code.is_loaded(Native)
    assert Native.started()
    assert is_integer(Native.now_ms())

    info = Native.pool_info()

    for k <- [:segments, :free_segments, :max_event_bytes, :max_subjects, :footprint_bytes] do
      assert is_integer(Map.fetch!(info, k)), "pool_info lacks #{k}"
    end

    assert info.free_segments <= info.segments
  end

  test "router NIFs: check, admit, admit_event, admit_write, record, record_write, reports, and the token variants" do
    s = T.subject(warning_threshold: 10, critical_threshold: 20, recovery_threshold: 0.5)
    assert Native.exists(s)
    refute Native.exists(T.unique("never-used"))
    assert s in Native.subjects()

    assert {:backpressure_inactive, 0} = unwrap(Native.check(s))
    assert :ok = unwrap(Native.admit(s, 5))
    assert :ok = unwrap(Native.admit_event(s, "control"))
    assert {:ok, w} = unwrap(Native.admit_write(s))
    assert {:ok, t1} = unwrap(Native.admit_token(s, 5))
    assert {:ok, t2} = unwrap(Native.admit_event_token(s, "control"))
    for t <- [w, t1, t2], do: assert(is_integer(t) and t in 0..2_147_483_647)
    assert :ok = unwrap(Native.record(s, :success, 3))
    assert :ok = unwrap(Native.record_token(s, :failure, nil, t1))
    assert :ok = unwrap(Native.record_write(s, :success, 7, w))
    assert :ok = unwrap(Native.report_latency(s, 10))
    assert :ok = unwrap(Native.report_inflight(s, 2))
    assert {0, 10, 2} = Native.signals(s)
    assert Native.signals(T.unique("never-used")) == nil
    refute Native.exists(T.unique("never-used"))

    # Crossing the critical threshold is a transition the caller sees.
    assert {:transitions, :ok, [t | _]} = Native.report_depth(s, 25)
    assert t.to_status != t.from_status
    assert {:backpressure_active, _retry} = unwrap(Native.check(s))

    st = Native.status(s)
    assert st.backpressure == :dropping
    assert st.counters.failures == 1 and st.counters.successes == 2
    assert st.overloaded == [:depth]
    assert {25, 10, 2} = Native.signals(s)

    # check/1 answers the router's error tuple for a bad subject, in whole seconds
    # otherwise (check_ms/1 in milliseconds).
    bad_type = {:error, {:invalid_subject, :invalid_subject_type}}
    bad_length = {:error, {:invalid_subject, :invalid_subject_length}}
    assert Native.check(123) == bad_type
    assert Native.check(:atom) == bad_type
    assert Native.check("") == bad_length
    assert Native.check(:binary.copy("a", 1024)) == bad_length
    assert Native.check(:binary.copy("a", 100_000)) == bad_length
    assert Native.check_ms(123) == bad_type
    assert {:backpressure_active, 30} = unwrap(Native.check(s))
    assert {:backpressure_active, 30_000} = unwrap(Native.check_ms(s))
    raises_naming("p95_ms", fn -> Native.report_latency(s, -1) end)
    raises_naming("inflight", fn -> Native.report_inflight(s, :many) end)
    raises_naming("outcome", fn -> Native.record_write(s, :meh, 3, w) end)
    raises_naming("priority", fn -> Native.admit(s, 42) end)
    raises_naming("event_type", fn -> Native.admit_event(s, :control) end)
    raises_naming("outcome", fn -> Native.record(s, :meh, 3) end)
    raises_naming("priority", fn -> Native.admit_token(s, -1) end)

    raises_naming("event_type", fn -> Native.admit_event_token(s, "x" |> String.to_charlist()) end)

    for bad <- [-1, 2_147_483_648, 1 <<< 64, 1.0, :token, "1", nil, [1]] do
      raises_naming("token", fn -> Native.record_token(s, :success, nil, bad) end)
    end

    raises_naming("outcome", fn -> Native.record_token(s, :meh, nil, t1) end)
    raises_naming("latency_ms", fn -> Native.record_token(s, :success, -3, t1) end)
    raises_naming("depth", fn -> Native.report_depth(s, -1) end)
    raises_naming("depth", fn -> Native.report_depth(s, 1.5) end)
    # The failed calls changed nothing.
    assert Native.status(s).counters == st.counters
  end

  test "spool NIFs: enqueue, drain, ack, nack, nack_all, load, spool_info" do
    s = T.subject()
    assert :ok = unwrap(Native.enqueue(s, "e1"))
    assert :ok = unwrap(Native.enqueue(s, "e2"))
    assert {:ok, id, ["e1", "e2"]} = unwrap(Native.drain(s, 10))
    assert :ok = unwrap(Native.nack(s, id))
    assert {:ok, id2, ["e1", "e2"]} = unwrap(Native.drain(s, 1_000))
    assert id2 != id
    assert {:error, :unknown_batch} = unwrap(Native.ack(s, id))
    assert :ok = unwrap(Native.ack(s, id2))
    assert :empty == unwrap(Native.drain(s, 10))

    assert :ok = unwrap(Native.enqueue(s, "e3"))
    assert {:ok, _id3, ["e3"]} = unwrap(Native.drain(s, 10))
    assert 1 == Native.nack_all(s)
    assert {:ok, id4, ["e3"]} = unwrap(Native.drain(s, 10))
    assert :ok = unwrap(Native.ack(s, id4))
    # Nothing in overflow files: nothing to read back.
    assert 0 == Native.load(s)

    assert %{durability: :crash, available: true, pool_missing: 0, epoch: epoch} =
             Native.spool_info()

    assert is_integer(epoch) and epoch >= 1

    max = Native.pool_info().max_event_bytes

    assert {:error, {:event_too_large, _, ^max}} =
             unwrap(Native.enqueue(s, :binary.copy("x", max + 1)))

    raises_naming("event", fn -> Native.enqueue(s, :abc) end)
    raises_naming("max", fn -> Native.drain(s, 0) end)
    raises_naming("max", fn -> Native.drain(s, 10_001) end)
    raises_naming("batch_id", fn -> Native.ack(s, :x) end)
    raises_naming("batch_id", fn -> Native.nack(s, -1) end)
    assert :empty == unwrap(Native.drain(s, 10))
  end

  test "a batch taken by a process that dies un-acked goes back to the spool" do
    s = T.subject()
    :ok = unwrap(Native.enqueue(s, "held"))
    parent = self()

    pid =
      spawn(fn ->
        send(parent, {:took, unwrap(Native.drain(s, 10))})
        Process.sleep(:infinity)
      end)

    assert_receive {:took, {:ok, _, ["held"]}}
    assert :empty == unwrap(Native.drain(s, 10))
    Process.exit(pid, :kill)

    assert Enum.any?(1..200, fn _ ->
             Process.sleep(5)
             match?({:ok, _, ["held"]}, unwrap(Native.drain(s, 10)))
           end)
  end

  test "control NIFs: reset, force_open, disable, enable, tick, advance_clock, configure" do
    s = T.subject(open_timeout_ms: 60_000)
    assert :ok = unwrap(Native.force_open(s))
    assert Native.status(s).breaker == :open
    assert {:reject, :circuit_open, retry} = unwrap(Native.admit(s, 5))
    assert retry in 1..60_000
    assert :ok = unwrap(Native.disable(s))
    assert Native.status(s).disabled
    assert :ok = unwrap(Native.enable(s))
    assert :ok = unwrap(Native.reset(s))
    assert Native.status(s).breaker == :closed
    assert is_list(Native.tick(true))
    assert {transitions, reports} = Native.tick_reporting(false)
    assert is_list(transitions) and is_list(reports)
    before = Native.now_ms()
    assert :ok = Native.advance_clock(1_000)
    assert Native.now_ms() >= before + 1_000

    raises_naming("ms", fn -> Native.advance_clock(-5) end)
    raises_naming("subject", fn -> Native.reset(%{}) end)
    assert {:error, [_ | _]} = Native.init(:not_a_map)
  end
end
