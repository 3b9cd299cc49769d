# Renders target/bench-compare/{before,after}-*.bin (benches/compare.sh) as a markdown
# table: per measurement and process count, the best of the rounds before and after,
# and the difference.
#
#     elixir benches/compare.exs DIR "REVISION SUBJECT"

[dir, rev] = System.argv()

best = fn prefix ->
  Path.wildcard(Path.join(dir, "#{prefix}-*.bin"))
  |> Enum.flat_map(&(&1 |> File.read!() |> :erlang.binary_to_term()))
  |> Enum.reduce(%{}, fn {id, name, by_procs}, acc ->
    Map.update(acc, id, {name, by_procs}, fn {n, old} ->
      {n, Map.merge(old, by_procs, fn _p, a, b -> min(a, b) end)}
    end)
  end)
end

before = best.("before")
after_ = best.("after")
rounds = length(Path.wildcard(Path.join(dir, "after-*.bin")))

fmt = fn
  x when x >= 100 -> :erlang.float_to_binary(x, decimals: 0)
  x -> :erlang.float_to_binary(x, decimals: 1)
end

procs =
  after_
  |> Map.values()
  |> Enum.flat_map(fn {_, m} -> Map.keys(m) end)
  |> Enum.uniq()
  |> Enum.sort()

head =
  "| operation | " <>
    Enum.map_join(procs, " | ", &"before #{&1}p | after #{&1}p | Δ #{&1}p") <> " |"

sep = "|---|" <> String.duplicate("--:|--:|--:|", length(procs))

rows =
  for {id, {name, now}} <- Enum.sort_by(after_, fn {_, {name, _}} -> name end) do
    cells =
      Enum.map_join(procs, " | ", fn p ->
        case {get_in(before, [id]), now[p]} do
          {{_, was}, v} when is_map_key(was, p) and is_number(v) ->
            d = v - was[p]
            "#{fmt.(was[p])} | #{fmt.(v)} | #{if d >= 0, do: "+", else: ""}#{fmt.(d)}"

          {_, v} when is_number(v) ->
            "– | #{fmt.(v)} | –"

          _ ->
            "– | – | –"
        end
      end)

    "| #{name} | #{cells} |"
  end

IO.puts("""
ns per call per process, the best of #{rounds} alternating rounds of each tree
(before: `#{rev}`; after: this tree), the same bench code in both.

#{Enum.join([head, sep | rows], "\n")}
""")
