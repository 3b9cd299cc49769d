defmodule Breakwater.Ledger.Worker do
  @moduledoc """
  Delivers one subject's spool to its `Breakwater.Ledger` module.

  The worker loops: ask the breaker (`admit_write`: the breaker alone decides, since
  draining is what relieves backpressure), take a batch with `Breakwater.drain/2`
  (overflow files are read back in order when the batch reaches them), write
  it in a supervised task under the policy's `call_timeout_ms`, then `ack` it when the
  ledger returned `:ok` or `nack` it otherwise, and record the outcome with its
  latency and the admission's token, so that the outcome counts for the admission it
  answers (a write admitted as a half-open probe answers that probe; one admitted
  before the breaker opened is late). Its latencies feed the subject's latency signal;
  its writes are not router calls, so they are never counted in flight. One call is
  in flight at a time, and the worker waits for it with a timer, never blocking: it
  answers `info/1` and shuts down promptly whatever the ledger does.

  Health checks (`health_check/1` of the ledger module) keep detection and recovery
  independent of traffic:

  - closed and idle (nothing written for `health_check_ms`): a check every
    `health_check_ms`, recorded like a call; after a failed check the next comes after
    a fifth of the period, so with the defaults (5 failures, 1 s) a silent outage opens
    the breaker in under 2 s;
  - open: a check every `health_check_ms`, reported by `info/1` (the open time still
    decides when probes start);
  - half-open: the worker's probe is its next batch, or a health check when there is
    nothing to write.

  After a failed call the worker backs off (25 ms doubling to 1 s, so that under
  traffic the default five failures open the breaker within half a second); after a
  success it goes straight on. On shutdown a batch in flight is nacked; if the worker is killed,
  the native layer returns its batch to the spool when it sees the process die.
  """
  use GenServer
  require Breakwater.Log, as: Log

  alias Breakwater.{History, Native, PolicyStore}

  @doc false
  def child_spec(opts) do
    %{
      id: {__MODULE__, Keyword.fetch!(opts, :subject)},
      start: {__MODULE__, :start_link, [opts]},
      restart: :permanent,
      shutdown: 5_000
    }
  end

  @doc false
  def start_link(opts) do
    GenServer.start_link(__MODULE__, opts, name: via(Keyword.fetch!(opts, :subject)))
  end

  @doc false
  def via(subject), do: {:via, Registry, {Breakwater.Ledger.Names, subject}}

  @doc """
  The worker of `subject`: its ledger module, the call in flight, counts of batches and
  events written, failures, and the last health check.
  """
  @spec info(binary) :: map | nil
  def info(subject) do
    GenServer.call(via(subject), :info)
  rescue
    # The registry itself is restarting.
    ArgumentError -> nil
  catch
    :exit, _ -> nil
  end

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)
    send(self(), :poll)

    {:ok,
     %{
       subject: Keyword.fetch!(opts, :subject),
       module: Keyword.fetch!(opts, :module),
       batch_size: Keyword.get(opts, :batch_size, 500),
       poll_ms: Keyword.get(opts, :poll_ms, 5),
       inflight: nil,
       poll_timer: nil,
       last_call: now(),
       next_health: now(),
       backoff: 0,
       last_health: nil,
       batches: 0,
       events: 0,
       failures: 0
     }}
  end

  @impl true
  def handle_call(:info, _from, s) do
    info = %{
      subject: s.subject,
      module: s.module,
      in_flight: s.inflight && elem(s.inflight.kind, 0),
      batches_written: s.batches,
      events_written: s.events,
      failures: s.failures,
      last_health_check: s.last_health
    }

    {:reply, info, s}
  end

  @impl true
  def handle_info(:poll, %{inflight: nil} = s), do: {:noreply, poll(%{s | poll_timer: nil})}
  def handle_info(:poll, s), do: {:noreply, %{s | poll_timer: nil}}

  def handle_info({ref, result}, %{inflight: %{task: %{ref: ref}}} = s) do
    Process.demonitor(ref, [:flush])
    {:noreply, finish(s, classify(result))}
  end

  def handle_info({:DOWN, ref, :process, _, reason}, %{inflight: %{task: %{ref: ref}}} = s) do
    {:noreply, finish(s, {:failure, {:exit, reason}})}
  end

  def handle_info({:call_timeout, ref}, %{inflight: %{task: %{ref: ref} = task}} = s) do
    Task.shutdown(task, :brutal_kill)
    {:noreply, finish(s, {:failure, :timeout})}
  end

  # The only link a worker has besides its supervisor (whose exit the GenServer
  # handles) is the one the Registry partition makes when the worker registers. The
  # partition died, and with it the worker's name: stop, to be restarted and
  # registered anew (a batch in flight is nacked in terminate/2).
  def handle_info({:EXIT, _partition, reason}, s),
    do: {:stop, {:shutdown, {:registry_down, reason}}, s}

  def handle_info(_stale, s), do: {:noreply, s}

  @impl true
  def terminate(_reason, %{inflight: %{kind: {:write, id, _}, task: task}} = s) do
    Task.shutdown(task, :brutal_kill)
    Native.nack(s.subject, id)
    :ok
  end

  def terminate(_reason, _s), do: :ok

  # ---- the loop ---------------------------------------------------------------------

  defp poll(s) do
    policy = PolicyStore.get(s.subject)

    case History.observe(s.subject, Native.admit_write(s.subject)) do
      {:ok, token} -> take(s, policy, false, token)
      {:probe, token} -> take(s, policy, true, token)
      {:reject, :circuit_open, retry} -> open(s, policy, retry)
      {:reject, _, _} -> schedule(s, max(div(policy.health_check_ms, 10), 1))
      {:error, reason} -> log_and_wait(s, reason)
    end
  end

  # `token`: the admission's, recorded with the outcome.
  defp take(s, policy, probe?, token) do
    case Breakwater.drain(s.subject, s.batch_size) do
      {:ok, id, events} ->
        start(s, policy, {:write, id, events}, token)

      :empty when probe? ->
        start(s, policy, {:health, :probe}, token)

      :empty ->
        if now() >= s.next_health,
          do: start(s, policy, {:health, :idle}, token),
          else: schedule(s, s.poll_ms)

      {:error, reason} ->
        log_and_wait(s, reason)
    end
  end

  # Open: the breaker decides when probing starts; health checks meanwhile only inform.
  defp open(s, policy, retry) do
    if now() >= s.next_health do
      start(s, policy, {:health, :open}, nil)
    else
      schedule(s, min(retry, max(s.next_health - now(), 1)))
    end
  end

  # `token`: the admission's token, to record the outcome with; nil: not recorded.
  defp start(s, policy, kind, token) do
    module = s.module
    subject = s.subject

    task =
      Task.Supervisor.async_nolink(Breakwater.TaskSupervisor, fn ->
        try do
          case kind do
            {:write, _id, events} -> module.write_batch(subject, events)
            {:health, _} -> module.health_check(subject)
          end
        catch
          kind, reason -> {:caught, kind, reason}
        end
      end)

    # (An Erlang timer waits at most 2^32 - 1 ms; a longer call_timeout_ms waits that.)
    timeout = min(policy.call_timeout_ms, 0xFFFFFFFF)
    timer = Process.send_after(self(), {:call_timeout, task.ref}, timeout)

    inflight = %{
      task: task,
      kind: kind,
      timer: timer,
      started: now(),
      token: token,
      policy: policy
    }

    %{s | inflight: inflight}
  end

  defp classify(:ok), do: :success
  defp classify({:error, reason}), do: {:failure, reason}
  defp classify({:caught, kind, reason}), do: {:failure, {kind, reason}}
  defp classify(other), do: {:failure, {:unexpected_return, other}}

  defp finish(%{inflight: inflight} = s, outcome) do
    Process.cancel_timer(inflight.timer)
    latency = now() - inflight.started
    s = %{s | inflight: nil, last_call: now()}

    if inflight.token do
      outcome_term = if outcome == :success, do: :success, else: {:failure, elem(outcome, 1)}
      # Not a router's call: its outcome and latency count, it ends no call in flight.
      Breakwater.record_unadmitted(s.subject, outcome_term, latency, inflight.token)
    end

    case {inflight.kind, outcome} do
      {{:write, id, events}, :success} ->
        History.observe(s.subject, Native.ack(s.subject, id))
        s = %{s | batches: s.batches + 1, events: s.events + length(events), backoff: 0}
        s = %{s | next_health: now() + inflight.policy.health_check_ms}
        schedule(s, 0)

      {{:write, id, _events}, {:failure, _}} ->
        Native.nack(s.subject, id)
        backoff(%{s | failures: s.failures + 1})

      {{:health, _}, :success} ->
        s = %{s | last_health: {:ok, System.system_time(:millisecond)}, backoff: 0}
        s = %{s | next_health: now() + inflight.policy.health_check_ms}
        schedule(s, 0)

      {{:health, _}, {:failure, reason}} ->
        s = %{
          s
          | last_health: {{:error, reason}, System.system_time(:millisecond)},
            failures: s.failures + 1
        }

        # A failed check is confirmed sooner, so that detection stays within seconds.
        s = %{s | next_health: now() + max(div(inflight.policy.health_check_ms, 5), 1)}
        backoff(s)
    end
  end

  defp backoff(s) do
    delay = min(25 * Integer.pow(2, s.backoff), 1_000)
    schedule(%{s | backoff: min(s.backoff + 1, 6)}, delay)
  end

  defp schedule(s, 0) do
    send(self(), :poll)
    s
  end

  defp schedule(%{poll_timer: nil} = s, ms),
    do: %{s | poll_timer: Process.send_after(self(), :poll, ms)}

  defp schedule(s, _ms), do: s

  defp log_and_wait(s, reason) do
    Log.error("breakwater ledger worker for #{inspect(s.subject)}: #{inspect(reason)}")
    schedule(s, 1_000)
  end

  defp now, do: System.monotonic_time(:millisecond)
end
