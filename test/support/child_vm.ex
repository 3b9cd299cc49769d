defmodule Breakwater.ChildVM do
  @moduledoc false
  # Child VMs for the fault tests: plain `erl` OS processes running
  # Breakwater.FaultChild on this node's code paths, driven through stdin and stdout
  # (a line per message), killable with SIGKILL (`kill9/1`).
  #
  # `wrap:` runs the VM under `sh -c` with extra shell commands first (the file-size
  # limit of the fallback full-disk test).

  defstruct [:port, :os_pid, output: []]

  @doc false
  def start(env, opts \\ []) do
    erl = System.find_executable("erl") || raise "erl not found"
    paths = Enum.flat_map(:code.get_path(), &["-pa", List.to_string(&1)])
    erl_args = ["-noshell"] ++ paths ++ ["-eval", "'Elixir.Breakwater.FaultChild':main()."]

    {exe, args} =
      case Keyword.get(opts, :wrap) do
        nil ->
          {erl, erl_args}

        shell ->
          quoted = Enum.map_join([erl | erl_args], " ", &("'" <> &1 <> "'"))
          {System.find_executable("sh"), ["-c", shell <> "; exec " <> quoted]}
      end

    env = for {k, v} <- env, do: {String.to_charlist(k), String.to_charlist(v)}

    port =
      Port.open({:spawn_executable, exe}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        {:line, 65_536},
        args: args,
        env: [{~c"ERL_AFLAGS", ~c"-kernel shell_history disabled"} | env]
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    %__MODULE__{port: port, os_pid: os_pid}
  end

  @doc "Waits for a line starting with `prefix`; returns {line, vm with output so far}."
  def await(vm, prefix, timeout \\ 60_000) do
    port = vm.port

    receive do
      {^port, {:data, {:eol, line}}} ->
        vm = %{vm | output: [line | vm.output]}
        if String.starts_with?(line, prefix), do: {line, vm}, else: await(vm, prefix, timeout)

      {^port, {:data, {:noeol, chunk}}} ->
        await(%{vm | output: [chunk | vm.output]}, prefix, timeout)

      {^port, {:exit_status, status}} ->
        raise "child VM exited (#{status}) before #{inspect(prefix)}:\n" <> log(vm)
    after
      timeout -> raise "child VM: no #{inspect(prefix)} in #{timeout} ms:\n" <> log(vm)
    end
  end

  @doc "Sends a command line and waits for its answer."
  def command(vm, line, prefix, timeout \\ 60_000) do
    Port.command(vm.port, line <> "\n")
    await(vm, prefix, timeout)
  end

  @doc "Asks the VM to halt and waits for its exit."
  def halt(vm) do
    Port.command(vm.port, "halt\n")
    wait_exit(vm)
  end

  @doc "Kills the VM with SIGKILL and waits for its exit; returns the VM with all output."
  def kill9(vm) do
    {_, 0} = System.cmd("kill", ["-9", Integer.to_string(vm.os_pid)])
    wait_exit(vm)
  end

  @doc "Waits for the VM to exit; returns it with all its output and its exit status."
  def wait_exit(vm, timeout \\ 60_000) do
    port = vm.port

    receive do
      {^port, {:data, {_, line}}} -> wait_exit(%{vm | output: [line | vm.output]}, timeout)
      {^port, {:exit_status, status}} -> {status, vm}
    after
      timeout -> raise "child VM did not exit:\n" <> log(vm)
    end
  end

  @doc "Everything the VM printed, in order."
  def log(vm), do: vm.output |> Enum.reverse() |> Enum.join("\n")

  @doc "The lines of `path` (none when it does not exist)."
  def lines(path) do
    case File.read(path) do
      {:ok, text} -> String.split(text, "\n", trim: true)
      {:error, :enoent} -> []
    end
  end
end
