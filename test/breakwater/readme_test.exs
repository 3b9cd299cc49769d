defmodule Breakwater.ReadmeTest do
  # Every Elixir snippet of README.md runs as written, in order, in this (started)
  # node, with the variables of the earlier ones; an output shown after `iex>` that is
  # an Elixir term must be the result. The Erlang snippets run on a plain `erl` node
  # in test/ship/dist_test.exs.
  use ExUnit.Case, async: false

  alias Breakwater.{Readme, TestSubjects}

  setup do
    # The snippets' ledger appends to a file in the temporary directory: make it ours.
    tmp = Path.join(System.tmp_dir!(), "breakwater-readme-#{System.unique_integer([:positive])}")
    File.mkdir_p!(tmp)
    previous = System.get_env("TMPDIR")
    System.put_env("TMPDIR", tmp)

    on_exit(fn ->
      Breakwater.detach_ledger("orders")
      if previous, do: System.put_env("TMPDIR", previous), else: System.delete_env("TMPDIR")
      File.rm_rf!(tmp)
    end)

    %{tmp: tmp}
  end

  test "the README's Elixir snippets run as written, in order", %{tmp: tmp} do
    blocks = Readme.blocks("elixir")
    assert length(blocks) >= 3

    binding =
      for block <- blocks, {expr, output} <- Readme.session(block, :elixir), reduce: [] do
        binding ->
          {result, binding} =
            try do
              Code.eval_string(expr, binding, file: "README.md")
            rescue
              e -> flunk("README snippet failed:\n#{expr}\n#{Exception.format(:error, e)}")
            end

          check_output(expr, output, result)
          binding
      end

    # The snippets did what they say: the spooled event reached the ledger through the
    # worker, and the file-backed ledger holds it.
    assert binding[:event] == "order 42 accepted"

    TestSubjects.wait_until(fn -> Breakwater.status("orders").accounting.delivered == 1 end)
    assert File.read!(Path.join(tmp, "my_ledger.log")) =~ "order 42 accepted\n"
  end

  # An output that reads as an Elixir term is compared with the result.
  defp check_output(_expr, nil, _result), do: :ok

  defp check_output(expr, output, result) do
    case Code.string_to_quoted(output) do
      {:ok, quoted} ->
        if Macro.quoted_literal?(quoted) do
          {expected, _} = Code.eval_quoted(quoted)
          assert result == expected, "README: #{expr} gave #{inspect(result)}, shows #{output}"
        end

      {:error, _} ->
        :ok
    end
  end
end
