//! Every atom the NIF returns or reads. Atoms are made from these fixed names only,
//! never from input.

rustler::atoms! {
    ok,
    error,
    reject,
    transitions,
    empty,
    overflow,
    probe,
    full,
    nil,
    // check_backpressure statuses
    backpressure_inactive,
    backpressure_warning,
    backpressure_active,
    // statuses
    inactive,
    warning,
    active,
    // breaker states
    closed,
    open,
    half_open,
    // backpressure states
    normal,
    pressure,
    dropping,
    recovery,
    // machines
    breaker,
    backpressure,
    manual,
    // rejection reasons
    circuit_open,
    half_open_limit,
    shed_low_priority,
    pool_exhausted,
    // outcomes and policies
    success,
    failure,
    drop_newest,
    drop_oldest,
    dropped_oldest,
    drop,
    disk,
    // errors
    unknown_batch,
    event_too_large,
    too_many_subjects,
    breakwater_not_started,
    invalid,
    unknown_key,
    // ArgumentError
    argument_error = "Elixir.ArgumentError",
    __struct__,
    __exception__,
    message,
}
