defmodule Breakwater.Subject do
  @moduledoc false
  # Subjects are binaries; atoms are converted (never the reverse).

  @doc false
  @spec normalize!(term) :: binary
  def normalize!(subject) when is_binary(subject) and byte_size(subject) in 1..1024, do: subject

  def normalize!(subject) when is_atom(subject) and subject not in [nil, true, false],
    do: Atom.to_string(subject)

  def normalize!(other) do
    raise ArgumentError,
          "subject must be a non-empty binary of at most 1024 bytes or an atom, got: " <>
            inspect(other, limit: 5, printable_limit: 64)
  end
end
