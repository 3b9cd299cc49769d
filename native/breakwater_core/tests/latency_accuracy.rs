//! The latency histogram's quantiles against an exact sort of the same samples, for
//! random distributions with light and heavy tails: every quantile within 2 % (the
//! bucket layout promises 1/64).

use breakwater_core::latency::{Histogram, MAX_LATENCY_MS, MAX_RELATIVE_ERROR};

/// splitmix64: a small, well-mixed generator; seeds make every run the same.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        // Box-Muller.
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

type Dist = fn(&mut Rng) -> f64;

const DISTRIBUTIONS: [(&str, Dist); 9] = [
    ("uniform 0..10 s", |r| r.unit() * 10_000.0),
    ("exponential, mean 200 ms", |r| -200.0 * r.unit().ln()),
    ("log-normal, median 50 ms, sigma 1", |r| {
        50.0 * r.normal().exp()
    }),
    ("log-normal, median 3 s, sigma 2 (heavy)", |r| {
        3_000.0 * (2.0 * r.normal()).exp()
    }),
    ("Pareto, alpha 1.1 from 10 ms (very heavy)", |r| {
        10.0 * r.unit().powf(-1.0 / 1.1)
    }),
    ("Pareto, alpha 0.7 from 1 ms (no mean)", |r| {
        r.unit().powf(-1.0 / 0.7)
    }),
    ("bimodal: 95 % ~20 ms, 5 % ~8 s", |r| {
        if r.unit() < 0.95 {
            20.0 + 5.0 * r.normal().abs()
        } else {
            8_000.0 + 2_000.0 * r.normal().abs()
        }
    }),
    ("small integers 0..40 (exact range)", |r| {
        (r.unit() * 40.0).floor()
    }),
    ("constant 4 999 ms", |_| 4_999.0),
];

/// The nearest-rank quantile of sorted `v`: the value at rank ceil(q × n).
fn exact(sorted: &[u64], q: f64) -> u64 {
    let n = sorted.len() as u64;
    let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
    sorted[(rank - 1) as usize]
}

#[test]
fn quantiles_within_two_percent_of_an_exact_sort() {
    let quantiles = [0.5, 0.9, 0.95, 0.99, 0.999];
    let mut worst = (0.0f64, String::new());
    for (seed, (name, dist)) in DISTRIBUTIONS.iter().enumerate() {
        for n in [1usize, 19, 1_000, 200_000] {
            let mut rng = Rng(seed as u64 * 7_919 + n as u64);
            let h = Histogram::with_stripes(2);
            // Values past the histogram's range count as its largest value by design
            // (checked on its own below): keep the samples inside it here.
            let mut samples: Vec<u64> = (0..n)
                .map(|_| (dist(&mut rng).round() as u64).min(MAX_LATENCY_MS))
                .collect();
            for &v in &samples {
                h.record(v);
            }
            samples.sort_unstable();
            for q in quantiles {
                let want = exact(&samples, q);
                let got = h.quantile(q).expect("samples were recorded");
                assert_eq!(got.samples, n as u64);
                let err = if want == 0 {
                    assert_eq!(got.value_ms, 0, "{name}, n {n}, q {q}");
                    0.0
                } else {
                    (got.value_ms as f64 - want as f64).abs() / want as f64
                };
                assert!(
                    err <= 0.02,
                    "{name}, n {n}, q {q}: histogram {} vs exact {want} ({:.3} %)",
                    got.value_ms,
                    err * 100.0
                );
                if err > worst.0 {
                    worst = (err, format!("{name}, n {n}, q {q}"));
                }
            }
        }
    }
    assert!(worst.0 <= MAX_RELATIVE_ERROR, "{worst:?}");
    println!(
        "worst relative error: {:.3} % ({})",
        worst.0 * 100.0,
        worst.1
    );
}

#[test]
fn values_past_the_range_count_as_the_largest() {
    let h = Histogram::with_stripes(1);
    for _ in 0..10 {
        h.record(u64::MAX);
    }
    h.record(MAX_LATENCY_MS * 10);
    let q = h.quantile(0.5).unwrap();
    let err = (q.value_ms as f64 - MAX_LATENCY_MS as f64).abs() / MAX_LATENCY_MS as f64;
    assert!(err <= MAX_RELATIVE_ERROR);
    assert_eq!(q.samples, 11);
}
