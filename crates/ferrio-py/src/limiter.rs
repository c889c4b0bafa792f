//! `LimiterCore`: the Rust capacity limiter behind `ferrio.CapacityLimiter`.

use std::sync::Arc;

use ferrio_core::Limiter;
use pyo3::prelude::*;

use crate::job::{dispose, PyJob};
use crate::pool::tokens_from;

#[pyclass(frozen, module = "ferrio._ferrio")]
pub struct LimiterCore {
    pub(crate) inner: Arc<Limiter<PyJob>>,
}

#[pymethods]
impl LimiterCore {
    #[new]
    fn new(total_tokens: &Bound<'_, PyAny>) -> PyResult<Self> {
        let total = tokens_from("CapacityLimiter()", total_tokens)?;
        Ok(Self {
            inner: Arc::new(Limiter::new(total)),
        })
    }

    fn set_total_tokens(&self, py: Python<'_>, total_tokens: &Bound<'_, PyAny>) -> PyResult<()> {
        let total = tokens_from("CapacityLimiter.total_tokens =", total_tokens)?;
        let leftovers = self.inner.set_total(total, |_| false);
        dispose(py, leftovers.stale, leftovers.rejected, "CapacityLimiter");
        Ok(())
    }

    /// `(total_tokens, borrowed_tokens, waiting)`.
    fn stats(&self) -> (usize, usize, usize) {
        let s = self.inner.stats();
        (s.total_tokens, s.borrowed_tokens, s.waiting)
    }
}
