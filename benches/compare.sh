#!/usr/bin/env bash
# Before and after, in one time window: the BEAM bench's hot-path measurements on a
# scratch clone of an earlier revision and on this tree, run alternately, with the same
# bench code (this tree's benches/ is copied into the clone). `make bench-compare`.
#
#   benches/compare.sh REV        # e.g. the commit before a change
#
# Environment: ROUNDS (default 3: before, after, before, after, ...), ONLY (the
# measurements, ids of benches/support/specs.ex). Writes target/bench-compare/: each
# run's results (*.bin) and compare.md (best of the rounds, side by side), which
# `make bench-beam` puts into docs/benchmarks.md.
set -euo pipefail

rev=${1:?usage: benches/compare.sh REVISION}
rounds=${ROUNDS:-3}
only=${ONLY:-nif_check,check,admit,record,nif_record,nif_record_latency,record_latency}
root=$(pwd)
clone=$root/target/bench-before
out=$root/target/bench-compare
sha=$(git rev-parse --verify "$rev^{commit}")

rm -rf "$clone" "$out"
mkdir -p "$out"
git clone --quiet --no-checkout "$root" "$clone"
git -C "$clone" checkout --quiet "$sha"
cp benches/beam_bench.exs "$clone/benches/"
cp benches/support/*.ex "$clone/benches/support/"

# The clone's own build (its NIF into its priv/), with a target dir of its own.
(cd "$clone" && CARGO_TARGET_DIR="$root/target/bench-before-target" MIX_ENV=bench mix compile >/dev/null)
MIX_ENV=bench mix compile >/dev/null

for i in $(seq "$rounds"); do
  echo "round $i/$rounds: before ($(git rev-parse --short "$sha"))"
  (cd "$clone" && MIX_ENV=bench mix run benches/beam_bench.exs --only "$only" --terms "$out/before-$i.bin")
  echo "round $i/$rounds: after (this tree)"
  MIX_ENV=bench mix run benches/beam_bench.exs --only "$only" --terms "$out/after-$i.bin"
done

elixir benches/compare.exs "$out" "$(git log -1 --format='%h %s' "$sha" | cut -c1-72)" | tee "$out/compare.md"
