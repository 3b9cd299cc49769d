defmodule Breakwater.Cluster.Supervisor do
  @moduledoc false
  # Breakwater's `pg` scope, the receiver and the membership process, `rest_for_one`:
  # the scope holds the receiver's memberships, and the membership process joins the
  # receiver's pid; so when the scope restarts both others restart, and when the
  # receiver restarts the membership process restarts and joins the new pid to its
  # groups. When the membership process alone dies, it starts over from the policies.
  #
  # A child is started only once its predecessor is gone: when this supervisor is
  # killed, its children die a moment after it (the exit signal reaches them
  # asynchronously), and the scope's named ETS table is deleted a moment after the
  # scope; a restart in between would find the name taken, fail, and burn the restart
  # intensity of the supervisors above in a tight loop.
  use Supervisor

  @wait_ms 5_000

  @doc false
  def start_link(opts), do: Supervisor.start_link(__MODULE__, opts, name: __MODULE__)

  @impl true
  def init(_opts) do
    scope = Breakwater.Cluster.scope()

    children = [
      %{id: scope, start: {__MODULE__, :start_scope, [scope]}},
      Breakwater.Cluster,
      Breakwater.Cluster.Membership
    ]

    Supervisor.init(children, strategy: :rest_for_one, max_restarts: 100, max_seconds: 10)
  end

  @doc false
  # Starts the pg scope once the previous one and its table are gone.
  def start_scope(scope) do
    await(fn -> Process.whereis(scope) == nil and :ets.info(scope) == :undefined end)
    :pg.start_link(scope)
  end

  @doc false
  # Waits (at most 5 s) until no process is registered as `name`.
  def await_name(name), do: await(fn -> Process.whereis(name) == nil end)

  defp await(free?, waited \\ 0) do
    cond do
      free?.() -> :ok
      waited >= @wait_ms -> :ok
      true -> Process.sleep(1) && await(free?, waited + 1)
    end
  end
end
