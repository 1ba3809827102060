//! What calls cost, what has been spent, and the caps that end a run cleanly.
//!
//! Prices are USD per million tokens, by model name. The defaults were list prices when this
//! was written; providers change them, so the config can override any entry.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::config::BudgetConfig;
use super::error::{BudgetLimit, LlmError};
use super::provider::ChatProvider;
use super::types::{ChatRequest, ChatResponse, TokenUsage};

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

impl Price {
    pub const FREE: Price = Price {
        input_per_mtok: 0.0,
        output_per_mtok: 0.0,
    };

    pub const fn new(input_per_mtok: f64, output_per_mtok: f64) -> Self {
        Self {
            input_per_mtok,
            output_per_mtok,
        }
    }

    pub fn cost(&self, usage: TokenUsage) -> f64 {
        (usage.input_tokens as f64 * self.input_per_mtok
            + usage.output_tokens as f64 * self.output_per_mtok)
            / 1e6
    }

    pub(crate) fn validate(&self) -> Result<(), PriceError> {
        for (field, value) in [
            ("input_per_mtok", self.input_per_mtok),
            ("output_per_mtok", self.output_per_mtok),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(PriceError { field, value });
            }
        }
        Ok(())
    }
}

/// A price that is negative or not a number.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[error("`{field}` = {value} must be a non-negative number")]
pub(crate) struct PriceError {
    field: &'static str,
    value: f64,
}

/// Default prices (USD per million input / output tokens).
const DEFAULT_PRICES: &[(&str, Price)] = &[
    ("gpt-4o", Price::new(2.50, 10.00)),
    ("gpt-4o-mini", Price::new(0.15, 0.60)),
    ("gpt-4.1", Price::new(2.00, 8.00)),
    ("gpt-4.1-mini", Price::new(0.40, 1.60)),
    ("gpt-4.1-nano", Price::new(0.10, 0.40)),
    ("o3-mini", Price::new(1.10, 4.40)),
    ("claude-3-5-sonnet", Price::new(3.00, 15.00)),
    ("claude-3-5-haiku", Price::new(0.80, 4.00)),
    ("claude-sonnet-4", Price::new(3.00, 15.00)),
    ("claude-opus-4", Price::new(15.00, 75.00)),
    ("deepseek-chat", Price::new(0.27, 1.10)),
    ("deepseek-reasoner", Price::new(0.55, 2.19)),
];

/// Prices by model name. A model matches its exact name, or else the longest entry that is a
/// prefix of it at a `-`, `:` or `@` boundary (so `gpt-4o-2024-08-06` costs what `gpt-4o`
/// costs, and `gpt-4o-mini` is not priced as `gpt-4o`). A `vendor/` prefix, as OpenRouter
/// writes names, is tried with and without.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    entries: BTreeMap<String, Price>,
    /// Price of models with no entry; `Some(Price::FREE)` for a server on this machine.
    fallback: Option<Price>,
}

impl Default for PriceTable {
    fn default() -> Self {
        Self::defaults()
    }
}

impl PriceTable {
    pub fn defaults() -> Self {
        let entries = DEFAULT_PRICES
            .iter()
            .map(|(m, p)| (m.to_string(), *p))
            .collect();
        Self {
            entries,
            fallback: None,
        }
    }

    pub fn empty() -> Self {
        Self {
            entries: BTreeMap::new(),
            fallback: None,
        }
    }

    pub fn with_price(mut self, model: impl Into<String>, price: Price) -> Self {
        self.entries.insert(model.into().to_lowercase(), price);
        self
    }

    pub fn with_overrides(mut self, overrides: &BTreeMap<String, Price>) -> Self {
        for (m, p) in overrides {
            self.entries.insert(m.to_lowercase(), *p);
        }
        self
    }

    pub fn with_fallback(mut self, fallback: Option<Price>) -> Self {
        self.fallback = fallback;
        self
    }

    pub fn lookup(&self, model: &str) -> Option<Price> {
        let name = model.to_lowercase();
        let unprefixed = name.rsplit_once('/').map(|(_, m)| m.to_string());
        std::iter::once(name)
            .chain(unprefixed)
            .find_map(|n| self.lookup_exact_or_prefix(&n))
            .or(self.fallback)
    }

    fn lookup_exact_or_prefix(&self, name: &str) -> Option<Price> {
        if let Some(p) = self.entries.get(name) {
            return Some(*p);
        }
        self.entries
            .iter()
            .filter(|(k, _)| {
                name.strip_prefix(k.as_str())
                    .and_then(|rest| rest.chars().next())
                    .is_some_and(|c| matches!(c, '-' | ':' | '@'))
            })
            .max_by_key(|(k, _)| k.len())
            .map(|(_, p)| *p)
    }

    /// USD for `usage` on `model`, or `None` when the model has no price.
    pub fn cost(&self, model: &str, usage: TokenUsage) -> Option<f64> {
        self.lookup(model).map(|p| p.cost(usage))
    }
}

/// Running totals of a run's model use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageTotals {
    /// Calls let through the budget check (succeeded, failed or still in flight).
    pub calls: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    /// Successful calls whose model had no price (counted as free in `cost_usd`).
    pub unpriced_calls: u64,
}

impl UsageTotals {
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

/// A thread-safe usage ledger shared by every call of a run.
#[derive(Debug, Default)]
pub struct UsageLedger {
    totals: Mutex<UsageTotals>,
}

impl UsageLedger {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, UsageTotals> {
        // The totals are plain counters, still meaningful after a panic elsewhere.
        self.totals.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn totals(&self) -> UsageTotals {
        self.lock().clone()
    }

    /// Checks every cap and, if none is reached, counts the call as started. Checking and
    /// counting under one lock keeps concurrent callers from all slipping past the call cap;
    /// token and dollar caps can still be overshot by the calls already in flight.
    pub fn reserve(&self, budget: &BudgetConfig) -> Result<(), LlmError> {
        let mut t = self.lock();
        if let Some(cap) = budget.max_calls {
            if t.calls >= cap {
                return Err(LlmError::BudgetExhausted {
                    limit: BudgetLimit::Calls,
                    used: t.calls as f64,
                    cap: cap as f64,
                });
            }
        }
        if let Some(cap) = budget.max_tokens {
            if t.total_tokens() >= cap {
                return Err(LlmError::BudgetExhausted {
                    limit: BudgetLimit::Tokens,
                    used: t.total_tokens() as f64,
                    cap: cap as f64,
                });
            }
        }
        if let Some(cap) = budget.max_usd {
            if t.cost_usd >= cap {
                return Err(LlmError::BudgetExhausted {
                    limit: BudgetLimit::Dollars,
                    used: t.cost_usd,
                    cap,
                });
            }
        }
        t.calls += 1;
        Ok(())
    }

    fn record_success(&self, usage: TokenUsage, cost_usd: Option<f64>) {
        let mut t = self.lock();
        t.succeeded += 1;
        t.input_tokens += usage.input_tokens;
        t.output_tokens += usage.output_tokens;
        match cost_usd {
            Some(c) => t.cost_usd += c,
            None => t.unpriced_calls += 1,
        }
    }

    fn record_failure(&self) {
        self.lock().failed += 1;
    }
}

/// Enforces the budget and keeps the ledger around any provider. Calls refused by the budget
/// never reach the inner provider (so they are not recorded either).
pub struct Metered {
    inner: Arc<dyn ChatProvider>,
    ledger: Arc<UsageLedger>,
    budget: BudgetConfig,
    prices: PriceTable,
}

impl Metered {
    pub fn new(
        inner: Arc<dyn ChatProvider>,
        ledger: Arc<UsageLedger>,
        budget: BudgetConfig,
        prices: PriceTable,
    ) -> Self {
        Self {
            inner,
            ledger,
            budget,
            prices,
        }
    }
}

#[async_trait]
impl ChatProvider for Metered {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        self.ledger.reserve(&self.budget)?;
        match self.inner.chat(request).await {
            Ok(resp) => {
                self.ledger
                    .record_success(resp.usage, self.prices.cost(&request.model, resp.usage));
                Ok(resp)
            }
            Err(e) => {
                self.ledger.record_failure();
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_lookup_prefers_longest_at_boundary() {
        let t = PriceTable::defaults();
        assert_eq!(t.lookup("gpt-4o-2024-08-06"), Some(Price::new(2.50, 10.00)));
        assert_eq!(
            t.lookup("gpt-4o-mini-2024-07-18"),
            Some(Price::new(0.15, 0.60))
        );
        assert_eq!(
            t.lookup("openai/gpt-4.1-mini"),
            Some(Price::new(0.40, 1.60))
        );
        assert_eq!(
            t.lookup("claude-3-5-haiku-20241022"),
            Some(Price::new(0.80, 4.00))
        );
        assert_eq!(
            t.lookup("Claude-Sonnet-4-20250514"),
            Some(Price::new(3.0, 15.0))
        );
        assert_eq!(t.lookup("gpt-4omni"), None);
        assert_eq!(t.lookup("llama3.1:8b"), None);
        assert_eq!(
            t.clone()
                .with_fallback(Some(Price::FREE))
                .lookup("llama3.1:8b"),
            Some(Price::FREE)
        );
    }

    #[test]
    fn overrides_win() {
        let mut o = BTreeMap::new();
        o.insert("gpt-4o".to_string(), Price::new(1.0, 2.0));
        let t = PriceTable::defaults().with_overrides(&o);
        let usage = TokenUsage {
            input_tokens: 1_000_000,
            output_tokens: 500_000,
        };
        assert_eq!(t.cost("gpt-4o", usage), Some(2.0));
    }

    #[test]
    fn ledger_caps() {
        let l = UsageLedger::new();
        let b = BudgetConfig {
            max_calls: Some(2),
            max_tokens: Some(100),
            max_usd: None,
        };
        l.reserve(&b).unwrap();
        l.record_success(
            TokenUsage {
                input_tokens: 60,
                output_tokens: 50,
            },
            Some(0.1),
        );
        let e = l.reserve(&b).unwrap_err();
        assert!(
            matches!(
                e,
                LlmError::BudgetExhausted {
                    limit: BudgetLimit::Tokens,
                    ..
                }
            ),
            "{e}"
        );
        let b = BudgetConfig {
            max_calls: Some(1),
            ..Default::default()
        };
        let e = l.reserve(&b).unwrap_err().to_string();
        assert_eq!(
            e,
            "budget exhausted: the calls cap of 1 is reached (1 used)"
        );
        let t = l.totals();
        assert_eq!(
            (t.calls, t.succeeded, t.total_tokens(), t.cost_usd),
            (1, 1, 110, 0.1)
        );
    }
}
