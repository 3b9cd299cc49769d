defmodule Breakwater.Bench.Peer do
  @moduledoc false
  # A second VM for the measurements that need another node configuration: the
  # spool's durability is chosen when a VM opens it, so `enqueue` with
  # `durability: :memory` runs in a peer VM (OTP's `peer`, controlled over standard
  # I/O, no distribution) beside this VM's `:crash` one, in the same interleaved
  # passes. The peer compiles the same bench support files and runs the same specs.

  @files ~w(json.ex loops.ex specs.ex harness.ex peer.ex)

  @doc "Starts a peer VM with Breakwater's environment `env` put over bench.exs's."
  def start(env) do
    args = Enum.flat_map(:code.get_path(), &[~c"-pa", &1])
    {:ok, peer, _node} = :peer.start(%{connection: :standard_io, args: args})
    support = Path.expand(__DIR__)
    # The support modules are compiled in memory here: compile them there too (with
    # the elixir application, which Code needs, started first).
    {:ok, _} = :peer.call(peer, :application, :ensure_all_started, [:elixir], 60_000)
    for f <- @files, do: :peer.call(peer, Code, :require_file, [f, support], 120_000)
    base = Application.get_all_env(:breakwater)
    :ok = :peer.call(peer, __MODULE__, :setup, [Keyword.merge(base, env)], 120_000)
    peer
  end

  @doc false
  # In the peer: Breakwater started under `env`.
  def setup(env) do
    Application.put_all_env(breakwater: env, logger: [level: :warning])
    {:ok, _} = Application.ensure_all_started(:breakwater)
    :ok
  end

  @doc "Runs one timed run of spec `id` with `p` processes of `n` iterations in the peer."
  def measure(peer, id, p, n) do
    :peer.call(peer, __MODULE__, :measure_here, [id, p, n], :infinity)
  end

  @doc false
  def measure_here(id, p, n) do
    spec =
      :erlang.system_info(:schedulers_online)
      |> Breakwater.Bench.Specs.all()
      |> Enum.find(&(&1.id == id))

    [ns] = Breakwater.Bench.Harness.measure(spec, p, n, 1)
    ns
  end

  @doc "Stops the peer."
  def stop(peer), do: :peer.stop(peer)
end
