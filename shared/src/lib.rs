//! Pure code shared by the podwarn agent and collector: the wire types of
//! protocol v1 ([`wire`]), incident classification ([`classify`]) and the
//! message normalisation behind incident fingerprints ([`normalize`]).
//!
//! Nothing here does I/O or needs a runtime, so both sides (and tests) agree
//! on one definition of every rule; the one exception, behind the `signal`
//! feature, is the shutdown signal both binaries install in `main`.

pub mod classify;
pub mod normalize;
#[cfg(feature = "signal")]
pub mod signal;
#[cfg(feature = "testing")]
pub mod testing;
pub mod units;
pub mod wire;

pub use classify::{IncidentType, Severity};
pub use wire::{IngestBatch, IngestResponse, WarningEvent, Workload};
