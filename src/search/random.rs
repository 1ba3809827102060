//! Random search: fresh samples from the grammar.

use super::{Context, Proposal, SearchError, Strategy};

#[derive(Debug, Default)]
pub struct Random;

impl Strategy for Random {
    fn name(&self) -> &'static str {
        "random"
    }

    fn propose(&mut self, ctx: &mut Context<'_>, n: usize) -> Result<Vec<Proposal>, SearchError> {
        (0..n).map(|_| ctx.fresh_sample()).collect()
    }
}
