//! What `ferrio.ProcessPool` needs from Rust: atomic cells in shared memory (`SharedValue`), the
//! parent-death signal for workers, and a latency histogram for `stats()`.

use std::sync::atomic::Ordering::SeqCst;

use ferrio_core::shm;
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;

use crate::errors;

/// A 64-bit int or float in shared memory, changed only with atomic operations.
#[pyclass(frozen, module = "ferrio._ferrio")]
pub struct SharedCell {
    cell: shm::SharedCell,
    float: bool,
}

impl SharedCell {
    fn atomic(&self) -> &std::sync::atomic::AtomicU64 {
        self.cell.atomic()
    }

    fn to_bits(&self, value: &Bound<'_, PyAny>) -> PyResult<u64> {
        if self.float {
            Ok(value.extract::<f64>()?.to_bits())
        } else {
            #[allow(clippy::cast_sign_loss)] // reason: the cell stores an i64's two's-complement bits
            Ok(value.extract::<i64>()? as u64)
        }
    }

    fn value_of(&self, py: Python<'_>, bits: u64) -> PyResult<Py<PyAny>> {
        if self.float {
            f64::from_bits(bits).into_py_any(py)
        } else {
            #[allow(clippy::cast_possible_wrap)] // reason: as in to_bits
            (bits as i64).into_py_any(py)
        }
    }
}

#[pymethods]
impl SharedCell {
    /// Maps the first eight bytes of `fd` (which may be closed afterwards).
    #[new]
    fn new(fd: i32, float: bool) -> PyResult<Self> {
        let cell = shm::SharedCell::map(fd).map_err(|e| errors::shared_memory_unmappable(fd, &e))?;
        Ok(Self { cell, float })
    }

    fn get(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.value_of(py, self.atomic().load(SeqCst))
    }

    fn set(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.atomic().store(self.to_bits(value)?, SeqCst);
        Ok(())
    }

    /// Adds `delta` (ints wrap at 64 bits) and returns the new value.
    fn add(&self, py: Python<'_>, delta: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        if self.float {
            let delta = delta.extract::<f64>()?;
            let mut current = self.atomic().load(SeqCst);
            loop {
                let new = (f64::from_bits(current) + delta).to_bits();
                match self.atomic().compare_exchange_weak(current, new, SeqCst, SeqCst) {
                    Ok(_) => return self.value_of(py, new),
                    Err(seen) => current = seen,
                }
            }
        }
        let delta = self.to_bits(delta)?;
        let old = self.atomic().fetch_add(delta, SeqCst);
        self.value_of(py, old.wrapping_add(delta))
    }

    /// Stores `value`; returns the old one.
    fn swap(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let old = self.atomic().swap(self.to_bits(value)?, SeqCst);
        self.value_of(py, old)
    }

    /// Stores `new` if the value is `expected` (floats: bit for bit); returns
    /// `(succeeded, value before)`.
    fn compare_exchange(
        &self,
        py: Python<'_>,
        expected: &Bound<'_, PyAny>,
        new: &Bound<'_, PyAny>,
    ) -> PyResult<(bool, Py<PyAny>)> {
        let (expected, new) = (self.to_bits(expected)?, self.to_bits(new)?);
        match self.atomic().compare_exchange(expected, new, SeqCst, SeqCst) {
            Ok(v) => Ok((true, self.value_of(py, v)?)),
            Err(v) => Ok((false, self.value_of(py, v)?)),
        }
    }
}

/// Has the kernel send `signal` to this process when its parent exits; `False` where unsupported.
#[pyfunction]
pub fn set_parent_death_signal(signal: i32) -> PyResult<bool> {
    if signal <= 0 {
        return Err(errors::bad_signal_number(signal));
    }
    shm::set_parent_death_signal(signal).map_err(|e| errors::parent_death_signal_refused(&e))
}
