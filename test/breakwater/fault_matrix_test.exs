defmodule Breakwater.FaultMatrixTest do
  # VMs killed with SIGKILL at random moments under load, restarted on the same
  # spool_dir, and at the end drained: every event whose enqueue returned :ok (as the
  # child wrote down after each :ok) is delivered, or, with durability: :memory,
  # counted as lost with a reason. Each scenario is a chain of rounds on one directory:
  # each round's VM recovers what the last one left, produces (and delivers, in some
  # scenarios), and is killed; a last VM delivers everything and reports its status.
  #
  # Kill points per scenario: BW_FAULT_KILLS (default 7; `make soak` sets more). The
  # random moments come from ExUnit's seed (printed with the kill points).
  use ExUnit.Case, async: false

  alias Breakwater.ChildVM

  @moduletag :fault
  @moduletag timeout: 900_000

  defp kills, do: String.to_integer(System.get_env("BW_FAULT_KILLS", "7"))

  setup do
    seed = ExUnit.configuration()[:seed] || 0
    :rand.seed(:exsss, {seed, 7, 11})
    root = Path.join(System.tmp_dir!(), "bw-fault-#{System.unique_integer([:positive])}")
    on_exit(fn -> File.rm_rf(root) end)
    %{dir: Path.join(root, "spool"), out: Path.join(root, "out")}
  end

  defp env(dir, out, role, scenario, durability, round) do
    [
      {"BW_DIR", dir},
      {"BW_OUT", out},
      {"BW_ROLE", role},
      {"BW_SCENARIO", scenario},
      {"BW_DURABILITY", durability},
      {"BW_ROUND", Integer.to_string(round)}
    ]
  end

  # Runs `kills` rounds of load-then-SIGKILL and a final drain; returns what the
  # checks need.
  defp run_matrix(ctx, scenario, durability, kills) do
    points =
      for round <- 1..kills do
        vm = ChildVM.start(env(ctx.dir, ctx.out, "load", scenario, durability, round))
        {_, vm} = ChildVM.await(vm, "ready")
        ms = 30 + :rand.uniform(370)
        Process.sleep(ms)
        {status, vm} = ChildVM.kill9(vm)

        if System.get_env("BW_FAULT_DEBUG") do
          File.write!("/tmp/bw-fault-#{scenario}-round#{round}.log", ChildVM.log(vm))
        end

        # SIGKILL: no clean exit.
        assert status != 0
        ms
      end

    IO.puts(
      "\n[fault matrix] #{scenario}/#{durability}: killed with SIGKILL #{kills} times, " <>
        "#{Enum.join(points, ", ")} ms after start"
    )

    vm = ChildVM.start(env(ctx.dir, ctx.out, "drain", scenario, durability, kills + 1))
    {_, vm} = ChildVM.await(vm, "done", 120_000)
    {0, vm} = ChildVM.wait_exit(vm)

    if System.get_env("BW_FAULT_DEBUG") do
      File.write!("/tmp/bw-fault-#{scenario}-drain.log", ChildVM.log(vm))
    end

    status = :erlang.binary_to_term(File.read!(Path.join(ctx.out, "status")))

    acked =
      ctx.out
      |> File.ls!()
      |> Enum.filter(&String.starts_with?(&1, "acks-"))
      |> Enum.flat_map(&ChildVM.lines(Path.join(ctx.out, &1)))

    delivered = ChildVM.lines(Path.join(ctx.out, "delivered"))
    %{status: status, acked: acked, delivered: delivered, log: ChildVM.log(vm)}
  end

  defp producer_of(id) do
    [key, seq] = String.split(id, ":")
    {key, String.to_integer(seq)}
  end

  # The checks every scenario shares.
  defp check_accounting(%{status: st, delivered: delivered}) do
    a = st.accounting
    unique = MapSet.new(delivered)
    # Everything was delivered: nothing left spooled.
    assert {a.spooled_memory, a.spooled_disk} == {0, 0}
    # The identity, across every crash.
    assert a.enqueued == a.delivered + a.spooled_memory + a.spooled_disk + a.dropped + a.lost
    # Each delivered event counted once as delivered, however often it was handed out.
    assert a.delivered == MapSet.size(unique)
    # Duplicates (at-least-once after a crash) are counted.
    duplicates = length(delivered) - MapSet.size(unique)
    assert duplicates <= a.redelivered

    # FIFO per producer: the first delivery of each event is in enqueue order.
    delivered
    |> Enum.uniq()
    |> Enum.map(&producer_of/1)
    |> Enum.group_by(&elem(&1, 0), &elem(&1, 1))
    |> Enum.each(fn {producer, seqs} ->
      assert seqs == Enum.sort(seqs), "producer #{producer}: out of order"
    end)

    {unique, duplicates}
  end

  defp check_nothing_lost(r) do
    {unique, duplicates} = check_accounting(r)
    a = r.status.accounting
    missing = Enum.reject(r.acked, &MapSet.member?(unique, &1))

    if missing != [] and System.get_env("BW_FAULT_DEBUG") do
      File.write!("/tmp/bw-fault-debug.term", :erlang.term_to_binary(r))
    end

    assert missing == [],
           "#{length(missing)} acknowledged events never delivered, e.g. " <>
             "#{inspect(Enum.take(missing, 5))}; accounting #{inspect(a)}"

    assert a.lost == 0
    # What was accepted is what was delivered (events accepted in the instant before a
    # kill, whose :ok never reached the producer, included).
    assert a.enqueued - a.dropped == MapSet.size(unique)
    assert length(r.acked) > 0, "the load produced nothing: the test would mean nothing"

    IO.puts(
      "[fault matrix]   #{length(r.acked)} acknowledged, #{MapSet.size(unique)} delivered, " <>
        "#{duplicates} delivered twice (redelivered counted: #{a.redelivered}), lost 0, " <>
        "dropped #{a.dropped}"
    )
  end

  test "memory only (pool segments), durability :crash: nothing acknowledged is lost", ctx do
    ctx |> run_matrix("memory", "crash", kills()) |> check_nothing_lost()
  end

  test "overflowing into overflow files, durability :crash: nothing acknowledged is lost",
       ctx do
    ctx |> run_matrix("overflow", "crash", kills()) |> check_nothing_lost()
  end

  test "ledger mid-delivery, durability :crash: nothing acknowledged is lost", ctx do
    ctx |> run_matrix("ledger", "crash", kills()) |> check_nothing_lost()
  end

  test "durability :memory: what a crash takes is counted as lost (memory)", ctx do
    r = run_matrix(ctx, "memory", "memory", 2)
    {unique, _} = check_accounting(r)
    a = r.status.accounting
    missing = Enum.count(r.acked, &(not MapSet.member?(unique, &1)))
    # Every acknowledged event not delivered is among those counted lost in memory.
    assert missing <= a.lost_by_reason.memory
    assert a.lost == a.lost_by_reason.memory
    assert missing > 0, "the kills took nothing from memory: the test would mean nothing"

    IO.puts(
      "[fault matrix]   memory durability: #{length(r.acked)} acknowledged, " <>
        "#{missing} of them lost, #{a.lost} counted lost (memory)"
    )
  end
end
