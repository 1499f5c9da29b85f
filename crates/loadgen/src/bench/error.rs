//! Why a bench could not run: the one error type of `bench`, at the bottom so that
//! every module can name it.

/// Why a bench could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The configuration makes no sense.
    #[error("invalid bench configuration: {0}")]
    Invalid(String),
    /// Preparing the run (client, users) failed.
    #[error("bench setup failed: {0}")]
    Setup(String),
    /// Writing the report failed.
    #[error("bench report: {0}")]
    Output(String),
}
