defmodule Breakwater.Readme do
  @moduledoc false
  # The code blocks of README.md, for the tests that run them as written, in order:
  # Elixir blocks in the test node (readme_test.exs), Erlang blocks on a plain `erl`
  # node with `make dist` (ship/dist_test.exs).

  @path Path.expand("../../README.md", __DIR__)

  @doc false
  # The README's ```lang blocks, in order, as strings.
  def blocks(lang) do
    ~r/^```#{lang}\n(.*?)^```$/ms
    |> Regex.scan(File.read!(@path), capture: :all_but_first)
    |> Enum.map(fn [code] -> code end)
  end

  @doc false
  # The expressions of a shell session (`iex> ` / `...> ` for Elixir, `N> ` for Erlang)
  # with the output shown after each: [{expression, output | nil}]. Code without a
  # prompt is one expression without output.
  def session(code, :elixir) do
    if code =~ ~r/^iex> /m do
      code
      |> String.split("\n")
      |> chunk(&String.starts_with?(&1, "iex> "), fn
        "iex> " <> rest -> rest
        "...> " <> rest -> rest
        other -> other
      end)
      |> Enum.map(fn {lines, output} ->
        {Enum.join(lines, "\n"), output}
      end)
    else
      [{code, nil}]
    end
  end

  def session(code, :erlang) do
    if code =~ ~r/^\d+> /m do
      code
      |> String.split("\n")
      |> erlang_exprs([])
    else
      [{code, nil}]
    end
  end

  # iex: an expression is the prompt line and its `...> ` continuations; the lines up
  # to the next prompt are its output.
  defp chunk(lines, prompt?, strip) do
    lines
    |> Enum.chunk_while(
      nil,
      fn line, acc ->
        cond do
          prompt?.(line) and acc != nil -> {:cont, acc, {[strip.(line)], []}}
          prompt?.(line) -> {:cont, {[strip.(line)], []}}
          acc == nil -> {:cont, acc}
          String.starts_with?(line, "...> ") -> {:cont, add_expr(acc, strip.(line))}
          true -> {:cont, add_output(acc, line)}
        end
      end,
      fn
        nil -> {:cont, nil}
        acc -> {:cont, acc, nil}
      end
    )
    |> Enum.map(fn {expr, out} -> {expr, output(out)} end)
  end

  defp add_expr({expr, out}, line), do: {expr ++ [line], out}
  defp add_output({expr, out}, line), do: {expr, out ++ [line]}

  defp output(lines) do
    case lines |> Enum.join("\n") |> String.trim() do
      "" -> nil
      text -> text
    end
  end

  # Erlang: an expression starts at `N> ` and runs to the line ending in `.`; the lines
  # up to the next prompt are its output.
  defp erlang_exprs([], acc), do: Enum.reverse(acc)

  defp erlang_exprs([line | rest], acc) do
    case Regex.run(~r/^\d+> (.*)$/, line) do
      [_, first] ->
        {more, rest} = until_full_stop([first | rest], [])
        {out, rest} = Enum.split_while(rest, &(not (&1 =~ ~r/^\d+> /)))
        erlang_exprs(rest, [{Enum.join(more, "\n"), output(out)} | acc])

      nil ->
        erlang_exprs(rest, acc)
    end
  end

  defp until_full_stop([line | rest], acc) do
    if String.ends_with?(String.trim_trailing(line), "."),
      do: {Enum.reverse([line | acc]), rest},
      else: until_full_stop(rest, [line | acc])
  end

  defp until_full_stop([], acc), do: {Enum.reverse(acc), []}
end
