//! Every atom the NIF returns or reads. Atoms are made from these fixed names only,
//! never from input.

rustler::atoms! {
    ok,
    error,
    reject,
    transitions,
    empty,
    load,
    probe,
    nil,
    // durability and spool reports
    crash,
    memory,
    fsync,
    info,
    spool_unavailable,
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
    // transition causes (`reset`, `force_open`, `disable`, `enable` and `configure`
    // name manual actions)
    failures,
    failure_rate,
    remote_open,
    probe_failure,
    stale_probe,
    open_timeout,
    probe_successes,
    reset,
    force_open,
    disable,
    enable,
    depth,
    pool,
    stability,
    configure,
    // the signals machine, and the signals (`depth` is a cause too)
    signal,
    latency,
    inflight,
    // rejection reasons
    circuit_open,
    half_open_limit,
    shed_low_priority,
    pool_exhausted,
    overloaded,
    // outcomes and policies
    success,
    failure,
    drop_newest,
    drop_oldest,
    dropped_oldest,
    drop,
    disk,
    // errors
    invalid_subject,
    invalid_subject_type,
    invalid_subject_length,
    unknown_batch,
    unknown_subject,
    spooled,
    default,
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

/// The atom named `name`, one of the fixed key names in this crate's source (map keys of
/// `status/1`, `pool_info/0`, transitions). Cached per scheduler thread: making an atom
/// from a string takes the VM's atom-table lock and hashes the name, and a status map
/// has some 50 keys. An atom is valid in every environment for the life of the VM, so
/// the cache holds plain atoms; it is bounded by the names in the source.
pub fn key(env: rustler::Env<'_>, name: &'static str) -> rustler::Atom {
    use std::cell::RefCell;
    use std::collections::HashMap;
    thread_local! {
        static CACHE: RefCell<HashMap<&'static str, rustler::Atom>> = RefCell::new(HashMap::new());
    }
    CACHE.with(|cache| {
        *cache
            .borrow_mut()
            .entry(name)
            .or_insert_with(|| rustler::Atom::from_str(env, name).unwrap_or_else(|_| nil()))
    })
}
