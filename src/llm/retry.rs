//! Back-off between attempts: exponential, jittered, never shorter than the server's
//! `Retry-After`, and scaled (to nothing, in tests) by `retry.delay_scale` or
//! `ARCHSMITH_RETRY_SCALE`.

use std::time::Duration;

use rand::Rng;
use reqwest::header::HeaderMap;

use super::config::RetryConfig;

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    cfg: RetryConfig,
    scale: f64,
}

impl Backoff {
    pub(crate) fn new(cfg: &RetryConfig) -> Self {
        Self {
            cfg: cfg.clone(),
            scale: cfg.effective_scale(),
        }
    }

    /// The wait after failed attempt number `attempt` (1-based).
    pub(crate) fn delay(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        rng: &mut impl Rng,
    ) -> Duration {
        let doublings = attempt.saturating_sub(1).min(32);
        let exp_ms = (self.cfg.initial_delay_ms as f64 * 2f64.powi(doublings as i32))
            .min(self.cfg.max_delay_ms as f64);
        // "Equal jitter": a fixed share keeps a floor under the wait, the random share spreads
        // callers that failed together.
        let fixed = exp_ms * (1.0 - self.cfg.jitter);
        let random = if self.cfg.jitter > 0.0 {
            rng.gen_range(0.0..=exp_ms * self.cfg.jitter)
        } else {
            0.0
        };
        let mut wait = Duration::from_secs_f64((fixed + random) / 1000.0);
        if let Some(ra) = retry_after {
            wait = wait.max(ra.min(Duration::from_secs(self.cfg.max_retry_after_secs)));
        }
        wait.mul_f64(self.scale)
    }
}

/// How long the server asks us to wait: `retry-after-ms` (sent by OpenAI) or `Retry-After` in
/// its seconds form. The HTTP-date form is not parsed; the exponential back-off applies then.
pub(crate) fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    number("retry-after-ms")
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .or_else(|| number("retry-after").map(Duration::from_secs_f64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn cfg(jitter: f64) -> RetryConfig {
        RetryConfig {
            initial_delay_ms: 100,
            max_delay_ms: 1000,
            jitter,
            ..RetryConfig::default()
        }
    }

    fn backoff(jitter: f64) -> Backoff {
        // Built directly so the environment variable cannot interfere with the arithmetic.
        Backoff {
            cfg: cfg(jitter),
            scale: 1.0,
        }
    }

    #[test]
    fn doubles_and_caps() {
        let b = backoff(0.0);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let ms: Vec<u128> = (1..=6)
            .map(|a| b.delay(a, None, &mut rng).as_millis())
            .collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_stays_in_band() {
        let b = backoff(0.5);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..100 {
            let d = b.delay(3, None, &mut rng).as_millis();
            assert!((200..=400).contains(&d), "{d}");
        }
    }

    #[test]
    fn retry_after_is_a_floor_and_capped() {
        let b = backoff(0.0);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        assert_eq!(
            b.delay(1, Some(Duration::from_secs(3)), &mut rng),
            Duration::from_secs(3)
        );
        assert_eq!(
            b.delay(1, Some(Duration::from_secs(999)), &mut rng),
            Duration::from_secs(120)
        );
        let zero = Backoff {
            cfg: cfg(0.0),
            scale: 0.0,
        };
        assert_eq!(
            zero.delay(1, Some(Duration::from_secs(3)), &mut rng),
            Duration::ZERO
        );
    }

    #[test]
    fn parses_retry_after_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(parse_retry_after(&h), None);
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", "1500".parse().unwrap());
        assert_eq!(parse_retry_after(&h), Some(Duration::from_millis(1500)));
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(parse_retry_after(&h), None);
    }
}
