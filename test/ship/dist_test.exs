defmodule Breakwater.Ship.DistTest do
  # `make dist` for Erlang teams: the OTP library tree on ERL_LIBS of a plain `erl`
  # node started with `-config sys.config` (the README's), running the README's Erlang
  # examples and then its Elixir ones, as a reader would, in order. The node's own log
  # events print the same before and after Breakwater starts.
  use ExUnit.Case, async: false

  alias Breakwater.{Readme, Ship}

  @moduletag :ship
  @moduletag timeout: 600_000

  # Runs on the plain node: loads the README's modules, starts Breakwater, evaluates
  # the shell sessions (Erlang, then Elixir) and writes what happened to a file.
  @runner ~S"""
  -module(readme_runner).
  -export([main/1]).

  main([SnippetsFile, ResultFile]) ->
      {ok, _} = timer:apply_after(240000, erlang, halt, [3]),
      {ok, [#{modules := Modules, shell := Shell, elixir := Elixir}]} =
          file:consult(SnippetsFile),
      {ok, _} = application:ensure_all_started(sasl),
      probe("before"),
      Loaded = [load_snippet(Name, Src) || {Name, Src} <- Modules],
      Started = application:ensure_all_started(breakwater),
      probe("after"),
      {ShellResults, _} = lists:mapfoldl(fun eval_erlang/2, erl_eval:new_bindings(), Shell),
      {ElixirResults, _} = lists:mapfoldl(fun eval_elixir/2, [], Elixir),
      Delivered = [wait_delivered(S, 1) || S <- [<<"ledger">>, <<"orders">>]],
      Result = #{loaded => Loaded,
                 started => show(Started),
                 shell => ShellResults,
                 elixir => ElixirResults,
                 delivered => Delivered,
                 default_spool_dir => 'Elixir.Breakwater.Config':default_spool_dir(),
                 priv_dir => code:priv_dir(breakwater)},
      ok = file:write_file(ResultFile, io_lib:format("~p.~n", [Result])),
      halt(0).

  probe(Label) ->
      io:format("~~~~ probe ~s~n", [Label]),
      logger:notice(#{probe => notice, text => "x"}),
      logger:info(#{probe => info}),
      logger:warning("probe ~p", [warning]),
      alarm_handler:set_alarm({probe_alarm, "disk"}),
      alarm_handler:clear_alarm(probe_alarm),
      % A call after the (asynchronous) alarm events: they have been logged on return.
      _ = alarm_handler:get_alarms(),
      [catch logger_std_h:filesync(Id)
       || #{id := Id, module := logger_std_h} <- logger:get_handler_config()],
      io:format("~~~~ end ~s~n", [Label]).

  load_snippet(Name, Src) ->
      File = atom_to_list(Name) ++ ".erl",
      ok = file:write_file(File, Src),
      case compile:file(File, [binary, return_errors]) of
          {ok, Name, Bin} -> {module, Name} = code:load_binary(Name, File, Bin), Name;
          {ok, Name, Bin, _Warnings} -> {module, Name} = code:load_binary(Name, File, Bin), Name;
          Error -> {Name, show(Error)}
      end.

  eval_erlang({Expr, Expected}, Bindings) ->
      try
          {ok, Tokens, _} = erl_scan:string(binary_to_list(Expr)),
          {ok, Exprs} = erl_parse:parse_exprs(Tokens),
          {value, Value, NewBindings} = erl_eval:exprs(Exprs, Bindings),
          {{Expr, check(Value, expected(Expected))}, NewBindings}
      catch
          Class:Reason:Stack -> {{Expr, {error, show({Class, Reason, Stack})}}, Bindings}
      end.

  eval_elixir({Expr, _Expected}, Binding) ->
      try 'Elixir.Code':eval_string(Expr, Binding) of
          {_Value, NewBinding} -> {{Expr, ok}, NewBinding}
      catch
          Class:Reason:Stack ->
              Text = 'Elixir.Exception':format(Class, Reason, Stack),
              {{Expr, {error, Text}}, Binding}
      end.

  % The output shown in the README, when it reads as an Erlang term.
  expected(none) -> none;
  expected(Text) ->
      case erl_scan:string(binary_to_list(Text) ++ ".") of
          {ok, Tokens, _} ->
              case erl_parse:parse_term(Tokens) of
                  {ok, Term} -> {term, Term};
                  _ -> none
              end;
          _ -> none
      end.

  check(Value, Expected) ->
      case {has_nil(Value), Expected} of
          {true, _} -> {nil_in, show(Value)};
          {false, none} -> ok;
          {false, {term, Value}} -> ok;
          {false, {term, Other}} -> {mismatch, show(Value), show(Other)}
      end.

  has_nil(nil) -> true;
  has_nil(M) when is_map(M) -> has_nil(maps:to_list(M));
  has_nil([H | T]) -> has_nil(H) orelse has_nil(T);
  has_nil(T) when is_tuple(T) -> has_nil(tuple_to_list(T));
  has_nil(_) -> false.

  wait_delivered(Subject, N) -> wait_delivered(Subject, N, 400).

  wait_delivered(Subject, N, 0) -> {Subject, timeout, delivered(Subject), N};
  wait_delivered(Subject, N, Tries) ->
      case delivered(Subject) of
          D when D >= N -> {Subject, D};
          _ -> timer:sleep(25), wait_delivered(Subject, N, Tries - 1)
      end.

  delivered(Subject) ->
      #{accounting := #{delivered := D}} = 'Elixir.Breakwater':status(Subject),
      D.

  show(Term) -> iolist_to_binary(io_lib:format("~tp", [Term])).
  """

  setup_all do
    tmp = Ship.tmp_dir!("bwship-dist")
    dist = Path.join(tmp, "dist")
    Ship.run!("make", ["--no-print-directory", "dist", "DIST=#{dist}"], cd: Ship.root())
    on_exit(fn -> File.rm_rf!(tmp) end)
    %{tmp: tmp, dist: dist, lib: Path.join(dist, "lib")}
  end

  defp erl!(ctx, dir, args) do
    Ship.run!("erl", args,
      cd: dir,
      env: [{"ERL_LIBS", ctx.lib}, {"TMPDIR", dir}, {"MIX_ENV", nil}, {"ERL_AFLAGS", nil}]
    )
  end

  test "the tree holds breakwater, elixir and logger, each with ebin and priv", %{lib: lib} do
    apps = lib |> File.ls!() |> Enum.sort()
    assert ["breakwater-0.1.0", "elixir-" <> _, "logger-" <> _] = apps

    for app <- apps do
      assert File.dir?(Path.join([lib, app, "ebin"])), "#{app} has no ebin"
      assert File.dir?(Path.join([lib, app, "priv"])), "#{app} has no priv"
      [name | _] = String.split(app, "-")
      assert File.exists?(Path.join([lib, app, "ebin", name <> ".app"]))
    end

    assert File.exists?(Path.join(lib, "breakwater-0.1.0/priv/native/libbreakwater_nif.so"))
  end

  test "plain erl -config runs the README: logging unchanged, undefined not nil", ctx do
    dir = Ship.tmp_dir!("bwship-readme-erl")
    on_exit(fn -> File.rm_rf!(dir) end)

    blocks = Enum.map(Readme.blocks("erlang"), &String.trim_trailing/1)
    [config] = Enum.filter(blocks, &String.starts_with?(&1, "[{breakwater"))
    sources = Enum.filter(blocks, &String.starts_with?(&1, "-module("))
    sessions = Enum.filter(blocks, &(&1 =~ ~r/^\d+> /m))
    assert length(sources) >= 2 and length(sessions) >= 2

    modules =
      for src <- sources do
        [_, name] = Regex.run(~r/^-module\(([a-z_]+)\)\./, src)
        {String.to_atom(name), src}
      end

    snippets = %{
      modules: modules,
      shell: Enum.flat_map(sessions, &erl_session/1),
      elixir: for(b <- Readme.blocks("elixir"), {e, o} <- Readme.session(b, :elixir), do: {e, o})
    }

    File.write!(Path.join(dir, "sys.config"), config <> "\n")
    File.write!(Path.join(dir, "snippets.term"), :io_lib.format("~p.~n", [snippets]))
    File.write!(Path.join(dir, "readme_runner.erl"), @runner)
    Ship.run!("erlc", ["readme_runner.erl"], cd: dir)

    out =
      erl!(ctx, dir, [
        "-noshell",
        "-config",
        "sys",
        "-pa",
        dir,
        "-run",
        "readme_runner",
        "main",
        "snippets.term",
        "result.term"
      ])

    assert {:ok, [result]} = :file.consult(String.to_charlist(Path.join(dir, "result.term"))),
           "the node wrote no result:\n#{Ship.tail(out)}"

    # The README's modules compiled and Breakwater started on the README's sys.config
    # (whose ledger is one of them).
    assert result.loaded == Enum.map(modules, &elem(&1, 0))
    assert result.started =~ ~r/^\{ok,/

    for {expr, outcome} <- result.shell,
        do: assert(outcome == :ok, "README (Erlang) #{expr}: #{inspect(outcome)}")

    for {expr, outcome} <- result.elixir,
        do: assert(outcome == :ok, "README (Elixir) #{expr}: #{inspect(outcome)}")

    # The sessions ran every expression of the README, in order.
    assert length(result.shell) == length(snippets.shell)
    assert length(result.elixir) == length(snippets.elixir)

    # The event routed from Erlang reached the configured ledger through its worker;
    # the one spooled from Elixir reached the ledger attached at run time.
    assert result.delivered == [{"ledger", 1}, {"orders", 1}]
    ledger_file = File.read!(Path.join(dir, "my_ledger.log"))
    assert ledger_file |> String.split("\n", trim: true) |> Enum.uniq() == ["order 42 accepted"]

    # The NIF and the default spool are the tree's own.
    assert List.to_string(result.priv_dir) == Path.join(ctx.lib, "breakwater-0.1.0/priv")
    assert result.default_spool_dir == {:ok, Path.join(ctx.dist, "var/breakwater_spool")}

    # The node's own log events print the same before and after Breakwater started.
    before = probe_output(out, "before")
    assert before =~ "probe: notice"
    assert before =~ "probe warning"
    assert before =~ "probe_alarm"
    assert probe_output(out, "after") == before
  end

  test "a bad ledger in sys.config stops the start with key, value and expectation", ctx do
    dir = Ship.tmp_dir!("bwship-bad-config")
    on_exit(fn -> File.rm_rf!(dir) end)

    cases = [
      {~S|{ledgers, [{<<"ledger">>, {no_such_ledger, []}}]}|,
       ~S|ledgers."ledger": got :no_such_ledger, expected a module implementing Breakwater.Ledger (write_batch/2 and health_check/1); :no_such_ledger cannot be loaded: nofile|},
      {~S|{ledgers, [{<<"ledger">>, {lists, [{batch_size, 0}]}}]}|,
       ~S|ledgers."ledger".batch_size: got 0, expected an integer from 1 to 10000|},
      {~S|{ledgers, [{<<"ledger">>, {lists, [{colour, blue}]}}]}|,
       ~S|ledgers."ledger": got {:lists, [colour: :blue]}, expected options batch_size, poll_ms only (:colour is not one)|}
    ]

    for {entry, message} <- cases do
      File.write!(Path.join(dir, "bad.config"), "[{breakwater, [#{entry}]}].\n")

      out =
        erl!(ctx, dir, [
          "-noshell",
          "-config",
          "bad",
          "-eval",
          "io:format(\"~p~n\", [application:ensure_all_started(breakwater)]), halt()."
        ])

      assert out =~ "invalid :breakwater configuration: " <> message, out
      assert out =~ ~r/\{error,\s*\{breakwater,/
    end
  end

  # An Erlang shell session: [{expression, output shown or :none}].
  defp erl_session(block) do
    for {expr, output} <- Readme.session(block, :erlang), do: {expr, output || :none}
  end

  # What the node printed between the probe's markers, without timestamps.
  defp probe_output(out, label) do
    [_, rest] = String.split(out, "~~ probe #{label}\n", parts: 2)
    [segment, _] = String.split(rest, "~~ end #{label}\n", parts: 2)
    String.replace(segment, ~r/\d+-\w+-\d+::\d+:\d+:\d+\.\d+/, "<time>")
  end
end
