//! The cost of one `pick()` per balancing algorithm, for pools of 3 and 100 equal backends and of 3 weighted ones
//! (3, 1, 1), every backend eligible and idle: what each algorithm adds to a request before any I/O.
//!
//! `cargo bench --bench pick` (criterion; `-- least_request` to run one group). Single-threaded: contention
//! between workers on the shared counter, random state or scores is not measured here but by `bench/run`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lb::config::{Algorithm, BalanceConfig};
use lb::PickBench;

fn pick(c: &mut Criterion) {
    let algorithms = [
        ("round_robin", Algorithm::RoundRobin, None),
        ("least_request", Algorithm::LeastRequest, None),
        ("peak_ewma", Algorithm::PeakEwma, None),
        ("random", Algorithm::Random, None),
        ("consistent_hash", Algorithm::ConsistentHash, None),
        (
            "consistent_hash_bounded",
            Algorithm::ConsistentHash,
            Some(1.25),
        ),
    ];
    let pools: [(&str, Vec<u32>); 3] = [
        ("3", vec![1; 3]),
        ("100", vec![1; 100]),
        ("3_weighted", vec![3, 1, 1]),
    ];
    for (name, algorithm, hash_bound) in algorithms {
        let mut group = c.benchmark_group(name);
        group.measurement_time(Duration::from_secs(2));
        group.warm_up_time(Duration::from_millis(500));
        for (pool, weights) in &pools {
            let config = BalanceConfig {
                algorithm,
                hash_bound,
                ..Default::default()
            };
            let bench = PickBench::new(&config, weights);
            // Latency-aware balancing compares estimates: give every backend one.
            for index in 0..weights.len() {
                bench.observe(index, Duration::from_millis(5 + index as u64 % 7));
            }
            let mut key = 0u64;
            group.bench_function(BenchmarkId::from_parameter(pool), |b| {
                b.iter(|| {
                    key = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    black_box(bench.pick(black_box(Some(key))))
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, pick);
criterion_main!(benches);
