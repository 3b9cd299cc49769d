defmodule Breakwater.TestCheckSampler do
  @moduledoc false
  # Times every `:router_intake_backpressure.check_backpressure/1` call of a few
  # processes looping on one subject, on the node it is started on (the cluster tests
  # start it on peers through :erpc, so it lives in test/support, which peers load).
  #
  # Durations go into a histogram in `:counters`: 100 ns buckets up to 100 us, then
  # 100 us buckets up to 100 ms, then one bucket beyond; the maximum is kept exactly.
  # Each process makes 500 calls, then sleeps a millisecond, so that the samplers leave
  # the machine's cores to the rest of the test.

  @fine 1_000
  @coarse 1_000
  @slots @fine + @coarse + 1

  def start(subject, processes \\ 2) do
    counters = :counters.new(@slots, [:write_concurrency])
    # 1: the stop flag, 2: the longest call (ns).
    flags = :atomics.new(2, signed: false)

    pids =
      for _ <- 1..processes do
        spawn(fn -> loop(subject, counters, flags) end)
      end

    %{counters: counters, flags: flags, pids: pids, node: node()}
  end

  def stop(%{counters: counters, flags: flags, pids: pids}) do
    :atomics.put(flags, 1, 1)

    for pid <- pids do
      ref = Process.monitor(pid)

      receive do
        {:DOWN, ^ref, _, _, _} -> :ok
      after
        10_000 -> Process.exit(pid, :kill)
      end
    end

    summary(counters, :atomics.get(flags, 2))
  end

  defp loop(subject, counters, flags) do
    if :atomics.get(flags, 1) == 0 do
      for _ <- 1..500 do
        t0 = :erlang.monotonic_time()
        {_status, _retry} = :router_intake_backpressure.check_backpressure(subject)
        ns = :erlang.convert_time_unit(:erlang.monotonic_time() - t0, :native, :nanosecond)
        :counters.add(counters, slot(ns), 1)
        note_max(flags, ns)
      end

      Process.sleep(1)
      loop(subject, counters, flags)
    end
  end

  defp slot(ns) when ns < 100_000, do: div(ns, 100) + 1
  defp slot(ns) when ns < 100_000_000, do: @fine + div(ns, 100_000) + 1
  defp slot(_ns), do: @slots

  # Upper bound of a slot's bucket, in ns (the last bucket: unbounded).
  defp upper(i) when i <= @fine, do: i * 100
  defp upper(i) when i < @slots, do: 100_000 + (i - @fine) * 100_000
  defp upper(_i), do: :infinity

  defp note_max(flags, ns) do
    old = :atomics.get(flags, 2)

    if ns > old and :atomics.compare_exchange(flags, 2, old, ns) != :ok,
      do: note_max(flags, ns),
      else: :ok
  end

  defp summary(counters, max_ns) do
    counts = for i <- 1..@slots, do: :counters.get(counters, i)
    total = Enum.sum(counts)

    %{
      calls: total,
      p50_ns: percentile(counts, total, 0.50),
      p99_ns: percentile(counts, total, 0.99),
      max_ns: max_ns
    }
  end

  defp percentile(_counts, 0, _q), do: nil

  defp percentile(counts, total, q) do
    target = Float.ceil(q * total)

    counts
    |> Enum.with_index(1)
    |> Enum.reduce_while(0, fn {n, i}, seen ->
      if seen + n >= target, do: {:halt, {:slot, i}}, else: {:cont, seen + n}
    end)
    |> case do
      {:slot, i} -> upper(i)
      _ -> :infinity
    end
  end

  # Run on a peer (by `:peer.cast/4` over its control connection): cuts this node off
  # from `nodes` and stops its OS process, in one step, so that nobody connects again
  # in between. `kill -CONT` brings it back.
  def isolate(nodes) do
    Enum.each(nodes, &:erlang.disconnect_node/1)
    :os.cmd(~c"kill -STOP " ++ :os.getpid())
  end
end
