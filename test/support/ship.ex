defmodule Breakwater.Ship do
  @moduledoc false
  # Helpers of the shipping tests (test/ship): Breakwater built and run the ways users
  # build and run it, in throwaway directories, with OS commands.

  import ExUnit.Assertions

  @root Path.expand("../..", __DIR__)

  @doc false
  # The root of this checkout.
  def root, do: @root

  @doc false
  # A fresh directory under the system's temporary directory. Not named
  # `breakwater-...`: on a code path, such a directory would pass for the breakwater
  # application's (code:lib_dir/1 reads names as `App-Vsn`).
  def tmp_dir!(prefix) do
    dir =
      Path.join(
        System.tmp_dir!(),
        "#{prefix}-#{System.pid()}-#{System.unique_integer([:positive])}"
      )

    File.rm_rf!(dir)
    File.mkdir_p!(dir)
    dir
  end

  @doc false
  # Copies the files of this checkout's working tree (tracked, and new ones git does not
  # ignore: uncommitted changes included; no _build, target or priv) to `dest`, which
  # is then a fresh source tree, as a new clone would be.
  def export_worktree!(dest) do
    files =
      run!("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard"], cd: @root)

    for file <- String.split(files, <<0>>, trim: true),
        source = Path.join(@root, file),
        File.regular?(source) do
      target = Path.join(dest, file)
      File.mkdir_p!(Path.dirname(target))
      File.cp!(source, target)
    end

    dest
  end

  @doc false
  # One target directory for the cargo builds of every host project (kept between
  # runs under target/): the registry crates compile once, not once per host.
  def cargo_target_dir, do: Path.join([@root, "target", "host-projects"])

  @doc false
  # The environment of a child `mix`: no setting of this test run leaks into it.
  def mix_env(env, extra \\ []) do
    [
      {"MIX_ENV", env},
      {"MIX_BUILD_PATH", nil},
      {"MIX_DEPS_PATH", nil},
      {"MIX_BUILD_ROOT", nil},
      {"MIX_TARGET", nil},
      {"MIX_EXS", nil},
      {"ERL_LIBS", nil},
      {"CARGO_TARGET_DIR", cargo_target_dir()}
    ] ++ extra
  end

  @doc false
  # Runs `cmd` with `args`; returns its output (stdout and stderr), or flunks with the
  # output when it exits non-zero.
  def run!(cmd, args, opts) do
    exe = System.find_executable(cmd) || cmd
    started = System.monotonic_time(:millisecond)
    {out, status} = System.cmd(exe, args, [stderr_to_stdout: true] ++ opts)
    ms = System.monotonic_time(:millisecond) - started
    line = [cmd | args] |> Enum.join(" ") |> String.split("\n") |> hd() |> String.slice(0, 100)
    IO.puts("[ship] #{line}: #{ms} ms")

    if status != 0 do
      flunk("""
      `#{Enum.join([cmd | args], " ")}` (in #{opts[:cd] || File.cwd!()}) exited with #{status}:
      #{tail(out)}
      """)
    end

    out
  end

  @doc false
  # The last lines of a long output.
  def tail(out, n \\ 60) do
    out |> String.split("\n") |> Enum.take(-n) |> Enum.join("\n")
  end
end
