# The BEAM bench of Breakwater's NIF paths: `make bench-beam`, i.e.
#
#     MIX_ENV=bench mix run benches/beam_bench.exs [--quick] [--no-doc] [--out FILE]
#                                                  [--only check,admit] [--terms FILE]
#
# --quick: 3 short runs per measurement (a smoke test; the figures are rough);
# --no-doc: print only; --out: write the document elsewhere than docs/benchmarks.md;
# --only: some measurements (ids of Breakwater.Bench.Specs), printed, no document;
# --terms: also write the results as an Erlang term (benches/compare.sh reads them).
# BENCH_CRITERION_DIR and BENCH_CORE_LOG override where criterion's results are read
# (target/criterion, target/bench-core.log).
#
# The measured code is compiled: benches/support/*.ex are compiled here (they are not in
# the Mix project's elixirc_paths), and every timed loop is a compiled tail-recursive
# function of Breakwater.Bench.Loops. Prints the results and (re)writes
# docs/benchmarks.md, with the criterion results of `make bench-core` when present.

# config/bench.exs gives every run its own spool directory, run-<OS pid>-<time>; remove
# those of runs whose VM is gone (never a bench running beside this one, on this
# machine). Where /proc is missing, nothing is removed.
with dir when is_binary(dir) <- Application.get_env(:breakwater, :spool_dir),
     true <- File.dir?("/proc/self") do
  for old <- Path.wildcard(Path.join(Path.dirname(dir), "run-*")),
      old != dir,
      [_, pid] <- [Regex.run(~r/^run-(\d+)-/, Path.basename(old))],
      not File.exists?("/proc/#{pid}"),
      do: File.rm_rf!(old)
end

support = Path.join(__DIR__, "support")

for file <- ~w(json.ex loops.ex specs.ex harness.ex peer.ex report.ex main.ex) do
  Code.require_file(file, support)
end

{opts, _, _} =
  OptionParser.parse(System.argv(),
    strict: [quick: :boolean, doc: :boolean, only: :string, out: :string, terms: :string]
  )

only =
  case opts[:only] do
    nil -> nil
    list -> list |> String.split(",", trim: true) |> Enum.map(&String.to_atom/1)
  end

run_opts =
  if opts[:quick],
    do: [runs: 3, target_ms: 40, only: only],
    else: [only: only]

doc =
  cond do
    opts[:doc] == false or only != nil -> nil
    opts[:out] -> opts[:out]
    true -> "docs/benchmarks.md"
  end

run_opts = [{:doc, doc}, {:terms, opts[:terms]} | run_opts]

Breakwater.Bench.Main.run(run_opts)
