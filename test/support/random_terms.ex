defmodule Breakwater.RandomTerms do
  @moduledoc false
  # Random terms for the robustness tests of Breakwater.Policy and Breakwater.Config:
  # leaves of every type and nestings of lists, keyword lists, maps, tuples and improper
  # lists. `leaves` tunes the leaves to the function under test:
  #   %{atoms: [atom], strings: [binary], integers: [integer], max_bytes: pos_integer}
  # Draws from the process's `:rand` state, so a seeded test is reproducible.

  @doc false
  def term(0, leaves) do
    case :rand.uniform(9) do
      1 -> :rand.uniform(20) - 10
      2 -> :rand.uniform(Bitwise.bsl(1, 70)) - Bitwise.bsl(1, 69)
      3 -> :rand.uniform() * Enum.random([1, -1, 1.0e10, 1.0e300])
      4 -> Enum.random(leaves.atoms)
      5 -> :rand.bytes(:rand.uniform(leaves.max_bytes) - 1)
      6 -> Enum.random(leaves.strings)
      7 -> Enum.random([~c"abc", [], make_ref(), self(), fn -> :ok end])
      8 -> "atom_#{:rand.uniform(1_000_000)}"
      9 -> Enum.random(leaves.integers)
    end
  end

  def term(depth, leaves) do
    d = depth - 1

    case :rand.uniform(8) do
      n when n <= 3 -> term(0, leaves)
      4 -> for _ <- 0..:rand.uniform(5), do: term(d, leaves)
      5 -> for _ <- 0..:rand.uniform(5), do: {Enum.random(leaves.atoms), term(d, leaves)}
      6 -> for _ <- 0..:rand.uniform(4), into: %{}, do: {term(0, leaves), term(d, leaves)}
      7 -> List.to_tuple(for _ <- 0..:rand.uniform(4), do: term(d, leaves))
      8 -> [term(d, leaves) | term(0, leaves)]
    end
  end

  @doc false
  # How many atoms the node gained during `run.(seed)`, for each seed. The first use of
  # a module can load it (and add atoms), so a test asks that some run added none: a
  # leak from the code under test grows on every run with fresh random input.
  def atom_growth(seeds, run) do
    Enum.map(seeds, fn seed ->
      before = :erlang.system_info(:atom_count)
      run.(seed)
      :erlang.system_info(:atom_count) - before
    end)
  end
end
