defmodule Breakwater.Lifecycle do
  @moduledoc """
  How subjects end: removal by hand (`Breakwater.remove/1`) and idle expiry
  (`subject_idle_ms`), and the one function, `forget/1`, that clears what the layers
  above the native registry keep about a removed subject.

  ## Removal

  A subject can be removed only when nothing of it is spooled: no event in memory or
  on disk, no batch in flight. The native layer checks that and closes the subject's
  spool in one step, under the spool's lock, so an event can never be accepted into a
  subject that is being removed (a router that looked the subject up a moment before
  gets its event into the fresh subject of the same name instead).

  A subject with an attached ledger can be removed: its worker is stopped first (its
  batch in flight goes back to the spool), then the subject is removed, and the
  attachment is forgotten with a log line naming the ledger module. If the removal is
  refused because events are spooled, the ledger is attached again, so nothing is
  detached unless the subject is gone.

  ## Idle expiry

  With `subject_idle_ms` set, the timer removes every subject created by traffic (not
  configured) that nobody wrote to for that long, that rests (breaker closed,
  backpressure normal, not disabled or forced) and has nothing spooled. Subjects with
  an attached ledger do not expire. Reads (`check_backpressure/1`, `status/1`) do not
  count as use: a subject only read rests, and an unknown subject reads as resting.

  ## What is forgotten

  `forget/1` deletes the subject's history, events and recovery record, its event
  counts and log-limiter entry, clears its alerts, and leaves its cluster group (a
  shared subject, see `Breakwater.Cluster`). Node-wide totals keep what the
  subject added to them. History is not kept for removed subjects: subject names come
  from traffic, and keeping history per name ever seen would grow without bound. A
  spool that keeps resources of its own per subject releases them in
  `Breakwater.Native.remove/1` (native side, through `Subject::prepare_removal`) and
  here.
  """
  require Breakwater.Log, as: Log

  alias Breakwater.{Ledgers, Native}

  @doc """
  Removes `subject` (a normalised binary): `:ok`, `{:error, :spooled}` while events
  are spooled or in flight, `{:error, :unknown_subject}`.
  """
  @spec remove(binary) :: :ok | {:error, :spooled | :unknown_subject}
  def remove(subject) do
    case Ledgers.attachment(subject) do
      nil ->
        with :ok <- Native.remove(subject), do: forget(subject)

      {module, opts} ->
        # The worker would recreate the subject (it writes): stop it first; its batch in
        # flight goes back to the spool.
        :ok = Ledgers.detach(subject)

        case Native.remove(subject) do
          :ok ->
            Log.info(
              "breakwater removed #{inspect(subject)} and detached its ledger #{inspect(module)}"
            )

            forget(subject)

          {:error, _} = error ->
            # Not removed: attached again, as it was.
            _ = Ledgers.attach(subject, module, opts)
            error
        end
    end
  end

  @doc """
  Removes the subjects idle for `idle_ms` (see the moduledoc); returns their names.
  """
  @spec expire_idle(pos_integer) :: [binary]
  def expire_idle(idle_ms) do
    removed = Native.expire_idle(idle_ms, Ledgers.subjects())
    Enum.each(removed, &forget/1)
    removed
  end

  @doc """
  Clears everything the Elixir layer keeps about `subject`, which the native layer has
  removed: history, events, recovery record, counts, log-limiter entry, alerts.
  """
  @spec forget(binary) :: :ok
  def forget(subject) do
    safely(fn -> Breakwater.History.forget(subject) end)
    safely(fn -> Breakwater.LogLimiter.forget(subject) end)
    safely(fn -> Breakwater.Alerts.forget(subject) end)
    Breakwater.Cluster.refresh(subject)
    :ok
  end

  defp safely(fun) do
    fun.()
  rescue
    # A table is gone (a double fault): nothing to clear in it.
    ArgumentError -> :ok
  end
end
