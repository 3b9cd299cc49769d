defmodule Breakwater.Ledger do
  @moduledoc """
  The downstream a subject's spool is delivered to.

  A ledger module implements two callbacks; `Breakwater.attach_ledger/3` (or the
  `ledgers` key of the application environment) starts a supervised
  `Breakwater.Ledger.Worker` that delivers the subject's spool to it through the
  subject's breaker.

  ```elixir
  defmodule MyApp.LedgerWriter do
    @behaviour Breakwater.Ledger

    @impl true
    def write_batch(_subject, events), do: MyApp.Repo.insert_events(events)

    @impl true
    def health_check(_subject), do: MyApp.Repo.ping()
  end

  iex> Breakwater.attach_ledger("ledger", MyApp.LedgerWriter, batch_size: 500)
  :ok
  ```

  Both callbacks run in a task of their own under the policy's `call_timeout_ms`: a
  callback that returns an error, raises, exits, throws or runs too long is a failure,
  and the worker is never stuck behind it. A batch is acknowledged only when
  `write_batch/2` returns `:ok`; otherwise it is returned to the spool and delivered
  again (at least once: a write that failed or timed out after the ledger stored part
  of it is delivered again, and the events counted in `redelivered_events`).
  """

  @doc "Writes `events` (oldest first). `:ok` means the ledger holds all of them."
  @callback write_batch(subject :: binary, events :: [binary]) :: :ok | {:error, term}

  @doc "Answers whether the ledger is reachable, without writing."
  @callback health_check(subject :: binary) :: :ok | {:error, term}

  @doc "True when `module` is loaded and implements both callbacks."
  @spec valid?(module) :: boolean
  def valid?(module) when is_atom(module) do
    Code.ensure_loaded?(module) and function_exported?(module, :write_batch, 2) and
      function_exported?(module, :health_check, 1)
  end

  def valid?(_), do: false
end
