defmodule Breakwater.Bench.Harness do
  @moduledoc false
  # Runs one measurement on `procs` worker processes started together.
  #
  # A spec is a map:
  #
  #   * `:name` - a label;
  #   * `:unit` - operations per loop iteration (1, or 1000 for a drain+ack batch, or 4
  #     for the transition mix), so results are per operation;
  #   * `:max_per_round` - the most iterations a worker runs between two untimed
  #     `prepare`/`verify` steps (the spool benches keep the pool from filling);
  #   * `:setup` - `fun(procs) -> ctx`, in the parent, untimed;
  #   * `:prepare` - `fun(ctx, i, n) -> :ok`, in worker `i` before each round, untimed;
  #   * `:run` - `fun(ctx, i, n) -> :ok`, in worker `i`: the timed loop of `n` iterations,
  #     a compiled tail-recursive function that matches every result;
  #   * `:verify` - `fun(ctx, procs, n) -> :ok`, in the parent after each round,
  #     untimed; raises when the round did not do what it claims.
  #
  # A round's time runs from the parent's `:go` to the last worker's end, so the
  # aggregate throughput is the total of every worker's operations over that time.
  # A worker that crashes (a result that did not match) fails the whole bench.

  @type spec :: map

  @doc """
  Warms up, then measures `runs` runs of `n` iterations per worker. Returns the run
  times in ns (each the sum of its rounds).
  """
  def measure(spec, procs, n, runs) do
    ctx = spec.setup.(procs)
    workers = start_workers(spec, ctx, procs)

    try do
      # Warm-up: a fifth of a run (at least one round) before timing.
      _ = run_once(spec, ctx, workers, max(div(n, 5), 1))
      for _ <- 1..runs, do: run_once(spec, ctx, workers, n)
    after
      stop_workers(workers)
    end
  end

  @doc "Iterations per worker such that one run lasts about `target_ms` at `procs` = 1."
  def calibrate(spec, target_ms, min_n, max_n) do
    ctx = spec.setup.(1)
    workers = start_workers(spec, ctx, 1)

    try do
      probe = min(max(min_n, 1_000), max_n)
      _ = run_once(spec, ctx, workers, div(probe, 4) + 1)
      ns = run_once(spec, ctx, workers, probe)
      per_iteration = max(ns / probe, 0.1)
      n = round(target_ms * 1.0e6 / per_iteration)
      n |> max(min_n) |> min(max_n)
    after
      stop_workers(workers)
    end
  end

  defp run_once(spec, ctx, workers, n) do
    rounds(spec, ctx, workers, n, 0)
  end

  defp rounds(_spec, _ctx, _workers, 0, acc), do: acc

  defp rounds(spec, ctx, workers, left, acc) do
    n = min(left, spec.max_per_round)
    ref = make_ref()
    for {pid, _mref} <- workers, do: send(pid, {:round, ref, n})
    await(workers, ref, :ready)
    t0 = :erlang.monotonic_time(:nanosecond)
    for {pid, _mref} <- workers, do: send(pid, {:go, ref})

    ends = await(workers, ref, :done)
    elapsed = Enum.max(ends) - t0
    :ok = spec.verify.(ctx, length(workers), n)
    rounds(spec, ctx, workers, left - n, acc + elapsed)
  end

  defp await(workers, ref, tag) do
    for {pid, mref} <- workers do
      receive do
        {^tag, ^ref, ^pid, value} ->
          value

        {:DOWN, ^mref, :process, ^pid, reason} ->
          raise "bench worker failed: " <> Exception.format_exit(reason)
      after
        120_000 -> raise "bench worker #{inspect(pid)} did not answer (#{tag})"
      end
    end
  end

  defp start_workers(spec, ctx, procs) do
    parent = self()

    for i <- 0..(procs - 1) do
      spawn_monitor(fn -> worker(parent, spec, ctx, i) end)
    end
  end

  defp stop_workers(workers) do
    for {pid, mref} <- workers do
      send(pid, :stop)

      receive do
        {:DOWN, ^mref, :process, ^pid, :normal} -> :ok
        {:DOWN, ^mref, :process, ^pid, reason} -> raise "bench worker: #{inspect(reason)}"
      end
    end

    :ok
  end

  defp worker(parent, spec, ctx, i) do
    receive do
      {:round, ref, n} ->
        :ok = spec.prepare.(ctx, i, n)
        send(parent, {:ready, ref, self(), :ok})

        receive do
          {:go, ^ref} -> :ok
        end

        :ok = spec.run.(ctx, i, n)
        send(parent, {:done, ref, self(), :erlang.monotonic_time(:nanosecond)})
        worker(parent, spec, ctx, i)

      :stop ->
        :ok
    end
  end
end
