defmodule Breakwater.PolicyStore do
  @moduledoc false
  # Full (Elixir-side) policies by subject. The native layer keeps each subject's full
  # policy beside the native one it enforces, set together in one `configure/3` call,
  # so the two can never disagree and nothing is lost when a process dies. Subjects
  # under the default policy get the node's default (from the configuration).

  alias Breakwater.{Native, Policy}

  @doc false
  @spec default() :: map
  def default do
    case :persistent_term.get({Breakwater, :config}, nil) do
      %{default_policy: policy} -> policy
      _ -> Policy.defaults()
    end
  end

  @doc false
  # The policy `subject` runs under: its own, or the default one (also for a subject
  # that does not exist, which would be created with it).
  @spec get(binary) :: map
  def get(subject) do
    case Native.policy_extra(subject) do
      bin when is_binary(bin) -> :erlang.binary_to_term(bin)
      _default_or_unknown -> default()
    end
  rescue
    # The NIF is not loaded or not started.
    _ in [ErlangError, UndefinedFunctionError] -> default()
  end

  @doc false
  # The bytes the native layer keeps for `policy`.
  @spec encode(map) :: binary
  def encode(policy), do: :erlang.term_to_binary(policy)
end
