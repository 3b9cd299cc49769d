defmodule Breakwater.Ship.HostProjectTest do
  # Breakwater as a dependency of a throwaway host Mix project, built the ways users
  # build it: by path (a copy of this checkout's working tree without any build
  # product: this checkout's own priv/ or _build must not help) and by git (a local
  # clone of this checkout's HEAD, so uncommitted changes are not in it). The host's first command is `mix run`, which compiles
  # everything once (the NIF too) and must start Breakwater and answer
  # check_backpressure/1; then `MIX_ENV=prod mix release` (without and with
  # `build_embedded`), and the release boots (`bin/host start`) and answers over
  # `bin/host rpc`. The hosts share one cargo target directory (target/host-projects).
  use ExUnit.Case, async: false

  alias Breakwater.Ship

  @moduletag :ship
  @moduletag timeout: 900_000

  # Printed by the host; the test reads it back.
  @probe ~S"""
  IO.puts("bw-probe " <> inspect(%{
    check: :router_intake_backpressure.check_backpressure("host"),
    started: List.keymember?(Application.started_applications(), :breakwater, 0),
    priv_dir: List.to_string(:code.priv_dir(:breakwater)),
    spool_dir: elem(Breakwater.Config.load(Application.get_all_env(:breakwater)), 1).spool_dir,
    nif: File.exists?(Path.join(:code.priv_dir(:breakwater), "native/libbreakwater_nif.so"))
  }))
  """

  setup_all do
    tmp = Ship.tmp_dir!("bwship-hosts")
    on_exit(fn -> File.rm_rf!(tmp) end)
    %{tmp: tmp}
  end

  test "path dependency: works on the first build; its prod release boots", %{tmp: tmp} do
    source = Ship.export_worktree!(Path.join(tmp, "source"))
    host = host!(tmp, :bwhost_path, ~s(path: #{inspect(source)}), false)
    first_build_runs!(host)
    release_boots!(host, :bwhost_path)
  end

  test "git dependency: works on the first build; its embedded prod release boots", %{tmp: tmp} do
    clone = Path.join(tmp, "clone")
    Ship.run!("git", ["clone", "--quiet", Ship.root(), clone], [])
    host = host!(tmp, :bwhost_git, ~s(git: #{inspect(clone)}), true)
    Ship.run!("mix", ["deps.get"], cd: host, env: Ship.mix_env("prod"))
    first_build_runs!(host)
    release_boots!(host, :bwhost_git)
  end

  # A host project depending on Breakwater through `dep`.
  defp host!(tmp, app, dep, embedded?) do
    dir = Path.join(tmp, Atom.to_string(app))
    module = app |> Atom.to_string() |> Macro.camelize()
    File.mkdir_p!(Path.join(dir, "lib"))

    File.write!(Path.join(dir, "mix.exs"), """
    defmodule #{module}.MixProject do
      use Mix.Project

      def project do
        [
          app: #{inspect(app)},
          version: "0.1.0",
          elixir: "~> 1.14",
          build_embedded: #{embedded?},
          deps: [{:breakwater, #{dep}}]
        ]
      end

      def application, do: [extra_applications: [:logger]]
    end
    """)

    File.write!(Path.join([dir, "lib", "#{app}.ex"]), "defmodule #{module} do\nend\n")
    dir
  end

  # The host's first command compiles Breakwater (and its NIF) and runs.
  defp first_build_runs!(host) do
    out = Ship.run!("mix", ["run", "-e", @probe], cd: host, env: Ship.mix_env("prod"))
    assert out =~ "Compiling NIF crate breakwater_nif"
    probe = probe!(out)

    assert probe.check == {:backpressure_inactive, 0}
    assert probe.started and probe.nif
    build = Path.join(host, "_build/prod")
    assert probe.priv_dir == Path.join(build, "lib/breakwater/priv")
    assert probe.spool_dir == Path.join(build, "var/breakwater_spool")
  end

  # `mix release` of the host; the release boots and answers over rpc.
  defp release_boots!(host, app) do
    Ship.run!("mix", ["release", "--overwrite"], cd: host, env: Ship.mix_env("prod"))
    rel = Path.join([host, "_build/prod/rel", Atom.to_string(app)])
    bin = Path.join([rel, "bin", Atom.to_string(app)])
    assert File.exists?(Path.join(rel, "lib/breakwater-0.1.0/priv/native/libbreakwater_nif.so"))

    env = [
      {"RELEASE_NODE", "#{app}_#{System.pid()}_#{System.unique_integer([:positive])}"},
      {"RELEASE_COOKIE", "c#{System.unique_integer([:positive])}#{:rand.uniform(1_000_000_000)}"},
      {"RELEASE_DISTRIBUTION", "sname"}
    ]

    port =
      Port.open({:spawn_executable, bin}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        args: ["start"],
        cd: rel,
        env: Enum.map(env, fn {k, v} -> {to_charlist(k), to_charlist(v)} end)
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)

    on_exit(fn ->
      System.cmd("kill", ["-9", Integer.to_string(os_pid)], stderr_to_stdout: true)
    end)

    out = rpc_when_up!(bin, rel, env, port)
    probe = probe!(out)
    assert probe.check == {:backpressure_inactive, 0}
    assert probe.started and probe.nif
    assert probe.priv_dir == Path.join(rel, "lib/breakwater-0.1.0/priv")
    assert probe.spool_dir == Path.join(rel, "var/breakwater_spool")

    Ship.run!(bin, ["stop"], cd: rel, env: env)
    assert_receive {^port, {:exit_status, 0}}, 60_000
  end

  # Polls `bin rpc` with the probe until the node answers (it is booting meanwhile);
  # fails with the node's output if it exits or does not come up within a minute.
  defp rpc_when_up!(bin, rel, env, port, deadline \\ nil, log \\ "") do
    deadline = deadline || System.monotonic_time(:millisecond) + 60_000

    receive do
      {^port, {:data, data}} ->
        rpc_when_up!(bin, rel, env, port, deadline, log <> data)

      {^port, {:exit_status, status}} ->
        flunk("the release exited with #{status} while booting:\n#{Ship.tail(log)}")
    after
      0 ->
        case System.cmd(bin, ["rpc", @probe], cd: rel, env: env, stderr_to_stdout: true) do
          {out, 0} ->
            out

          {out, _} ->
            if System.monotonic_time(:millisecond) > deadline,
              do: flunk("the release did not answer rpc:\n#{out}\n#{Ship.tail(log)}")

            Process.sleep(250)
            rpc_when_up!(bin, rel, env, port, deadline, log)
        end
    end
  end

  defp probe!(out) do
    case Regex.run(~r/^bw-probe (.*)$/m, out) do
      [_, term] ->
        {probe, _} = Code.eval_string(term)
        probe

      nil ->
        flunk("no probe in the host's output:\n#{Ship.tail(out)}")
    end
  end
end
