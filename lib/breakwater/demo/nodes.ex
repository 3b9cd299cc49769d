defmodule Breakwater.Demo.Nodes do
  @moduledoc """
  Local clusters for the cluster demo (`make demo-cluster`) and the cluster tests:
  makes this node distributed and starts peer nodes on this host with OTP's `peer`
  module, each running Breakwater with this node's configuration and a spool directory
  of its own.

  Node names get this OS process's id as a suffix, so that several runs (and other
  test suites) can share the machine's `epmd`. Peers are controlled over standard I/O
  (`connection: :standard_io`), not over distribution: a peer disconnected on purpose
  keeps running, and can be connected again. A peer stops with its controller (the
  process that started it) or with `stop/1`.

      iex> {:ok, origin} = Breakwater.Demo.Nodes.ensure_distributed("demo")
      iex> peer = Breakwater.Demo.Nodes.start_peer("demo-b")
      iex> :erpc.call(peer.node, Breakwater, :configure, ["ledger", [share: :breaker]])
      :ok
  """

  @typedoc "A started peer: its controller process, node name, OS process id, spool directory."
  @type peer :: %{pid: pid, node: node, os_pid: String.t(), spool_dir: Path.t()}

  @doc """
  Makes this node distributed (short names) as `<prefix>_<os pid>` unless it already
  is, starting `epmd` first if it does not run. Returns `{:ok, node()}`, and whether
  it started distribution (so a test can stop it again): `{:ok, node, :started}`.
  """
  @spec ensure_distributed(String.t()) :: {:ok, node} | {:ok, node, :started}
  def ensure_distributed(prefix) do
    if Node.alive?() do
      {:ok, node()}
    else
      start_epmd()
      name = String.to_atom("#{sanitize(prefix)}_#{System.pid()}")

      case :net_kernel.start([name, :shortnames]) do
        {:ok, _} -> {:ok, node(), :started}
        {:error, reason} -> raise "could not make this node distributed: #{inspect(reason)}"
      end
    end
  end

  # `epmd -daemon` returns at once, and does nothing when epmd already runs.
  defp start_epmd do
    epmd =
      System.find_executable("epmd") ||
        Path.wildcard(Path.join([:code.root_dir(), "erts-*", "bin", "epmd"])) |> List.first()

    if epmd, do: System.cmd(epmd, ["-daemon"], stderr_to_stdout: true)
    :ok
  end

  @doc """
  Starts a peer node named `<name>_<os pid>` on this host, with this node's code paths,
  and starts Breakwater on it with this node's `:breakwater` configuration, except
  `spool_dir` (a directory of its own under this node's spool directory) and `http`
  (off). `opts`: `env:` further `:breakwater` keys, `log_level:` the peer's primary
  log level (default `:error`), `args:` extra `erl` arguments.
  """
  @spec start_peer(String.t(), keyword) :: peer
  def start_peer(name, opts \\ []) do
    node_name = String.to_atom("#{sanitize(name)}_#{System.pid()}")

    {:ok, pid, node} =
      :peer.start_link(%{
        name: node_name,
        connection: :standard_io,
        args:
          [~c"-setcookie", Atom.to_charlist(Node.get_cookie())] ++
            Keyword.get(opts, :args, [])
      })

    call = fn m, f, a -> :peer.call(pid, m, f, a, 60_000) end
    :ok = call.(:code, :add_pathsa, [own_paths()])
    :ok = call.(:logger, :set_primary_config, [:level, Keyword.get(opts, :log_level, :error)])
    :ok = call.(:application, :load, [:breakwater])

    spool_dir = Path.join(spool_root(), "peer-#{node_name}")

    env =
      Application.get_all_env(:breakwater)
      |> Keyword.drop([:http, :spool_dir])
      |> Keyword.merge(Keyword.get(opts, :env, []))
      |> Keyword.put(:spool_dir, spool_dir)
      |> Keyword.put(:http, nil)

    for {k, v} <- env, do: :ok = call.(:application, :set_env, [:breakwater, k, v])
    {:ok, _} = call.(:application, :ensure_all_started, [:breakwater])
    true = Node.connect(node)
    %{pid: pid, node: node, os_pid: List.to_string(call.(:os, :getpid, [])), spool_dir: spool_dir}
  end

  @doc "Stops a peer (its VM exits)."
  @spec stop(peer) :: :ok
  def stop(%{pid: pid}) do
    :peer.stop(pid)
  catch
    :exit, _ -> :ok
  end

  # The code paths that are not OTP's own (this project's, Elixir's): a peer has OTP's.
  defp own_paths do
    root = List.to_string(:code.root_dir())
    for p <- :code.get_path(), not String.starts_with?(List.to_string(p), root), do: p
  end

  defp spool_root do
    case :persistent_term.get({Breakwater, :config}, nil) do
      %{spool_dir: dir} -> dir
      _ -> Path.join(System.tmp_dir!(), "breakwater-peers")
    end
  end

  defp sanitize(name), do: String.replace(name, ~r/[^A-Za-z0-9_]/, "_")
end
