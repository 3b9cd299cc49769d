defmodule Breakwater.PolicyStore do
  @moduledoc false
  # Full (Elixir-side) policies by subject, in the `breakwater_policies` table. Subjects
  # never configured use the node's default policy.

  @table :breakwater_policies

  @doc false
  @spec default() :: map
  def default do
    case :ets.lookup(@table, :default) do
      [{_, p}] -> p
      [] -> Breakwater.Policy.defaults()
    end
  rescue
    ArgumentError -> Breakwater.Policy.defaults()
  end

  @doc false
  @spec get(binary) :: map
  def get(subject) do
    case :ets.lookup(@table, subject) do
      [{_, p}] -> p
      [] -> default()
    end
  rescue
    ArgumentError -> Breakwater.Policy.defaults()
  end

  @doc false
  @spec put(binary | :default, map) :: true
  def put(key, policy), do: :ets.insert(@table, {key, policy})

  @doc false
  @spec configured() :: [{binary, map}]
  def configured do
    for {s, p} <- :ets.tab2list(@table), is_binary(s), do: {s, p}
  end
end
