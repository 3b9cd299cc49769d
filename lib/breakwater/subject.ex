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

  @doc false
  # The router module's rule (its callers' own): a binary of 1..1023 bytes, or an atom
  # (not `undefined`, `nil`, `true` or `false`). Never raises.
  @spec router(term) :: {:ok, binary} | {:error, {:invalid_subject, atom}}
  def router(subject) when is_binary(subject) and byte_size(subject) in 1..1023,
    do: {:ok, subject}

  def router(subject) when is_binary(subject),
    do: {:error, {:invalid_subject, :invalid_subject_length}}

  def router(subject) when is_atom(subject) and subject not in [nil, true, false, :undefined],
    do: {:ok, Atom.to_string(subject)}

  def router(_subject), do: {:error, {:invalid_subject, :invalid_subject_type}}
end
