defmodule Mix.Tasks.Compile.BreakwaterNative do
  @moduledoc """
  Builds the `breakwater_nif` crate with cargo and copies the library to
  `priv/native/`, where `Breakwater.Native` loads it.

  The hex `rustler` package (whose Mix compiler usually does this) cannot be fetched on
  the machines this project targets, so the project carries this small compiler. It
  always builds the release profile: tests and benches run the optimised code. Cargo is
  incremental, so a build with nothing changed costs a fraction of a second.

  Environment: `CARGO` (default `cargo`), `CARGO_TARGET_DIR` (default `target/`).
  """
  use Mix.Task.Compiler

  @crate "breakwater_nif"

  @impl true
  def run(_args) do
    root = File.cwd!()
    cargo = System.get_env("CARGO", "cargo")
    target_dir = System.get_env("CARGO_TARGET_DIR", Path.join(root, "target"))

    case System.find_executable(cargo) do
      nil ->
        error("cargo not found (looked for #{inspect(cargo)}); install a Rust toolchain")

      exe ->
        build(exe, root, target_dir)
    end
  end

  defp build(cargo, root, target_dir) do
    args = ["build", "--release", "--locked", "-p", @crate]
    Mix.shell().info("Compiling NIF crate #{@crate} (cargo #{Enum.join(args, " ")})")

    case System.cmd(cargo, args,
           cd: root,
           stderr_to_stdout: true,
           env: [{"CARGO_TARGET_DIR", target_dir}],
           into: IO.stream(:stdio, :line)
         ) do
      {_, 0} -> install(target_dir, root)
      {_, status} -> error("cargo build failed with exit status #{status}")
    end
  end

  defp install(target_dir, root) do
    ext = if match?({:unix, :darwin}, :os.type()), do: "dylib", else: "so"
    source = Path.join([target_dir, "release", "lib#{@crate}.#{ext}"])
    dest_dir = Path.join([root, "priv", "native"])
    # Erlang's load_nif wants the .so extension on every unix.
    dest = Path.join(dest_dir, "lib#{@crate}.so")
    File.mkdir_p!(dest_dir)

    if File.exists?(dest) and File.read!(dest) == File.read!(source) do
      {:noop, []}
    else
      # Copy to a temporary name and rename: a running VM that has the old library
      # loaded keeps its mapping of the old file, and concurrent builds never see a
      # half-written library.
      tmp = "#{dest}.#{:os.getpid()}.#{System.unique_integer([:positive])}.tmp"
      File.cp!(source, tmp)
      File.rename!(tmp, dest)
      {:ok, []}
    end
  end

  defp error(message) do
    Mix.shell().error(message)

    {:error,
     [
       %Mix.Task.Compiler.Diagnostic{
         compiler_name: "breakwater_native",
         file: "native/#{@crate}",
         message: message,
         position: nil,
         severity: :error
       }
     ]}
  end
end
