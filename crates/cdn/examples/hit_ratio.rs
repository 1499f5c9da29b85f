//! The edge's memory tier against plain LRU on a Zipf photo-view trace
//! (docs/BENCHMARKS.md, "CDN edge").
//!
//!   cargo run --release -p cdn --example hit_ratio [-- OBJECTS REQUESTS ZIPF_S BUDGET_PERCENT SEED]
//!
//! OBJECTS photos (default 1,000,000) with sizes drawn log-normally around 60 KiB
//! (thumbnails to full photos, 4 KiB to 4 MiB), requested REQUESTS times
//! (default 10,000,000) by a Zipf law of exponent ZIPF_S (default 0.9, what photo
//! and CDN traces show: 0.6–1.0) over a random order of the objects. Both caches
//! get BUDGET_PERCENT (default 1) of the working set's bytes: TinyUFO as the
//! edge's store uses it (weights in KiB, `EdgeStore`'s unit), and an LRU by bytes
//! (the `lru` crate, evicting from the cold end until the newcomer fits). The
//! first tenth of the requests warms both and is not counted. Prints the object
//! and byte hit ratios of each.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

fn arg<T: std::str::FromStr>(i: usize, default: T) -> T {
    std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

/// A Zipf sampler over ranks `0..n` by inverse CDF.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 1..=n {
            total += 1.0 / (k as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut impl Rng) -> usize {
        let u: f64 = rng.random();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// Hits and bytes counted after the warm-up.
#[derive(Default)]
struct Tally {
    requests: u64,
    hits: u64,
    bytes: u64,
    hit_bytes: u64,
}

impl Tally {
    fn note(&mut self, hit: bool, size: u64) {
        self.requests += 1;
        self.bytes += size;
        if hit {
            self.hits += 1;
            self.hit_bytes += size;
        }
    }

    fn ratios(&self) -> (f64, f64) {
        (self.hits as f64 / self.requests as f64, self.hit_bytes as f64 / self.bytes as f64)
    }
}

fn main() {
    let objects: usize = arg(1, 1_000_000);
    let requests: usize = arg(2, 10_000_000);
    let s: f64 = arg(3, 0.9);
    let percent: f64 = arg(4, 1.0);
    let seed: u64 = arg(5, 42);
    let mut rng = StdRng::seed_from_u64(seed);

    // Sizes: log-normal around 60 KiB, clamped to 4 KiB..4 MiB.
    let sizes: Vec<u64> = (0..objects)
        .map(|_| {
            let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
            let normal = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            ((60.0 * 1024.0) * (normal * 1.0).exp()).clamp(4096.0, 4.0 * 1024.0 * 1024.0) as u64
        })
        .collect();
    let working_set: u64 = sizes.iter().sum();
    let budget = (working_set as f64 * percent / 100.0) as u64;
    // Popularity is unrelated to size: ranks map to a random order of the objects.
    let mut order: Vec<usize> = (0..objects).collect();
    order.shuffle(&mut rng);
    let zipf = Zipf::new(objects, s);

    const UNIT: u64 = 1024; // the edge's weight unit
    let ufo: tinyufo::TinyUfo<u64, ()> =
        tinyufo::TinyUfo::new((budget / UNIT) as usize, (budget / (60 * 1024)).max(16) as usize);
    let mut lru: lru::LruCache<u64, u64> = lru::LruCache::unbounded();
    let mut lru_bytes = 0u64;
    let (mut t_ufo, mut t_lru) = (Tally::default(), Tally::default());
    let warm = requests / 10;
    for i in 0..requests {
        let object = order[zipf.sample(&mut rng)] as u64;
        let size = sizes[object as usize];
        let counted = i >= warm;

        let hit = ufo.get(&object).is_some();
        if !hit {
            ufo.put(object, (), size.div_ceil(UNIT).clamp(1, u16::MAX as u64) as u16);
        }
        if counted {
            t_ufo.note(hit, size);
        }

        let hit = lru.get(&object).is_some();
        if !hit && size <= budget {
            while lru_bytes + size > budget {
                let (_, evicted) = lru.pop_lru().expect("something to evict");
                lru_bytes -= evicted;
            }
            lru.put(object, size);
            lru_bytes += size;
        }
        if counted {
            t_lru.note(hit, size);
        }
    }
    let (uo, ub) = t_ufo.ratios();
    let (lo, lb) = t_lru.ratios();
    println!(
        "{objects} objects, {:.1} GiB working set, budget {percent}% ({:.1} MiB), Zipf s={s}, {requests} requests ({warm} warm-up), seed {seed}",
        working_set as f64 / (1u64 << 30) as f64,
        budget as f64 / (1u64 << 20) as f64
    );
    println!();
    println!("| store | object hit ratio | byte hit ratio |");
    println!("|---|---:|---:|");
    println!("| TinyUFO (the edge's) | {:.1}% | {:.1}% |", uo * 100.0, ub * 100.0);
    println!("| LRU by bytes | {:.1}% | {:.1}% |", lo * 100.0, lb * 100.0);
    println!("| TinyUFO ÷ LRU | {:.2}× | {:.2}× |", uo / lo, ub / lb);
}
