defmodule Mix.Tasks.Breakwater.Dist do
  @shortdoc "Writes an OTP library tree of Breakwater and the Elixir applications it needs"

  @moduledoc """
  Writes an OTP library tree for Erlang builds without Mix (rebar3, erlang.mk, relx):

      _build/dist/lib/breakwater-0.1.0/{ebin,priv}
      _build/dist/lib/elixir-1.14.0/{ebin,priv}
      _build/dist/lib/logger-1.14.0/{ebin,priv}

  `make dist` runs it (`MIX_ENV=prod mix breakwater.dist`). Put the tree on `ERL_LIBS`
  (`ERL_LIBS=_build/dist/lib erl -config sys.config`) or copy its directories into a
  relx release's `lib/`. Breakwater's `priv/native/` holds the NIF library, built for
  this machine's OS, CPU and Erlang/OTP version.

  The tree holds `breakwater` and every application it needs at run time that is not
  part of Erlang/OTP (found from the `applications` of the `.app` files, so
  `elixir`), plus `logger`, Elixir's logging application, for Elixir libraries the
  node may add (Breakwater itself does not start it). Applications of Erlang/OTP
  (`kernel`, `stdlib`, `sasl`, `inets`, `crypto`, `compiler`...) come from the Erlang
  installation that runs the node. Elixir's protocols are not consolidated (Breakwater's
  hot paths use none).

  Options: `--out DIR` (default `_build/dist`); the `lib/` directory under it is
  written afresh.
  """
  use Mix.Task

  @extra [:logger]

  @impl true
  def run(args) do
    {opts, _} = OptionParser.parse!(args, strict: [out: :string])
    out = Path.expand(opts[:out] || Path.join("_build", "dist"))

    Mix.Task.run("compile", [])
    Mix.Task.run("loadpaths", [])

    apps = Enum.uniq(runtime_apps(:breakwater, []) ++ @extra)
    lib = Path.join(out, "lib")
    File.rm_rf!(lib)
    File.mkdir_p!(lib)

    for app <- apps do
      dest = copy_app(app, lib)
      Mix.shell().info("* #{Path.relative_to_cwd(dest)}")
    end

    Mix.shell().info("""

    OTP library tree written to #{Path.relative_to_cwd(out)}. Run Breakwater on it with
        ERL_LIBS=#{lib} erl -config sys.config -eval 'application:ensure_all_started(breakwater)'
    """)
  end

  # `app` and the applications it needs, depth first, leaving out Erlang/OTP's own.
  defp runtime_apps(app, seen) do
    cond do
      app in seen ->
        seen

      otp_app?(app) ->
        seen

      true ->
        load!(app)
        needs = Application.spec(app, :applications) ++ included(app)
        Enum.reduce(needs, seen ++ [app], &runtime_apps/2)
    end
  end

  defp included(app), do: Application.spec(app, :included_applications) || []

  defp otp_app?(app) do
    case :code.lib_dir(app) do
      {:error, _} -> false
      dir -> List.starts_with?(dir, :code.root_dir())
    end
  end

  defp load!(app) do
    case Application.load(app) do
      :ok -> :ok
      {:error, {:already_loaded, ^app}} -> :ok
      {:error, reason} -> Mix.raise("cannot load application #{app}: #{inspect(reason)}")
    end
  end

  defp copy_app(app, lib) do
    load!(app)
    vsn = app |> Application.spec(:vsn) |> List.to_string()
    source = List.to_string(:code.lib_dir(app))
    dest = Path.join(lib, "#{app}-#{vsn}")

    File.mkdir_p!(Path.join(dest, "ebin"))

    for file <- File.ls!(Path.join(source, "ebin")),
        Path.extname(file) in [".beam", ".app", ".appup"] do
      File.cp!(Path.join([source, "ebin", file]), Path.join([dest, "ebin", file]))
    end

    # priv/ followed through a link (Mix links a source priv/ into the build); an empty
    # one when the application has none.
    priv = Path.join(source, "priv")

    priv =
      case File.read_link(priv) do
        {:ok, target} -> Path.expand(target, source)
        {:error, _} -> priv
      end

    if File.dir?(priv), do: File.cp_r!(priv, Path.join(dest, "priv"))
    File.mkdir_p!(Path.join(dest, "priv"))

    if app == :breakwater and
         not File.exists?(Path.join(dest, "priv/native/libbreakwater_nif.so")) do
      Mix.raise("the NIF library is missing from #{priv}/native: run `mix compile`")
    end

    dest
  end
end
