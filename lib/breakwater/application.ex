defmodule Breakwater.Application do
  @moduledoc """
  Starts Breakwater: validates the application environment (an invalid `sys.config`
  stops the start with a message naming each key, value and expectation), creates or
  reconfigures the native registry (at the VM's first start, opening the spool and
  recovering what `spool_dir` holds, and logging what recovery found), then starts the
  supervision tree:

  ```text
  Breakwater.Supervisor (one_for_one)
  ├── Breakwater.Tables.A            ETS keeper: owns the tables, or is their heir
  ├── Breakwater.Tables.B            ETS keeper: the other one
  ├── Breakwater.Alerts              alert manager (alarm_handler); its state is in ETS
  ├── Breakwater.Spool.Keeper       spool upkeep: fsync, released files, pool retries
  ├── Breakwater.Ticker              timer: time-based transitions, idle sweep, reclamation, log summary
  ├── Breakwater.Cluster.Supervisor  (rest_for_one) the cluster:
  │   ├── Breakwater.Cluster.Scope       OTP pg scope: the groups of nodes and shared subjects
  │   ├── Breakwater.Cluster             receiver: applies the breaker opens of peers
  │   └── Breakwater.Cluster.Membership  joins the receiver to its groups, watches the nodes
  ├── Breakwater.TaskSupervisor      runs call/3 functions and ledger calls under a timeout
  ├── Breakwater.Ledgers             (rest_for_one) the ledger workers:
  │   ├── Breakwater.Ledger.Names        Registry: subject → worker
  │   ├── Breakwater.Ledger.Supervisor   DynamicSupervisor of Breakwater.Ledger.Worker
  │   └── Breakwater.Ledger.Attacher     starts a worker for every attachment
  ├── Breakwater.Metrics.Scrape      renders /metrics at most once a second, shared by scrapers
  └── Breakwater.HTTP                /metrics and /health on inets httpd (only if `http` is set)
  ```

  then applies the per-subject policies of the `subjects` key and attaches the
  ledgers of the `ledgers` key.

  ## Any one process may die

  The top supervisor is `one_for_one`: every child is independent, and each keeps
  what must outlive it somewhere that does not die with it. Killing any one process
  restarts it alone, with its state, and the application keeps running:

  | process killed | what its restart costs |
  |---|---|
  | a table keeper | nothing: the other keeper holds every table (owner or heir), and the restarted one becomes the heir |
  | `Alerts` | transitions cast to it while it was down are re-read from the native state; raised alarms and armed escalations are in ETS |
  | `Spool.Keeper` | a round of upkeep late (the spool itself lives in the native layer) |
  | `Ticker` | one timer visit late; a sweep or summary may come early |
  | `Cluster.Scope`, `Cluster`, `Cluster.Membership`, their supervisor | the groups are joined again from the policies; a peer's breaker open sent while the receiver was down is missed (this node then opens on its own failures) |
  | `TaskSupervisor` | `call/3` functions and ledger writes running under it fail (recorded as failures; a write's batch is delivered again) |
  | `Ledger.Names` | every ledger worker is restarted (their batches in flight are delivered again) |
  | `Ledger.Supervisor`, a worker | the workers (or that one) are restarted and re-attached; batches in flight are delivered again |
  | `Ledgers`, `Attacher` | the workers are started again from the attachment list |
  | `Metrics.Scrape` | the next scrape renders anew |
  | `HTTP` | the listener is restarted on the same port; connections open at that moment are closed |

  Policies live in the native layer (`Breakwater.PolicyStore`), which no process
  owns; the native registry, its counters and spools live as long as the VM.
  Attachments are in the `breakwater_ledgers` table. Only the VM dying restarts from
  disk.

  On stop, the ledger workers are stopped first (their batches in flight go back to
  the spool); nothing needs writing out, since every event accepted is in the spool's
  files already (with `{:fsync, _}` durability they are synced to disk once more).
  Each step is guarded: a missing process never stops the others.
  """
  use Application
  require Breakwater.Log, as: Log

  alias Breakwater.{Config, Native, Policy}

  @log_filter :breakwater_alarm_reports

  @impl true
  def start(_type, _args) do
    with {:ok, config} <- load_config(),
         :ok <- init_native(config),
         {:ok, sup} <- start_tree(config) do
      case configure_subjects(config) do
        :ok ->
          install_log_filter()
          {:ok, sup}

        {:error, _} = error ->
          Supervisor.stop(sup)
          error
      end
    end
  end

  defp load_config do
    case Config.load(Application.get_all_env(:breakwater)) do
      {:ok, config} ->
        {:ok, config}

      {:error, reasons} ->
        message = "invalid :breakwater configuration:\n" <> Config.format_errors(reasons)
        Log.error(message)
        {:error, {:invalid_configuration, message}}
    end
  end

  defp init_native(config) do
    native = %{
      max_subjects: config.max_subjects,
      ring_pool: Map.new(config.ring_pool),
      default_policy: Policy.to_native(config.default_policy),
      reclaim_grace_ms: config.reclaim_grace_ms,
      spool: %{
        dir: config.spool_dir,
        durability: config.durability,
        owner: config.spool_owner || default_owner(),
        adopt: config.spool_adopt,
        disk_max_bytes: config.disk_max_bytes
      }
    }

    case Native.init(native) do
      {:ok, {reports, suppressed}} ->
        Breakwater.Spool.Keeper.log_reports(reports, suppressed)

      :ok ->
        :ok

      {:error, reasons} ->
        message =
          "invalid :breakwater configuration:\n" <>
            Config.format_errors(Enum.map(reasons, &native_reason(&1, config)))

        Log.error(message)
        {:error, {:invalid_configuration, message}}
    end
  end

  # Whose spool files these are: this node and the application embedding Breakwater
  # (the release's name, or the Mix project's), so that two nodes or two projects that
  # share a directory never replay each other's events.
  defp default_owner do
    "#{node()}/#{System.get_env("RELEASE_NAME") || mix_app() || :breakwater}"
  end

  # The Mix project's application, when running under Mix (not in a release or a
  # plain `erl`, where Mix may be on the code path without running).
  defp mix_app do
    if Code.ensure_loaded?(Mix.Project) and is_pid(Process.whereis(Mix.ProjectStack)),
      do: Mix.Project.config()[:app]
  end

  defp start_tree(config) do
    :persistent_term.put({Breakwater, :limits}, %{
      history_limit: config.history_limit,
      events_limit: config.events_limit
    })

    :persistent_term.put({Breakwater, :config}, config)
    Breakwater.Telemetry.refresh()

    children =
      Breakwater.Tables.child_specs() ++
        [
          Breakwater.Alerts,
          {Breakwater.Spool.Keeper, interval_ms: keeper_interval(config.durability)},
          {Breakwater.Ticker, tick_ms: config.tick_ms},
          Supervisor.child_spec(Breakwater.Cluster.Supervisor, type: :supervisor),
          {Task.Supervisor, name: Breakwater.TaskSupervisor},
          Supervisor.child_spec(Breakwater.Ledgers, type: :supervisor),
          Breakwater.Metrics.Scrape
        ] ++ http_children(config.http)

    # Independent children: one restarting never restarts another. The intensity lets
    # processes be killed one after another (ten a second, for ten seconds) without
    # stopping the application; a child that cannot start at all still exhausts it
    # at once, and stops the application.
    Supervisor.start_link(children,
      strategy: :one_for_one,
      max_restarts: 100,
      max_seconds: 10,
      name: Breakwater.Supervisor
    )
  end

  defp keeper_interval({:fsync, ms}), do: ms
  defp keeper_interval(_durability), do: 1_000

  # The HTTP endpoint (off unless `http` is configured) starts last, once everything it
  # reports on is up.
  defp http_children(nil), do: []
  defp http_children(http), do: [{Breakwater.HTTP, http}]

  defp configure_subjects(config) do
    configured = Map.keys(config.subjects) ++ Map.keys(config.ledgers)

    # The native registry outlives an application restart; policies set at run time do
    # not: subjects the configuration does not name go back to the default policy (and
    # to the room of subjects created by traffic).
    for subject <- Native.subjects(), subject not in configured do
      Native.reset_policy(subject)
      Breakwater.Cluster.refresh(subject)
    end

    with :ok <- each(config.subjects, &configure_subject/1) do
      each(config.ledgers, &attach_ledger/1)
    end
  end

  defp configure_subject({subject, policy}) do
    case Breakwater.put_policy(subject, policy) do
      :ok ->
        :ok

      {:error, reasons} ->
        {:error, Config.format_errors(Enum.map(reasons, &subject_reason(&1, subject, policy)))}
    end
  end

  defp attach_ledger({subject, {module, opts}}) do
    case Breakwater.attach_ledger(subject, module, opts) do
      :ok ->
        :ok

      {:error, reason} ->
        {:error, Config.format_errors([ledger_reason(reason, subject, module, opts)])}
    end
  end

  # Errors of the start as `Breakwater.Config` reasons ({path, value, expected}), so
  # that every message names the key, the value and what is expected.

  defp native_reason({key, expected}, config) when is_atom(key) and is_binary(expected) do
    case Map.fetch(config, key) do
      {:ok, value} -> {[key], value, expected}
      :error -> {[:default_policy, key], Map.get(config.default_policy, key), expected}
    end
  end

  defp native_reason(other, _config), do: {[], other, "a configuration the native core accepts"}

  defp subject_reason({:too_many_subjects, max}, subject, _policy),
    do: {[:subjects], subject, "at most max_subjects (#{max}) subjects in all"}

  defp subject_reason({key, expected}, subject, policy) when is_atom(key) and is_binary(expected),
    do: {[:subjects, subject, key], Map.get(policy, key), expected}

  defp subject_reason(other, subject, _policy),
    do: {[:subjects, subject], other, "a policy the native core accepts"}

  @ledger_expected "a module implementing Breakwater.Ledger (write_batch/2 and health_check/1)"

  defp ledger_reason({:invalid_ledger, _}, subject, module, _opts) do
    why =
      case Code.ensure_loaded(module) do
        {:module, _} -> "#{inspect(module)} does not export both"
        {:error, reason} -> "#{inspect(module)} cannot be loaded: #{reason}"
      end

    {[:ledgers, subject], module, "#{@ledger_expected}; #{why}"}
  end

  defp ledger_reason({:invalid_option, key, value}, subject, _module, _opts) do
    first..last = Keyword.fetch!(Breakwater.ledger_options(), key)
    {[:ledgers, subject, key], value, "an integer from #{first} to #{last}"}
  end

  defp ledger_reason({:unknown_option, key}, subject, module, opts) do
    {[:ledgers, subject], {module, opts},
     "options #{ledger_option_names()} only (#{inspect(key)} is not one)"}
  end

  defp ledger_reason(:already_attached, subject, module, _opts) do
    {[:ledgers, subject], module,
     "one ledger per subject (#{inspect(subject)} has one attached already)"}
  end

  defp ledger_reason({:too_many_subjects, max}, subject, _module, _opts),
    do: {[:ledgers], subject, "at most max_subjects (#{max}) subjects in all"}

  defp ledger_reason({:invalid_options, _}, subject, module, opts) do
    {[:ledgers, subject], {module, opts},
     "{module, opts} with opts a keyword list of #{ledger_option_names()}"}
  end

  defp ledger_reason(other, subject, module, opts) do
    {[:ledgers, subject], {module, opts},
     "a ledger whose worker starts (it did not: #{inspect(other)})"}
  end

  defp ledger_option_names,
    do: Breakwater.ledger_options() |> Keyword.keys() |> Enum.join(", ")

  defp each(entries, fun) do
    Enum.reduce_while(entries, :ok, fn entry, :ok ->
      case fun.(entry) do
        :ok ->
          {:cont, :ok}

        {:error, message} ->
          Log.error("invalid :breakwater configuration: " <> message)
          {:halt, {:error, {:invalid_configuration, message}}}
      end
    end)
  end

  # OTP's default alarm handler reports every alarm set and cleared; Breakwater's are
  # announced by their transition's line already (see Breakwater.Alerts).
  defp install_log_filter do
    case :logger.add_primary_filter(@log_filter, {&Breakwater.Alerts.log_filter/2, nil}) do
      :ok -> :ok
      {:error, {:already_exist, _}} -> :ok
      {:error, _} -> :ok
    end
  end

  @impl true
  def prep_stop(state) do
    # Ledger workers first: their batches in flight go back to the spool...
    guarded("stop the ledger workers", &Breakwater.Ledgers.stop_all/0)

    # ...and with fsync durability, the spool files are written to disk once more.
    guarded("sync the spool", fn ->
      with {:fsync, _} <- :persistent_term.get({Breakwater, :config}).durability,
           {:error, message} <- Native.spool_sync() do
        Log.error("breakwater could not sync its spool at stop: #{message}")
      end
    end)

    state
  end

  @impl true
  def stop(_state) do
    :logger.remove_primary_filter(@log_filter)
    :ok
  end

  defp guarded(what, fun) do
    fun.()
  catch
    kind, reason ->
      Log.error("breakwater could not #{what} at stop: #{inspect({kind, reason})}")
  end
end
