//! The Ray executor (being written).
use super::{ExecError, ExecutorSettings};

pub struct Ray;

impl Ray {
    #[allow(clippy::new_ret_no_self)]
    pub fn new(
        _s: &ExecutorSettings,
        _parallel: usize,
        _run_id: &str,
        _lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Box<dyn super::Executor>, ExecError> {
        Err(ExecError::Other("not written yet".into()))
    }
}
