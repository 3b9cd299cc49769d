//! Decoding the policy and registry configuration maps the Elixir layer sends.
//!
//! The Elixir layer validates user input and gives the user-facing messages
//! (`Breakwater.Policy`); this decoding is the native layer's own guard. Every key is
//! read by name from a map with atom keys; unknown keys and values of the wrong type are
//! all reported, as `{invalid, Key, Expected}` and `{unknown_key, Key}` with the
//! caller's own key term (no atom is made from input).

use crate::atoms;
use breakwater_core::policy::{DropPolicy, Overflow, Policy, PoolConfig};
use breakwater_core::registry::RegistryConfig;
use breakwater_core::store::{Durability, StoreConfig};
use rustler::{Binary, Encoder, Env, MapIterator, Term};

/// A decoding problem: the caller's key term and what was expected (or `None`: unknown).
pub type Problem<'a> = (Term<'a>, Option<&'static str>);

fn is_nil(t: Term) -> bool {
    t.decode::<rustler::Atom>().is_ok_and(|a| a == atoms::nil())
}

fn number(t: Term) -> Option<f64> {
    t.decode::<f64>()
        .ok()
        .or_else(|| t.decode::<i64>().ok().map(|i| i as f64))
}

fn int<T: TryFrom<u64>>(t: Term) -> Option<T> {
    t.decode::<u64>().ok().and_then(|v| T::try_from(v).ok())
}

fn optional<T>(t: Term, f: impl Fn(Term) -> Option<T>) -> Option<Option<T>> {
    if is_nil(t) {
        Some(None)
    } else {
        f(t).map(Some)
    }
}

fn priorities(t: Term) -> Option<Vec<(Vec<u8>, u8)>> {
    let list: Vec<(Binary, u8)> = t.decode().ok()?;
    Some(
        list.into_iter()
            .map(|(b, p)| (b.as_slice().to_vec(), p))
            .collect(),
    )
}

/// Reads a native policy map over `base`.
pub fn decode_policy<'a>(term: Term<'a>, base: Policy) -> Result<Policy, Vec<Problem<'a>>> {
    let mut p = base;
    let mut problems = Vec::new();
    let Some(iter) = MapIterator::new(term) else {
        return Err(vec![(term, Some("a map of policy keys"))]);
    };
    for (k, v) in iter {
        let Ok(name) = k.atom_to_string() else {
            problems.push((k, None));
            continue;
        };
        macro_rules! set {
            ($field:ident, $parse:expr, $expected:literal) => {
                match $parse(v) {
                    Some(x) => p.$field = x,
                    None => problems.push((k, Some($expected))),
                }
            };
        }
        match name.as_str() {
            "warning_threshold" => set!(warning_threshold, int::<u64>, "a non-negative integer"),
            "critical_threshold" => set!(critical_threshold, int::<u64>, "a non-negative integer"),
            "recovery_threshold" => set!(recovery_threshold, number, "a number"),
            "stability_ms" => set!(stability_ms, int::<u64>, "a non-negative integer"),
            "low_priority_shed_ratio" => set!(low_priority_shed_ratio, number, "a number"),
            "bypass_priority" => set!(bypass_priority, int::<u8>, "an integer in 0..255"),
            "low_priority_max" => set!(low_priority_max, int::<u8>, "an integer in 0..255"),
            "priorities" => set!(priorities, priorities, "a list of {binary, priority}"),
            "failure_threshold" => set!(failure_threshold, int::<u32>, "an integer in 0..2^32-1"),
            "failure_rate_threshold" => {
                set!(
                    failure_rate_threshold,
                    |v| optional(v, number),
                    "nil or a number"
                )
            }
            "window_ms" => set!(window_ms, int::<u64>, "a non-negative integer"),
            "minimum_calls" => set!(minimum_calls, int::<u32>, "an integer in 0..2^32-1"),
            "slow_call_ms" => set!(
                slow_call_ms,
                |v| optional(v, int::<u64>),
                "nil or an integer"
            ),
            "open_timeout_ms" => set!(open_timeout_ms, int::<u64>, "a non-negative integer"),
            "max_open_timeout_ms" => {
                set!(
                    max_open_timeout_ms,
                    |v| optional(v, int::<u64>),
                    "nil or an integer"
                )
            }
            "half_open_max_calls" => set!(half_open_max_calls, int::<u8>, "an integer in 0..255"),
            "success_threshold" => set!(success_threshold, int::<u8>, "an integer in 0..255"),
            "call_timeout_ms" => set!(call_timeout_ms, int::<u64>, "a non-negative integer"),
            "retry_after_ms" => set!(retry_after_ms, int::<u64>, "a non-negative integer"),
            "max_segments" => set!(
                max_segments,
                |v| optional(v, int::<u32>),
                "nil or an integer"
            ),
            "latency_overload_ms" => set!(
                latency_overload_ms,
                |v| optional(v, int::<u64>),
                "nil or an integer"
            ),
            "inflight_overload" => set!(
                inflight_overload,
                |v| optional(v, int::<u64>),
                "nil or an integer"
            ),
            "latency_window_ms" => {
                set!(latency_window_ms, int::<u64>, "a non-negative integer")
            }
            "drop_policy" => set!(
                drop_policy,
                |v: Term| match v.decode::<rustler::Atom>().ok()? {
                    a if a == atoms::drop_newest() => Some(DropPolicy::DropNewest),
                    a if a == atoms::drop_oldest() => Some(DropPolicy::DropOldest),
                    _ => None,
                },
                "drop_newest or drop_oldest"
            ),
            "overflow" => set!(
                overflow,
                |v: Term| match v.decode::<rustler::Atom>().ok()? {
                    a if a == atoms::drop() => Some(Overflow::Drop),
                    a if a == atoms::disk() => Some(Overflow::Disk),
                    _ => None,
                },
                "drop or disk"
            ),
            _ => problems.push((k, None)),
        }
    }
    if problems.is_empty() {
        Ok(p)
    } else {
        Err(problems)
    }
}

fn decode_pool<'a>(term: Term<'a>, problems: &mut Vec<Problem<'a>>) -> PoolConfig {
    let mut pool = PoolConfig::default();
    let Some(iter) = MapIterator::new(term) else {
        problems.push((term, Some("ring_pool: a map")));
        return pool;
    };
    for (k, v) in iter {
        let field = match k.atom_to_string().as_deref() {
            Ok("segments") => &mut pool.segments,
            Ok("segment_capacity") => &mut pool.segment_capacity,
            Ok("segment_bytes") => &mut pool.segment_bytes,
            Ok("max_event_bytes") => &mut pool.max_event_bytes,
            _ => {
                problems.push((k, None));
                continue;
            }
        };
        match int::<u32>(v) {
            Some(x) => *field = x,
            None => problems.push((k, Some("an integer in 0..2^32-1"))),
        }
    }
    pool
}

fn binary(t: Term) -> Option<Vec<u8>> {
    Binary::from_term(t).ok().map(|b| b.as_slice().to_vec())
}

fn durability(t: Term) -> Option<Durability> {
    if let Ok(a) = t.decode::<rustler::Atom>() {
        if a == atoms::crash() {
            return Some(Durability::Crash);
        }
        if a == atoms::memory() {
            return Some(Durability::Memory);
        }
        return None;
    }
    let (a, ms): (rustler::Atom, u64) = t.decode().ok()?;
    (a == atoms::fsync() && ms >= 1).then_some(Durability::Fsync { interval_ms: ms })
}

/// Reads `#{dir, durability, owner, adopt, disk_max_bytes}` (every key optional).
fn decode_spool<'a>(term: Term<'a>, problems: &mut Vec<Problem<'a>>) -> StoreConfig {
    let mut c = StoreConfig::default();
    let Some(iter) = MapIterator::new(term) else {
        problems.push((term, Some("spool: a map")));
        return c;
    };
    for (k, v) in iter {
        match k.atom_to_string().as_deref() {
            Ok("dir") => match optional(v, binary) {
                Some(d) => {
                    c.dir = d
                        .map(|b| std::path::PathBuf::from(String::from_utf8_lossy(&b).into_owned()))
                }
                None => problems.push((k, Some("nil or a binary path"))),
            },
            Ok("durability") => match durability(v) {
                Some(d) => c.durability = d,
                None => problems.push((k, Some("crash, memory or {fsync, Ms}"))),
            },
            Ok("owner") => match binary(v) {
                Some(o) => c.owner = o,
                None => problems.push((k, Some("a binary"))),
            },
            Ok("adopt") => match v.decode::<Vec<Binary>>() {
                Ok(list) => c.adopt = list.iter().map(|b| b.as_slice().to_vec()).collect(),
                Err(_) => problems.push((k, Some("a list of binaries"))),
            },
            Ok("disk_max_bytes") => match int::<u64>(v) {
                Some(n) => c.disk_max_bytes = n,
                None => problems.push((k, Some("a non-negative integer"))),
            },
            _ => problems.push((k, None)),
        }
    }
    c
}

/// Reads `#{max_subjects, ring_pool, default_policy, reclaim_grace_ms, spool}` (every
/// key optional): the registry's configuration, the grace period of removed subjects,
/// and the spool (none: nothing on disk at first start, the spool as opened
/// afterwards).
pub fn decode_init_config<'a>(
    term: Term<'a>,
) -> Result<(RegistryConfig, Option<u64>, Option<StoreConfig>), Vec<Problem<'a>>> {
    let mut spool = None;
    let mut problems = Vec::new();
    let rest: Vec<(Term<'a>, Term<'a>)> = match MapIterator::new(term) {
        Some(iter) => iter
            .filter(|(k, v)| {
                if k.atom_to_string().is_ok_and(|n| n == "spool") {
                    spool = Some(decode_spool(*v, &mut problems));
                    false
                } else {
                    true
                }
            })
            .collect(),
        None => return Err(vec![(term, Some("a map"))]),
    };
    let mut grace = None;
    let config = decode_registry_pairs(rest, &mut grace, &mut problems);
    if problems.is_empty() {
        Ok((config, grace, spool))
    } else {
        Err(problems)
    }
}

fn decode_registry_pairs<'a>(
    pairs: Vec<(Term<'a>, Term<'a>)>,
    grace: &mut Option<u64>,
    problems: &mut Vec<Problem<'a>>,
) -> RegistryConfig {
    let mut config = RegistryConfig::default();
    for (k, v) in pairs {
        match k.atom_to_string().as_deref() {
            Ok("max_subjects") => match int::<usize>(v) {
                Some(m) => config.max_subjects = m,
                None => problems.push((k, Some("a non-negative integer"))),
            },
            Ok("ring_pool") => config.pool = decode_pool(v, problems),
            Ok("reclaim_grace_ms") => match int::<u64>(v) {
                // At least a second: far longer than any NIF call holds a subject.
                Some(ms) if ms >= 1_000 => *grace = Some(ms),
                _ => problems.push((k, Some("an integer of at least 1000"))),
            },
            Ok("default_policy") => match decode_policy(v, Policy::default()) {
                Ok(p) => config.default_policy = p,
                Err(e) => problems.extend(e),
            },
            _ => problems.push((k, None)),
        }
    }
    config
}

/// `{error, [{invalid, Key, Expected} | {unknown_key, Key}]}`.
pub fn problems_term<'a>(env: Env<'a>, problems: Vec<Problem<'a>>) -> Term<'a> {
    let list: Vec<Term<'a>> = problems
        .into_iter()
        .map(|(k, expected)| match expected {
            Some(e) => (atoms::invalid(), k, e).encode(env),
            None => (atoms::unknown_key(), k).encode(env),
        })
        .collect();
    (atoms::error(), list).encode(env)
}

/// `{error, [{Key, Expected}]}` from the core's validation (keys are fixed names).
pub fn validation_term<'a>(env: Env<'a>, errors: Vec<(&'static str, String)>) -> Term<'a> {
    let list: Vec<Term<'a>> = errors
        .into_iter()
        .map(|(k, e)| {
            let key = atoms::key(env, k).encode(env);
            (key, e).encode(env)
        })
        .collect();
    (atoms::error(), list).encode(env)
}
