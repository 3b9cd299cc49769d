# The project's own NIF compiler (see its moduledoc for why it is not the hex package's)
# and `mix breakwater.dist` (`make dist`).
Code.require_file("mix/tasks/compile.breakwater_native.ex", __DIR__)
Code.require_file("mix/tasks/breakwater.dist.ex", __DIR__)

defmodule Breakwater.MixProject do
  use Mix.Project

  def project do
    [
      app: :breakwater,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      compilers: [:breakwater_native | Mix.compilers()],
      elixirc_paths: elixirc_paths(Mix.env()),
      deps: [],
      docs: [main: "Breakwater"],
      test_paths: ["test"]
    ]
  end

  def application do
    [
      mod: {Breakwater.Application, []},
      # No :logger: Breakwater logs through OTP's :logger, so that starting it does not
      # start Elixir's Logger, which would take over the formatting of the node's own
      # log events (docs/operations.md, "Logging").
      extra_applications: [:sasl, :inets, :crypto]
    ]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]
end
