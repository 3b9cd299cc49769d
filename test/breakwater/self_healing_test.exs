defmodule Breakwater.SelfHealingTest do
  # Any one Breakwater process may die: each process of the supervision tree is killed
  # in turn under traffic (routers enqueueing and admitting, ledgers that flap, the
  # spool overflowing to disk), and after each kill delivery resumes within a second,
  # the application keeps running, attached ledgers, policies and history are intact;
  # at the end no spooled event is lost and every counter is exact. Restarts the
  # application (with the HTTP endpoint on): async: false.
  use ExUnit.Case, async: false

  alias Breakwater.Ledger.Simulated, as: Ledger
  alias Breakwater.TestSubjects, as: T
  import Breakwater.TestSubjects, only: [wait_until: 1, wait_until: 2]

  @moduletag :capture_log
  @moduletag timeout: 600_000

  @warning 12_345
  @critical 54_321

  setup_all do
    case Ledger.start_link() do
      {:ok, _} -> :ok
      {:error, {:already_started, _}} -> :ok
    end

    # The HTTP endpoint is part of the tree under test.
    restart_app(http: [port: 0])
    on_exit(fn -> restart_app(http: nil) end)
    :ok
  end

  defp restart_app(env) do
    :ok = Application.stop(:breakwater)
    for {k, v} <- env, do: Application.put_env(:breakwater, k, v)
    {:ok, _} = Application.ensure_all_started(:breakwater)
  end

  # ---- the tree ------------------------------------------------------------------------

  # Every registered process under `sup`, depth first (supervisors included).
  defp named(sup) do
    Enum.flat_map(Supervisor.which_children(sup), fn
      {_id, pid, type, _} when is_pid(pid) ->
        own =
          case Process.info(pid, :registered_name) do
            {:registered_name, name} when is_atom(name) -> [name]
            _ -> []
          end

        own ++ if(type == :supervisor, do: named(pid), else: [])

      _ ->
        []
    end)
  end

  # What a kill targets: every registered process of the tree (the spool's keeper
  # among them: the spool itself lives in the native layer; the cluster's processes,
  # the pg scope, the receiver, the membership process and their supervisor, too), and
  # each ledger worker (registered through the Registry, not by name). Processes that
  # come and go (the tasks of the task supervisor) are not targets.
  defp targets(subjects) do
    for(name <- named(Breakwater.Supervisor), do: {:name, name}) ++
      Enum.map(subjects, &{:worker, &1})
  end

  defp whereis({:name, name}), do: Process.whereis(name)

  defp whereis({:worker, subject}) do
    case Registry.lookup(Breakwater.Ledger.Names, subject) do
      [{pid, _}] -> pid
      [] -> nil
    end
  catch
    _, _ -> nil
  end

  # What is not whole again: targets not running (the killed one must run as a new
  # process), the tables without a live heir. Empty when the tree is healed.
  defp unhealed(all, killed, old_pid) do
    pids = Map.new(all, &{&1, whereis(&1)})
    down = for {t, pid} <- pids, not (is_pid(pid) and Process.alive?(pid)), do: t
    same = if killed && pids[killed] == old_pid, do: [{:not_restarted, killed}], else: []
    down ++ same ++ if(tables_guarded?(), do: [], else: [:tables_without_heir])
  end

  defp wait_healed(all, killed, old_pid, before) do
    deadline = System.monotonic_time(:millisecond) + 10_000

    Stream.repeatedly(fn ->
      left = unhealed(all, killed, old_pid)
      if left != [] and System.monotonic_time(:millisecond) < deadline, do: Process.sleep(5)
      left
    end)
    |> Enum.find(&(&1 == [] or System.monotonic_time(:millisecond) >= deadline))
    |> case do
      [] ->
        :ok

      left ->
        flunk(
          "not healed after killing #{inspect(killed)}: #{inspect(left)}" <>
            stuck(Map.get(before, :pids, %{}), left)
        )
    end
  end

  # Where the processes that were running before the kill, and are not back yet,
  # are now: still alive (and in which call, with how many messages waiting) or gone.
  defp stuck(pids, left) do
    Enum.map_join(left, fn target ->
      case pids[target] do
        pid when is_pid(pid) ->
          info = Process.info(pid, [:status, :message_queue_len, :current_stacktrace])
          "\n  #{inspect(target)} was #{inspect(pid)}, now: #{inspect(info || :dead)}"

        _ ->
          ""
      end
    end)
  end

  defp tables_guarded? do
    owner = :ets.info(:router_backpressure_status_history, :owner)
    heir = :ets.info(:router_backpressure_status_history, :heir)
    is_pid(owner) and is_pid(heir) and owner != heir and Process.alive?(heir)
  end

  defp ets_owner, do: {:pid, :ets.info(:router_backpressure_status_history, :owner)}

  # Kills `pid` and returns once it is dead (an exit signal is delivered
  # asynchronously: right after `Process.exit/2` the process may still run).
  defp kill(pid) do
    ref = Process.monitor(pid)
    Process.exit(pid, :kill)
    assert_receive {:DOWN, ^ref, :process, ^pid, _}, 5_000
  end

  # ---- traffic -------------------------------------------------------------------------

  defp delivered(subjects),
    do: Enum.sum(for s <- subjects, do: Breakwater.status(s).accounting.delivered)

  # A router: enqueues `s:0`, `s:1`, ... into `s` and admits on `counter`, until told to
  # stop; answers how many of each were accepted.
  defp router(s, counter) do
    parent = self()

    spawn_link(fn ->
      loop = fn loop, i, admitted ->
        receive do
          :stop -> send(parent, {:routed, s, i, admitted})
        after
          0 ->
            assert Breakwater.enqueue(s, "#{s}:#{i}") == :ok
            admitted = if Breakwater.admit(counter) == :ok, do: admitted + 1, else: admitted
            if rem(i, 10) == 0, do: Process.sleep(1)
            loop.(loop, i + 1, admitted)
        end
      end

      loop.(loop, 0, 0)
    end)
  end

  test "killing any one process under traffic: delivery resumes within 1 s, nothing is lost" do
    subjects = for i <- 1..3, do: T.unique("heal-#{i}")
    counter = T.subject([], "heal-counter")
    historic = T.subject(warning_threshold: 10, critical_threshold: 20, stability_ms: 0)
    # A shared subject: the cluster processes and the pg scope are among the targets, and
    # after any kill the receiver is a member of the subject's group again.
    shared = T.subject([share: :breaker], "heal-shared")

    for s <- subjects do
      # A quota of one segment: the pool is soon out of reach, and events overflow to
      # overflow files while the ledger is down.
      :ok =
        Breakwater.configure(s,
          warning_threshold: @warning,
          critical_threshold: @critical,
          overflow: :disk,
          max_segments: 1,
          failure_threshold: 1_000_000,
          open_timeout_ms: 100
        )

      Ledger.set_mode(s, {:flapping, 150})
      :ok = Breakwater.attach_ledger(s, Ledger, batch_size: 50, poll_ms: 5)
    end

    # History written before the kills, which must survive them.
    for _ <- 1..20 do
      :ok = Breakwater.report_depth(historic, 25)
      :ok = Breakwater.report_depth(historic, 0)
    end

    history = Breakwater.History.history(historic)
    events = :router_intake_backpressure.get_backpressure_events(historic)
    assert length(history) >= 40
    ledgers = Enum.sort(for s <- subjects, do: {s, Ledger})

    routers = for s <- subjects, do: router(s, counter)
    overflow = overflow_watch(subjects)
    wait_until(fn -> delivered(subjects) > 1_000 end, 20_000)
    top = Process.whereis(Breakwater.Supervisor)

    all = targets(subjects)
    # The ETS owner and the Registry, several times in a row, on top of one kill each.
    kills =
      all ++
        List.duplicate(:ets_owner, 5) ++
        List.duplicate({:name, Breakwater.Ledger.Names}, 5) ++
        List.duplicate({:name, Module.concat(Breakwater.Ledger.Names, "PIDPartition0")}, 3)

    resumed_in =
      for target <- kills do
        target = if target == :ets_owner, do: ets_owner(), else: target
        pid = if match?({:pid, _}, target), do: elem(target, 1), else: whereis(target)
        assert is_pid(pid), "#{inspect(target)} is not running"
        before = delivered(subjects)
        pids = Map.new(all, &{&1, whereis(&1)})
        t0 = System.monotonic_time(:millisecond)
        kill(pid)

        wait_until(fn -> delivered(subjects) > before end, 10_000)
        resumed = System.monotonic_time(:millisecond) - t0

        killed = if match?({:pid, _}, target), do: nil, else: target
        wait_healed(all, killed, pid, %{pids: pids})

        # The application never stopped; what must outlive any process did.
        assert Process.whereis(Breakwater.Supervisor) == top
        assert Breakwater.ledgers() == ledgers
        wait_until(fn -> cluster_joined?(shared) end, 10_000)

        for s <- subjects do
          assert %{warning_threshold: @warning, critical_threshold: @critical} =
                   Breakwater.policy(s)

          d = :router_intake_backpressure.get_detailed_backpressure_status(s)
          assert d.thresholds.warning == @warning
        end

        assert Breakwater.History.history(historic) == history
        assert :router_intake_backpressure.get_backpressure_events(historic) == events
        assert {200, _} = liveness()
        {target, resumed}
      end

    IO.puts(
      "\n[self-healing] delivery resumed after each kill within (ms): " <>
        Enum.map_join(resumed_in, ", ", fn {t, ms} -> "#{label(t)} #{ms}" end)
    )

    for {target, ms} <- resumed_in,
        do: assert(ms <= 1_000, "delivery resumed #{ms} ms after killing #{label(target)}")

    # Stop the routers; with the ledgers up, everything spooled is delivered.
    for r <- routers, do: send(r, :stop)

    routed =
      for _ <- routers do
        assert_receive {:routed, s, n, admitted}, 10_000
        {s, n, admitted}
      end

    for s <- subjects, do: Ledger.set_mode(s, :up)

    for {s, n, _} <- routed do
      wait_until(fn -> Breakwater.status(s).accounting.delivered >= n end, 120_000)
      a = Breakwater.status(s).accounting
      assert a.enqueued == n
      assert a.dropped == 0 and a.lost == 0
      assert a.spooled_memory == 0 and a.spooled_disk == 0
      assert a.enqueued == a.delivered + a.spooled_memory + a.spooled_disk + a.dropped + a.lost
      assert a.delivered == n

      # Every event accepted reached the ledger (at least once).
      received = MapSet.new(Ledger.received(s))
      missing = Enum.reject(0..(n - 1), &MapSet.member?(received, "#{s}:#{&1}"))
      assert missing == [], "#{length(missing)} events of #{s} never delivered"
      assert Ledger.writes(s) - n <= a.redelivered
    end

    # Overflow files took part: events waited in them at some point.
    send(overflow, {:max, self()})
    assert_receive {:max_spooled_disk, max}, 5_000
    assert max > 0, "no event ever waited in an overflow file"

    # Counters are exact: every admission a router saw accepted was counted once.
    admitted = Enum.sum(for {_, _, a} <- routed, do: a)
    assert Breakwater.status(counter).counters.accepted == admitted

    for s <- subjects, do: :ok = Breakwater.detach_ledger(s)
  end

  test "killing the Registry or the ETS owner with no traffic, over and over, never stops the application" do
    top = Process.whereis(Breakwater.Supervisor)

    for _ <- 1..6 do
      names = Process.whereis(Breakwater.Ledger.Names)
      kill(names)
      wait_until(fn -> (p = Process.whereis(Breakwater.Ledger.Names)) && p != names end)
      {:pid, owner} = ets_owner()
      kill(owner)
      wait_until(&tables_guarded?/0)
    end

    assert Process.whereis(Breakwater.Supervisor) == top
    assert Application.started_applications() |> List.keymember?(:breakwater, 0)
  end

  test "a ledger worker that cannot start when the attacher starts is started once it can be" do
    s = T.unique("heal-retry")
    Ledger.set_mode(s, :up)
    :ok = Breakwater.attach_ledger(s, Ledger, batch_size: 10, poll_ms: 5)
    wait_until(fn -> is_pid(whereis({:worker, s})) end, 5_000)

    # The worker supervisor gone while the attacher starts: no worker can start (as when
    # the registry's partition is replaced under a restarting worker supervisor).
    :ok = Supervisor.terminate_child(Breakwater.Ledgers, Breakwater.Ledger.Supervisor)
    :ok = Supervisor.terminate_child(Breakwater.Ledgers, Breakwater.Ledger.Attacher)
    {:ok, attacher} = Supervisor.restart_child(Breakwater.Ledgers, Breakwater.Ledger.Attacher)
    assert whereis({:worker, s}) == nil

    # The supervisor back: the same attacher starts the worker, without a restart.
    {:ok, _} = Supervisor.restart_child(Breakwater.Ledgers, Breakwater.Ledger.Supervisor)
    wait_until(fn -> is_pid(whereis({:worker, s})) end, 5_000)
    assert Process.whereis(Breakwater.Ledger.Attacher) == attacher

    # And it delivers.
    :ok = Breakwater.enqueue(s, "after")
    wait_until(fn -> "after" in Ledger.received(s) end, 5_000)
    :ok = Breakwater.detach_ledger(s)
  end

  test "prep_stop never crashes, whatever is missing" do
    # The ledger subtree and the spool keeper gone: stopping must still go through.
    :ok = Supervisor.terminate_child(Breakwater.Supervisor, Breakwater.Ledgers)
    :ok = Supervisor.terminate_child(Breakwater.Supervisor, Breakwater.Spool.Keeper)

    try do
      assert Breakwater.Application.prep_stop(:state) == :state
    after
      {:ok, _} = Supervisor.restart_child(Breakwater.Supervisor, Breakwater.Spool.Keeper)
      {:ok, _} = Supervisor.restart_child(Breakwater.Supervisor, Breakwater.Ledgers)
    end
  end

  # The receiver runs and is a member of the shared subject's group and of the nodes.
  defp cluster_joined?(subject) do
    scope = Breakwater.Cluster.scope()
    receiver = Process.whereis(Breakwater.Cluster)

    is_pid(receiver) and receiver in :pg.get_members(scope, {:breaker, subject}) and
      receiver in :pg.get_members(scope, :nodes)
  rescue
    # The scope is restarting.
    ArgumentError -> false
  end

  # Samples the subjects' events in overflow files until asked for the most seen.
  defp overflow_watch(subjects) do
    spawn_link(fn ->
      loop = fn loop, max ->
        receive do
          {:max, to} -> send(to, {:max_spooled_disk, max})
        after
          10 ->
            now =
              Enum.sum(for s <- subjects, do: Breakwater.status(s).counters.spooled_disk_events)

            loop.(loop, max(max, now))
        end
      end

      loop.(loop, 0)
    end)
  end

  defp liveness do
    port = Breakwater.HTTP.port()
    url = ~c"http://127.0.0.1:#{port}/health/liveness"

    {:ok, {{_, code, _}, _, body}} =
      :httpc.request(:get, {url, []}, [timeout: 5_000], body_format: :binary)

    {code, body}
  end

  defp label({:name, name}), do: inspect(name)
  defp label({:worker, s}), do: "worker #{s}"
  defp label({:pid, _}), do: "ETS owner"
end
