//! Benchmark: thumbnail jobs per second on a 12-megapixel photo, against
//! libvips on the same machine in the same run.
//!
//! ```text
//! cargo build --release -p worker --example bench_thumbs
//! target/release/examples/bench_thumbs        # or: bash scripts/bench-photos.sh
//! ```
//!
//! The photo is synthetic but photo-like: 4000 × 3000, a sky and ground
//! gradient with a wavy horizon, a few hundred soft discs, and per-pixel
//! noise from a fixed-seed PRNG, so the JPEG has a realistic size (a flat or
//! smooth image compresses to almost nothing and decodes unrealistically
//! fast). It is encoded at quality 90, then passed through `media::normalize`
//! once, as an upload would be; the normalized JPEG is the input of everything
//! below.
//!
//! Measured in interleaved rounds (median reported):
//!
//! - **ours**: `media::thumbnails(normalized)`, the CPU core of a photo job:
//!   one decode, three Lanczos3 resizes (160, 640, 1280), three JPEG q85
//!   encodes. One thread.
//! - **anchor, `vipsthumbnail`**: libvips' thumbnailer making the same three
//!   sizes from the same photo at Q=85, `VIPS_CONCURRENCY=1`. It takes one
//!   size per run but many files, so each round runs it three times (one
//!   process per size) over `BENCH_VIPS_BATCH` copies of the photo, which
//!   spreads its start-up (about 0.1 s per process: it loads its ImageMagick,
//!   poppler, HEIF… modules) over many jobs. The start-up left per job is
//!   measured too (the same commands on one 16 × 16 JPEG). libvips uses JPEG
//!   shrink-on-load: it decodes at 1/2, 1/4 or 1/8 scale when the target
//!   size allows, which `media` does not.
//!
//! Then a real worker (`testkit`: PostgreSQL, Redis, the object store) drains
//! photo jobs of distinct 12 MP photos: the originals are stored and the posts
//! created through the data layer (no HTTP), then one worker is started, and
//! the wall time from its start to the last post being `ready` gives jobs/s.
//!
//! Environment: `BENCH_THUMBS_ITERS` (10 jobs of ours per round),
//! `BENCH_VIPS_BATCH` (24 jobs of libvips' per round), `BENCH_ROUNDS` (3),
//! `BENCH_E2E_JOBS` (12 per worker configuration), `BENCH_E2E_CONCURRENCY`
//! (`1,2`), `VIPSTHUMBNAIL` (the binary).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use image::codecs::jpeg::JpegEncoder;
use image::{ImageEncoder, RgbImage};

const WIDTH: u32 = 4000;
const HEIGHT: u32 = 3000;
const SEED: u64 = 0x5EED_0FB1_6F07;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

fn say(msg: impl AsRef<str>) {
    eprintln!("bench_thumbs: {}", msg.as_ref());
}

// ---------------------------------------------------------------- the photo

/// splitmix64: small, fast, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// A photo-like 12 MP image: gradients, soft shapes, sensor-like noise.
fn photo(seed: u64) -> RgbImage {
    let mut rng = Rng(seed);
    let (w, h) = (WIDTH as f32, HEIGHT as f32);
    let mut img = RgbImage::from_fn(WIDTH, HEIGHT, |x, y| {
        let (fx, fy) = (x as f32 / w, y as f32 / h);
        let horizon = 0.55 + 0.06 * (fx * 9.0).sin() + 0.02 * (fx * 37.0).sin();
        let c = if fy < horizon {
            [110.0 + 90.0 * fy, 150.0 + 70.0 * fy, 235.0 - 50.0 * fy]
        } else {
            // Ground: a field with a coarse texture.
            let t = 18.0 * ((fx * 140.0).sin() * (fy * 90.0).cos());
            [80.0 + 50.0 * fy + t, 120.0 - 30.0 * fy + t, 50.0 + 15.0 * fy]
        };
        image::Rgb(c.map(|v| v.clamp(0.0, 255.0) as u8))
    });
    // Soft discs: trees, clouds, people.
    for _ in 0..300 {
        let (cx, cy) = (rng.unit() * w, rng.unit() * h);
        let r = 15.0 + rng.unit() * 220.0;
        let color = [rng.unit() * 255.0, rng.unit() * 255.0, rng.unit() * 255.0];
        let (x0, x1) = ((cx - r).max(0.0) as u32, ((cx + r) as u32).min(WIDTH - 1));
        let (y0, y1) = ((cy - r).max(0.0) as u32, ((cy + r) as u32).min(HEIGHT - 1));
        for y in y0..=y1 {
            for x in x0..=x1 {
                let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt() / r;
                if d < 1.0 {
                    let a = (1.0 - d * d).min(0.85);
                    let p = img.get_pixel_mut(x, y);
                    for (v, &target) in p.0.iter_mut().zip(&color) {
                        *v = (f32::from(*v) * (1.0 - a) + target * a) as u8;
                    }
                }
            }
        }
    }
    // Per-pixel noise, triangular, ±10 levels.
    for p in img.pixels_mut() {
        let n = rng.next();
        for (c, v) in p.0.iter_mut().enumerate() {
            let bits = (n >> (c * 16)) & 0xFFFF;
            let noise = ((bits & 0xFF) + (bits >> 8)) as i32 / 25 - 10;
            *v = (i32::from(*v) + noise).clamp(0, 255) as u8;
        }
    }
    img
}

/// Make photo `i` distinct (so its thumbnails are new objects in the store).
fn stamp(img: &mut RgbImage, i: usize) {
    let (x0, y0) = (100 + (i as u32 * 277) % 3500, 100 + (i as u32 * 131) % 2600);
    let color = [(i * 53 % 256) as u8, (i * 97 % 256) as u8, (i * 29 % 256) as u8];
    for y in y0..y0 + 240 {
        for x in x0..x0 + 240 {
            img.put_pixel(x, y, image::Rgb(color));
        }
    }
}

fn jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, quality)
        .write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)
        .expect("encoding the photo");
    out
}

fn normalized(img: &RgbImage) -> media::Normalized {
    media::normalize(&jpeg(img, 90), &media::Limits::default()).expect("normalizing the photo")
}

/// A scratch directory for libvips' input and outputs, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!("bench-thumbs-{}", std::process::id()));
        std::fs::create_dir_all(&path).expect("creating a scratch directory");
        TempDir(path)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------- CPU from /proc

/// CPU time of the calling thread (nanosecond resolution).
fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    Duration::from_nanos(text.split(' ').next().and_then(|t| t.parse().ok()).unwrap_or(0))
}

/// Fields of `/proc/self/stat` after the command name (index 0 is field 3).
fn self_stat() -> Vec<u64> {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = text.rfind(')').map_or("", |i| &text[i + 2..]);
    rest.split(' ').map(|f| f.parse().unwrap_or(0)).collect()
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds of waited-for children (cutime + cstime).
fn children_cpu(tck: f64) -> f64 {
    let f = self_stat();
    (f[13] + f[14]) as f64 / tck
}

/// CPU seconds of this process, all threads (utime + stime).
fn process_cpu(tck: f64) -> f64 {
    let f = self_stat();
    (f[11] + f[12]) as f64 / tck
}

// ---------------------------------------------------------------- targets

/// One target's numbers for one round: jobs (three thumbnails) per second of
/// wall time, and CPU milliseconds per job.
#[derive(Clone, Copy, Debug)]
struct Sample {
    per_sec: f64,
    cpu_ms: f64,
}

fn ours(normalized: &[u8], iters: usize) -> Sample {
    let (t0, c0) = (Instant::now(), thread_cpu());
    for _ in 0..iters {
        let thumbs = media::thumbnails(normalized).expect("thumbnails");
        std::hint::black_box(thumbs);
    }
    let (wall, cpu) = (t0.elapsed(), thread_cpu() - c0);
    Sample { per_sec: iters as f64 / wall.as_secs_f64(), cpu_ms: cpu.as_secs_f64() * 1e3 / iters as f64 }
}

fn vipsthumbnail(inputs: &[PathBuf], out_dir: &Path, size: u32) {
    let bin = std::env::var("VIPSTHUMBNAIL").unwrap_or_else(|_| "vipsthumbnail".into());
    let out = Command::new(bin)
        .args(inputs)
        .arg("--size")
        .arg(size.to_string())
        .arg("-o")
        .arg(format!("{}/%s_{size}.jpg[Q=85,strip]", out_dir.display()))
        .env("VIPS_CONCURRENCY", "1")
        .output()
        .unwrap_or_else(|e| panic!("running vipsthumbnail: {e} (install it: apt-get install libvips-tools)"));
    assert!(out.status.success(), "vipsthumbnail failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// One job per input: three `vipsthumbnail` processes (one per size) over all inputs.
fn vips(inputs: &[PathBuf], out_dir: &Path, tck: f64) -> Sample {
    let (t0, c0) = (Instant::now(), children_cpu(tck));
    for size in media::THUMB_SIZES {
        vipsthumbnail(inputs, out_dir, size);
    }
    let (wall, cpu) = (t0.elapsed(), children_cpu(tck) - c0);
    let jobs = inputs.len() as f64;
    Sample { per_sec: jobs / wall.as_secs_f64(), cpu_ms: cpu * 1e3 / jobs }
}

/// Where our time goes: decode and encode timed alone, the rest (three resizes,
/// pixel conversion) by difference. Milliseconds per job, thread CPU.
fn breakdown(normalized: &[u8], iters: usize, total_ms: f64) -> (f64, f64, f64) {
    let thumbs: Vec<RgbImage> = media::thumbnails(normalized)
        .unwrap()
        .iter()
        .map(|t| image::load_from_memory(&t.bytes).unwrap().to_rgb8())
        .collect();
    let c0 = thread_cpu();
    for _ in 0..iters {
        std::hint::black_box(image::load_from_memory(normalized).unwrap().to_rgb8());
    }
    let decode = (thread_cpu() - c0).as_secs_f64() * 1e3 / iters as f64;
    let c0 = thread_cpu();
    for _ in 0..iters {
        for t in &thumbs {
            std::hint::black_box(jpeg(t, 85));
        }
    }
    let encode = (thread_cpu() - c0).as_secs_f64() * 1e3 / iters as f64;
    (decode, encode, (total_ms - decode - encode).max(0.0))
}

// ---------------------------------------------------------------- the real worker

/// Store `originals`, create one photo post each, start one worker with
/// `concurrency`, and time it until every post is ready.
async fn e2e(
    env: &testkit::TestEnv,
    data: &data::Data,
    author: i64,
    originals: &[media::Normalized],
    concurrency: usize,
    tck: f64,
) -> Sample {
    use media::ObjectStore as _;
    let store = media::LocalStore::open(env.store.path()).expect("object store");
    let shard = data.shard_map().shard_of_user(author);
    let (db, conn) =
        tokio_postgres::connect(&env.shards[usize::from(shard.0)], tokio_postgres::NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    let count = async |status: &str| -> i64 {
        db.query_one("SELECT count(*) FROM posts WHERE status = $1", &[&status]).await.unwrap().get(0)
    };
    let ready_before = count("ready").await;
    for n in originals {
        let key = store.put(&n.bytes, n.format).expect("storing the original");
        let original = data::StoredImage { key: key.as_str().to_owned(), width: n.width, height: n.height };
        data.create_photo_post(author, "bench", original, 5).await.expect("creating the post");
    }
    let want = ready_before + originals.len() as i64;
    let worker = env
        .spawn_worker_with(|c| {
            c.worker.concurrency = concurrency;
            c.worker.id = Some(format!("bench-c{concurrency}"));
        })
        .await;
    let (t0, c0) = (Instant::now(), process_cpu(tck));
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(count("failed").await, 0, "a photo job failed");
        if count("ready").await >= want {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(1800), "the worker never finished");
    }
    let (wall, cpu) = (t0.elapsed(), process_cpu(tck) - c0);
    worker.stop().await;
    let thumbs: i64 = db
        .query_one(
            "SELECT min(jsonb_array_length(photo->'thumbnails')) FROM posts WHERE status = 'ready'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, Option<i32>>(0)
        .map_or(0, i64::from);
    assert_eq!(thumbs, 3, "every ready post has three thumbnails");
    drop(db);
    let _ = conn.await;
    let jobs = originals.len() as f64;
    Sample { per_sec: jobs / wall.as_secs_f64(), cpu_ms: cpu * 1e3 / jobs }
}

// ---------------------------------------------------------------- report

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn ratio(x: f64) -> String {
    if x >= 10.0 { format!("{x:.0}×") } else { format!("{x:.2}×") }
}

fn kb(n: usize) -> String {
    format!("{:.1} KB", n as f64 / 1024.0)
}

fn main() {
    let iters = env_usize("BENCH_THUMBS_ITERS", 10).max(1);
    let batch = env_usize("BENCH_VIPS_BATCH", 24).max(1);
    let rounds = env_usize("BENCH_ROUNDS", 3).max(1);
    let e2e_jobs = env_usize("BENCH_E2E_JOBS", 12);
    let e2e_concurrency: Vec<usize> = std::env::var("BENCH_E2E_CONCURRENCY")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .filter_map(|k| k.trim().parse().ok())
        .filter(|&k| k > 0)
        .collect();
    let tck = clk_tck();

    say("generating the 12 MP photo");
    let base = photo(SEED);
    let upload = jpeg(&base, 90);
    let t0 = Instant::now();
    let norm = normalized(&base);
    let normalize_ms = t0.elapsed().as_secs_f64() * 1e3;
    assert_eq!((norm.width, norm.height), (WIDTH, HEIGHT));
    let dir = TempDir::new();
    let (in_dir, out_dir) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir_all(&in_dir).unwrap();
    std::fs::create_dir_all(&out_dir).unwrap();
    // Copies under distinct names, so no libvips cache can recognize a repeat.
    let inputs: Vec<PathBuf> = (0..batch)
        .map(|i| {
            let path = in_dir.join(format!("photo{i}.jpg"));
            std::fs::write(&path, &norm.bytes).unwrap();
            path
        })
        .collect();
    say(format!(
        "upload {} bytes, normalized {} bytes in {normalize_ms:.0} ms",
        upload.len(),
        norm.bytes.len()
    ));

    // The outputs, checked once: the same dimensions from both.
    let ours_out = media::thumbnails(&norm.bytes).unwrap();
    vips(&inputs[..1], &out_dir, tck);
    let mut sizes = Vec::new();
    for (t, size) in ours_out.iter().zip(media::THUMB_SIZES) {
        let v = std::fs::read(out_dir.join(format!("photo0_{size}.jpg"))).unwrap();
        let img = image::load_from_memory(&v).unwrap();
        assert_eq!((img.width(), img.height()), (t.width, t.height), "vipsthumbnail at {size}");
        sizes.push((size, t.width, t.height, t.bytes.len(), v.len()));
    }
    // libvips' process start-up and exit: the same three commands on one tiny JPEG.
    let tiny = dir.path().join("tiny.jpg");
    std::fs::write(&tiny, jpeg(&RgbImage::from_pixel(16, 16, image::Rgb([90, 120, 200])), 90)).unwrap();
    let tiny = [tiny];

    say(format!("warm-up, then {rounds} rounds: ours {iters} jobs, vipsthumbnail {batch} jobs"));
    ours(&norm.bytes, 1);
    vips(&inputs[..1], &out_dir, tck);
    let (mut o, mut vt, mut start) = (vec![], vec![], vec![]);
    for round in 1..=rounds {
        let a = ours(&norm.bytes, iters);
        let b = vips(&inputs, &out_dir, tck);
        let c = vips(&tiny, &out_dir, tck);
        say(format!(
            "round {round}/{rounds}: ours {:.2} jobs/s ({:.0} ms CPU/job), vipsthumbnail {:.2} jobs/s \
             ({:.0} ms CPU/job), vips start-up {:.0} ms CPU per 3 processes",
            a.per_sec, a.cpu_ms, b.per_sec, b.cpu_ms, c.cpu_ms
        ));
        o.push(a);
        vt.push(b);
        start.push(c);
    }
    let med = |v: &[Sample], f: fn(&Sample) -> f64| median(v.iter().map(f).collect());
    // "median (lowest–highest round)" of a per-round ratio.
    let ratios = |a: &[Sample], b: &[Sample], f: fn(&Sample) -> f64| {
        let v: Vec<f64> = a.iter().zip(b).map(|(a, b)| f(a) / f(b)).collect();
        let m = format!("**{}**", ratio(median(v.clone())));
        if v.len() < 2 {
            return m;
        }
        let (lo, hi) = v.iter().fold((f64::INFINITY, 0.0_f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        format!("{m} ({}–{})", ratio(lo).trim_end_matches('×'), ratio(hi))
    };
    let per_sec = |s: &Sample| s.per_sec;
    let cpu = |s: &Sample| s.cpu_ms;
    let ours_cpu = med(&o, cpu);
    let (decode, encode, resize) = breakdown(&norm.bytes, iters, ours_cpu);

    // The real worker: in each round and for each concurrency, the anchor right
    // before the worker run, so the ratio compares runs seconds apart.
    // (concurrency, worker runs, anchor runs)
    let mut e2e_results: Vec<(usize, Vec<Sample>, Vec<Sample>)> =
        e2e_concurrency.iter().map(|&c| (c, vec![], vec![])).collect();
    if e2e_jobs > 0 && !e2e_results.is_empty() {
        let total = e2e_jobs * e2e_results.len() * rounds;
        say(format!("normalizing {total} distinct photos for the worker runs"));
        let originals: Vec<media::Normalized> = (0..total)
            .map(|i| {
                let mut img = base.clone();
                stamp(&mut img, i);
                normalized(&img)
            })
            .collect();
        let mut batches = originals.chunks(e2e_jobs);
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let env = testkit::TestEnv::new().await;
            let mut config = env.worker_config().database;
            config.pool_size = 2;
            let data = data::Data::new(&config, &telemetry::Registry::default()).unwrap();
            let author = data.create_user("photographer", "Photographer", "x").await.unwrap().user_id;
            for round in 1..=rounds {
                for (c, runs, anchors) in &mut e2e_results {
                    let anchor = vips(&inputs, &out_dir, tck);
                    let batch = batches.next().unwrap();
                    let r = e2e(&env, &data, author, batch, *c, tck).await;
                    say(format!(
                        "round {round}/{rounds}: worker with concurrency {c}: {} photo jobs, {:.2} jobs/s \
                         ({:.0} ms process CPU/job); vipsthumbnail just before: {:.2} jobs/s",
                        batch.len(),
                        r.per_sec,
                        r.cpu_ms,
                        anchor.per_sec
                    ));
                    runs.push(r);
                    anchors.push(anchor);
                }
            }
        });
    }

    // ------------------------------------------------------------ Markdown
    println!("### Thumbnails of a 12-megapixel photo\n");
    println!(
        "Input: a synthetic photo-like 4000 × 3000 image (fixed seed): {} as uploaded (JPEG q90), {} \
         normalized (`media::normalize`, {normalize_ms:.0} ms). A job makes three thumbnails (160, 640 and \
         1280 px long side, JPEG q85). {rounds} interleaved rounds (ours: {iters} jobs, vipsthumbnail: {batch} jobs per round); medians, \
         ratios as median (lowest–highest round). Then the real worker, again in {rounds} rounds: in each round, one worker run per concurrency, each right after an anchor run whose \
         numbers it is divided by.\n",
        kb(upload.len()),
        kb(norm.bytes.len()),
    );
    println!("| target | jobs/s | ÷ vipsthumbnail | CPU per job | ÷ vipsthumbnail |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| `vipsthumbnail` ×3 sizes, `VIPS_CONCURRENCY=1` (anchor) | {:.2} | 1.00× | {:.0} ms | 1.00× |",
        med(&vt, per_sec),
        med(&vt, cpu)
    );
    println!(
        "| **`media::thumbnails`**, one thread | {:.2} | {} | {:.0} ms | {} |",
        med(&o, per_sec),
        ratios(&o, &vt, per_sec),
        ours_cpu,
        ratios(&o, &vt, cpu)
    );
    let ours_per_sec = med(&o, per_sec);
    for (c, runs, anchors) in &e2e_results {
        if runs.is_empty() {
            continue;
        }
        println!(
            "| **real worker**, concurrency {c}, {e2e_jobs} jobs per run (store read, thumbnails, 3 fsynced \
             writes, DB, fan-out) | {:.2} | {} | {:.0} ms (process) | {} |",
            med(runs, per_sec),
            ratios(runs, anchors, per_sec),
            med(runs, cpu),
            ratios(runs, anchors, cpu),
        );
    }
    println!();
    for (c, runs, _) in &e2e_results {
        if runs.is_empty() {
            continue;
        }
        println!(
            "- Real worker, concurrency {c}: {} of `media::thumbnails`' jobs/s alone (medians of runs \
             minutes apart).",
            ratio(med(runs, per_sec) / ours_per_sec)
        );
    }
    let startup = med(&start, cpu);
    println!(
        "- The anchor runs 3 `vipsthumbnail` processes per round over {batch} copies of the photo. Their \
         start-up and exit (measured on a 16 × 16 JPEG) cost {startup:.0} ms CPU, so {:.1} ms of the \
         anchor's {:.0} ms CPU per job. Without it, ours ÷ vipsthumbnail in CPU per job would be {}.",
        startup / batch as f64,
        med(&vt, cpu),
        ratio(ours_cpu / (med(&vt, cpu) - startup / batch as f64)),
    );
    println!(
        "- Where `media::thumbnails`' {ours_cpu:.0} ms go (thread CPU): decoding the 12 MP JPEG {decode:.0} ms, \
         encoding the three thumbnails {encode:.0} ms, the three resizes and pixel conversion \
         {resize:.0} ms (by difference)."
    );
    println!();
    println!("Thumbnail bytes, both at nominal JPEG quality 85:\n");
    println!("| size | dimensions | ours | `vipsthumbnail` | ours ÷ vips |");
    println!("|---:|---|---:|---:|---:|");
    for (size, w, h, a, b) in sizes {
        println!("| {size} | {w} × {h} | {} | {} | {} |", kb(a), kb(b), ratio(a as f64 / b as f64));
    }
    println!();
}
