defmodule Breakwater.SpoolDamageTest do
  # What happens to the spool's files between two runs, or under a running node: files
  # truncated, corrupted or deleted; a spool_dir that cannot be used; a full disk (a
  # small tmpfs when this runs as root and can mount one, else a file-size limit on
  # the child VM, the same refusal from the kernel). Each runs in child VMs
  # (test/support/child_vm.ex) driven line by line: the native spool is opened once per
  # VM. Losses must be counted with their reason and logged once per segment file,
  # refusals answered {:reject, :spool_unavailable, _}, counted and logged once per
  # incident, and everything else delivered in order.
  use ExUnit.Case, async: false

  alias Breakwater.ChildVM

  @moduletag :fault
  @moduletag timeout: 600_000

  setup do
    root = Path.join(System.tmp_dir!(), "bw-damage-#{System.unique_integer([:positive])}")
    File.mkdir_p!(root)
    on_exit(fn -> File.rm_rf(root) end)
    %{root: root, dir: Path.join(root, "spool"), out: Path.join(root, "out")}
  end

  defp script(ctx, opts \\ []) do
    env = [
      {"BW_DIR", Keyword.get(opts, :dir, ctx.dir)},
      {"BW_OUT", ctx.out},
      {"BW_ROLE", "script"},
      {"BW_SCENARIO", Keyword.get(opts, :scenario, "overflow")},
      {"BW_DURABILITY", "crash"},
      {"BW_ROUND", "0"},
      {"BW_POOL_SEGMENTS", Integer.to_string(Keyword.get(opts, :segments, 64))}
    ]

    vm = ChildVM.start(env, Keyword.take(opts, [:wrap]))
    {_, vm} = ChildVM.await(vm, "ready")
    vm
  end

  defp enqueue(vm, from, to) do
    {line, vm} = ChildVM.command(vm, "enqueue #{from} #{to}", "enqueued")

    counts =
      for [k, v] <- Regex.scan(~r/(\w+)=(\d+)/, line, capture: :all_but_first),
          into: %{},
          do: {k, String.to_integer(v)}

    {counts, vm}
  end

  defp status(vm, ctx) do
    {_, vm} = ChildVM.command(vm, "status", "status")
    {:erlang.binary_to_term(File.read!(Path.join(ctx.out, "status"))), vm}
  end

  defp balanced?(a),
    do: a.enqueued == a.delivered + a.spooled_memory + a.spooled_disk + a.dropped + a.lost

  defp ids(lines), do: Enum.map(lines, fn "n" <> i -> String.to_integer(i) end)

  defp overflow_files(dir) do
    Path.join([dir, "overflow", "*.seg"]) |> Path.wildcard() |> Enum.sort()
  end

  defp truncate(path, size) do
    {:ok, f} = :file.open(String.to_charlist(path), [:read, :write, :raw, :binary])
    {:ok, _} = :file.position(f, size)
    :ok = :file.truncate(f)
    :ok = :file.close(f)
  end

  defp flip(path, at) do
    {:ok, f} = :file.open(String.to_charlist(path), [:read, :write, :raw, :binary])
    {:ok, <<b>>} = :file.pread(f, at, 1)
    :ok = :file.pwrite(f, at, <<Bitwise.bxor(b, 0x20)>>)
    :ok = :file.close(f)
  end

  test "truncated, corrupted and deleted segment files: counted, logged once per file, the rest delivered in order",
       ctx do
    vm = script(ctx)
    {%{"ok" => 3_000}, vm} = enqueue(vm, 0, 3_000)
    {st, vm} = status(vm, ctx)
    assert st.accounting.spooled_disk > 2_000
    {_, _} = ChildVM.kill9(vm)

    # Damage, between two runs: one overflow file cut to half, a record of another
    # and of a pool file corrupted, a third overflow file deleted.
    files = overflow_files(ctx.dir)
    assert length(files) > 30
    [cut, corrupt, deleted] = [Enum.at(files, 5), Enum.at(files, 10), Enum.at(files, 15)]
    truncate(cut, 6_400)
    flip(corrupt, 4_096 + 30)
    File.rm!(deleted)
    # A pool file holding events (state live in its header; the pool reuses the
    # segment freed last, so which slots hold events varies).
    pool_file =
      Path.join([ctx.dir, "pool", "*.seg"])
      |> Path.wildcard()
      |> Enum.sort()
      |> Enum.find(fn f -> match?(<<_::binary-12, 1::little-32, _::binary>>, File.read!(f)) end)

    flip(pool_file, 4_096 + 40)

    vm = script(ctx)
    {st, vm} = status(vm, ctx)
    lost = st.accounting.lost_by_reason
    assert lost.corrupt == 2
    assert lost.missing == 64, "a whole file of 64 events"
    assert lost.truncated in 1..63
    assert st.accounting.lost == lost.corrupt + lost.missing + lost.truncated
    assert balanced?(st.accounting)

    {_, vm} = ChildVM.command(vm, "drain", "drained")
    {st, vm} = status(vm, ctx)
    {0, vm} = ChildVM.halt(vm)
    log = ChildVM.log(vm)

    delivered = ids(ChildVM.lines(Path.join(ctx.out, "delivered")))
    assert delivered == Enum.sort(delivered), "delivered in order"
    assert length(delivered) + st.accounting.lost == 3_000
    assert length(Enum.uniq(delivered)) == length(delivered)
    assert {st.accounting.spooled_memory, st.accounting.spooled_disk} == {0, 0}
    assert balanced?(st.accounting)

    # Once per damaged file, with its reason; never once per event.
    assert length(Regex.scan(~r/counted as lost \(corrupt\)/, log)) == 2
    assert length(Regex.scan(~r/counted as lost \(truncated\)/, log)) == 1
    assert length(Regex.scan(~r/counted as lost \(missing\)/, log)) == 1
    assert log =~ Path.basename(cut)

    IO.puts(
      "\n[spool damage] 3 000 events, one overflow file cut short, one deleted, a record " <>
        "of an overflow file and of a pool file corrupted: #{st.accounting.lost} lost, all " <>
        "counted (truncated #{lost.truncated}, missing #{lost.missing}, corrupt " <>
        "#{lost.corrupt}), #{length(delivered)} delivered in order"
    )
  end

  test "an unusable spool_dir: the application starts, enqueue answers spool_unavailable",
       ctx do
    file = Path.join(ctx.root, "a-file")
    File.write!(file, "not a directory")
    vm = script(ctx, dir: Path.join(file, "spool"))
    {counts, vm} = enqueue(vm, 0, 5)
    assert counts == %{"ok" => 0, "spool_unavailable" => 5, "pool_exhausted" => 0}
    {st, vm} = status(vm, ctx)
    assert st.spool.available == false
    assert st.counters.rejected_spool_unavailable == 5
    assert st.accounting.dropped == 5
    assert balanced?(st.accounting)
    {_, vm} = ChildVM.kill9(vm)
    log = ChildVM.log(vm)
    assert log =~ ~r/spool directory .* is unusable .*not a directory/i
  end

  # A small tmpfs, when this runs as root and may mount; `nil` otherwise.
  defp tmpfs(ctx, name, size) do
    mnt = Path.join(ctx.root, name)
    File.mkdir_p!(mnt)

    with {"0\n", 0} <- System.cmd("id", ["-u"]),
         {_, 0} <-
           System.cmd("mount", ["-t", "tmpfs", "-o", "size=#{size}", "tmpfs", mnt],
             stderr_to_stdout: true
           ) do
      on_exit(fn -> System.cmd("umount", ["-l", mnt], stderr_to_stdout: true) end)
      mnt
    else
      _ -> nil
    end
  end

  # Fills `mnt` (or what is left of it, up to `bytes`) with a file; returns its path.
  defp fill(mnt, name, bytes) do
    path = Path.join(mnt, name)
    {:ok, f} = :file.open(String.to_charlist(path), [:write, :raw, :binary])
    chunk = :binary.copy(<<0>>, 65_536)

    Enum.reduce_while(1..div(bytes, 65_536), :ok, fn _, :ok ->
      case :file.write(f, chunk) do
        :ok -> {:cont, :ok}
        {:error, :enospc} -> {:halt, :ok}
      end
    end)

    :file.close(f)
    path
  end

  test "a disk that fills up during overflow: refused, counted, logged once; accepted events all delivered",
       ctx do
    case tmpfs(ctx, "full", "2m") do
      nil ->
        IO.puts("\n[spool damage] not root or no tmpfs: full disk tested with a file-size limit")
        full_disk_by_file_size_limit(ctx)

      mnt ->
        full_disk_on_tmpfs(ctx, mnt)
    end
  end

  defp full_disk_on_tmpfs(ctx, mnt) do
    # 1 MiB taken; the pool (16 segment files, 256 KiB on tmpfs's pages) and the
    # overflow files share the rest.
    filler = fill(mnt, "filler", 1_024 * 1_024)
    dir = Path.join(mnt, "spool")
    vm = script(ctx, dir: dir, segments: 16)
    {counts, vm} = enqueue(vm, 0, 20_000)
    assert counts["ok"] > 0
    assert counts["spool_unavailable"] > 0
    assert counts["ok"] + counts["spool_unavailable"] == 20_000
    {st, vm} = status(vm, ctx)
    assert st.counters.rejected_spool_unavailable == counts["spool_unavailable"]
    assert st.accounting.lost == 0
    assert balanced?(st.accounting)

    # Space returns: after the retry time, files are created again (300 events need
    # new overflow files, whatever room the current ones have left).
    File.rm!(filler)
    Process.sleep(600)
    {%{"ok" => 300}, vm} = enqueue(vm, 20_000, 20_300)
    {_, vm} = ChildVM.command(vm, "maintain", "maintained")
    {_, vm} = ChildVM.kill9(vm)
    log = ChildVM.log(vm)
    assert [_] = Regex.scan(~r/spool unavailable: cannot create/, log)
    assert log =~ "No space left on device"
    assert log =~ "spool available again"

    # A crash, then everything accepted is delivered.
    acked = ChildVM.lines(Path.join(ctx.out, "acks"))
    vm = script(ctx, dir: dir, segments: 16)
    {_, vm} = ChildVM.command(vm, "drain", "drained")
    {st, vm} = status(vm, ctx)
    ChildVM.kill9(vm)
    delivered = ChildVM.lines(Path.join(ctx.out, "delivered"))
    assert acked -- delivered == []
    assert st.accounting.lost == 0
    assert balanced?(st.accounting)

    IO.puts(
      "\n[spool damage] tmpfs of 2 MiB: #{counts["ok"]} accepted, " <>
        "#{counts["spool_unavailable"]} refused (spool_unavailable), all accepted delivered"
    )
  end

  defp full_disk_by_file_size_limit(ctx) do
    # Files may not exceed 5 KiB (dash counts 512-byte blocks): no segment file fits.
    vm = script(ctx, wrap: "trap '' XFSZ; ulimit -f 10")
    {counts, vm} = enqueue(vm, 0, 5)
    assert counts["spool_unavailable"] == 5
    {st, vm} = status(vm, ctx)
    assert st.spool.available == false
    assert balanced?(st.accounting)
    {_, vm} = ChildVM.kill9(vm)
    assert ChildVM.log(vm) =~ "spool unavailable"
  end

  test "the application starts on a full disk, refuses until space returns, then accepts",
       ctx do
    case tmpfs(ctx, "start-full", "1m") do
      nil ->
        IO.puts(
          "\n[spool damage] not root or no tmpfs: starting full tested with a file-size limit"
        )

        full_disk_by_file_size_limit(ctx)

      mnt ->
        filler = fill(mnt, "filler", 2 * 1_024 * 1_024)
        vm = script(ctx, dir: Path.join(mnt, "spool"), segments: 16)
        {counts, vm} = enqueue(vm, 0, 5)
        assert counts["spool_unavailable"] == 5
        {st, vm} = status(vm, ctx)
        assert st.spool.available == false
        assert st.spool.pool_missing > 0

        File.rm!(filler)
        Process.sleep(600)
        {_, vm} = ChildVM.command(vm, "maintain", "maintained")
        {%{"ok" => 5}, vm} = enqueue(vm, 5, 10)
        {st, vm} = status(vm, ctx)
        assert st.spool.available == true
        assert st.spool.pool_missing == 0
        assert balanced?(st.accounting)
        {_, vm} = ChildVM.kill9(vm)
        log = ChildVM.log(vm)
        assert log =~ ~r/spool unavailable: cannot create pool file.*No space left on device/
        assert log =~ "spool available again"
    end
  end
end
