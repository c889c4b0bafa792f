//! `LimiterCore`: the Rust capacity limiter behind `ferrio.CapacityLimiter`.

use std::sync::Arc;

use ferrio_core::limiter::INFINITE_TOKENS;
use ferrio_core::Limiter;
use pyo3::prelude::*;

use crate::counts::LimiterCounts;
use crate::errors;
use crate::job::{dispose, PyJob};

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

    /// Total and borrowed tokens, and how many jobs wait.
    fn counts(&self) -> LimiterCounts {
        self.inner.stats().into()
    }
}

/// `total_tokens` for `api` as the limiter stores it (`math.inf`: [`INFINITE_TOKENS`]), or a clear error.
pub(crate) fn tokens_from(api: &str, value: &Bound<'_, PyAny>) -> PyResult<usize> {
    if let Ok(f) = value.extract::<f64>() {
        if f.is_infinite() && f > 0.0 {
            return Ok(INFINITE_TOKENS);
        }
    }
    match value.extract::<i64>() {
        Ok(n) if n >= 1 && !value.is_instance_of::<pyo3::types::PyBool>() => {
            Ok(usize::try_from(n).unwrap_or(INFINITE_TOKENS))
        }
        Ok(n) => Err(errors::too_few_tokens(api, n)),
        Err(_) => Err(errors::tokens_not_a_number(api, value)),
    }
}
