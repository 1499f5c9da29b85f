//! Zipf-distributed ranks without a table: rejection-inversion sampling
//! (Hörmann and Derflinger), constant memory and time for any number of elements.

/// Ranks `0..n`, rank `k` drawn with probability proportional to `1 / (k+1)^s`.
#[derive(Debug, Clone)]
pub struct Zipf {
    /// The number of ranks.
    n: f64,
    /// The exponent.
    s: f64,
    /// `H(1.5) - 1`: one end of the range the uniform draws are mapped onto.
    h_integral_x1: f64,
    /// `H(n + 0.5)`: the other end.
    h_integral_n: f64,
    /// Below this distance from the drawn point, a rank is accepted at once.
    threshold: f64,
}

impl Zipf {
    /// Over `n >= 1` elements with exponent `s >= 0` (0 is uniform).
    pub fn new(n: u64, s: f64) -> Zipf {
        let n = n.max(1) as f64;
        let mut z = Zipf { n, s, h_integral_x1: 0.0, h_integral_n: 0.0, threshold: 0.0 };
        z.h_integral_x1 = z.h_integral(1.5) - 1.0;
        z.h_integral_n = z.h_integral(n + 0.5);
        z.threshold = 2.0 - z.h_integral_inverse(z.h_integral(2.5) - z.h(2.0));
        z
    }

    /// A rank in `0..n` from a source of uniform draws in `[0, 1)`.
    pub fn sample(&self, mut uniform: impl FnMut() -> f64) -> u64 {
        loop {
            let u = self.h_integral_n + uniform() * (self.h_integral_x1 - self.h_integral_n);
            let x = self.h_integral_inverse(u);
            let k = (x + 0.5).floor().clamp(1.0, self.n);
            if k - x <= self.threshold || u >= self.h_integral(k + 0.5) - self.h(k) {
                return k as u64 - 1;
            }
        }
    }

    fn h(&self, x: f64) -> f64 {
        (-self.s * x.ln()).exp()
    }

    fn h_integral(&self, x: f64) -> f64 {
        let log_x = x.ln();
        helper2((1.0 - self.s) * log_x) * log_x
    }

    fn h_integral_inverse(&self, x: f64) -> f64 {
        let t = (x * (1.0 - self.s)).max(-1.0);
        (helper1(t) * x).exp()
    }
}

/// `ln(1+x)/x`, accurate near 0.
fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-8 { x.ln_1p() / x } else { 1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x)) }
}

/// `(e^x - 1)/x`, accurate near 0.
fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 { x.exp_m1() / x } else { 1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x)) }
}
