defmodule Mix.Tasks.Compile.BreakwaterNative do
  @moduledoc """
  Builds the `breakwater_nif` crate with cargo and installs the library as
  `priv/native/libbreakwater_nif.so` of the application's build directory
  (`Mix.Project.app_path/0`, e.g. `_build/dev/lib/breakwater`), the directory
  `:code.priv_dir(:breakwater)` names and `Breakwater.Native` loads it from.

  ## Why the build directory, and only it

  Mix links (or, with `build_embedded: true`, copies) the project's `priv/` into the
  build directory when it builds the project's structure, *before* any compiler runs,
  and only if `priv/` exists then. The source tree has no `priv/` (the library is a
  build product), so a compiler that writes `priv/native/` in the source tree leaves
  the first build without a library: the project itself works from its second build
  on, and a dependency (path or git), compiled once, never finds it. Writing into the
  build directory works on the first build in every mode:

    * the project itself and a path or git dependency: the build directory is the
      host's `_build/<env>/lib/breakwater`, where the code path points;
    * `mix release` copies the build directory's `priv/` into the release
      (`lib/breakwater-<vsn>/priv/native/`), with or without `build_embedded`;
    * when `priv/` of the build directory is a link into a source `priv/` (an older
      checkout had one), the library is written through the link, which is still
      where the code path points.

  The hex `rustler` package (whose Mix compiler usually does this) cannot be fetched on
  the machines this project targets, so the project carries this small compiler. It
  always builds the release profile: tests and benches run the optimised code. Cargo is
  incremental, so a build with nothing changed costs a fraction of a second, and the
  library is only rewritten when its content changed.

  Environment: `CARGO` (default `cargo`), `CARGO_TARGET_DIR` (default `target/` of the
  project, i.e. of `deps/breakwater` for a dependency; point it at one directory to
  share the compiled crates between projects).
  """
  use Mix.Task.Compiler

  @crate "breakwater_nif"

  @doc "Where the library is installed: `priv/native/` of the application's build directory."
  @spec install_dir() :: Path.t()
  def install_dir, do: Path.join([Mix.Project.app_path(), "priv", "native"])

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

  @impl true
  def clean do
    _ = File.rm(Path.join(install_dir(), "lib#{@crate}.so"))
    :ok
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
      {_, 0} -> install(target_dir)
      {_, status} -> error("cargo build failed with exit status #{status}")
    end
  end

  defp install(target_dir) do
    ext = if match?({:unix, :darwin}, :os.type()), do: "dylib", else: "so"
    source = Path.join([target_dir, "release", "lib#{@crate}.#{ext}"])
    dest_dir = install_dir()
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
