//! What every orders component shares: the contract types, the rules that
//! make them valid, the JSON error shape, HTTP helpers and the typed client of
//! the sidecar. An endpoint crate parses its input with these, makes one
//! sidecar call and shapes the answer; it never re-checks what a type holds.

pub mod access;
pub mod bundle;
pub mod clock;
pub mod error;
pub mod order;
pub mod preconditions;
pub mod request;
pub mod respond;
pub mod served;
pub mod sidecar;
mod sidecar_audit;
mod sidecar_bundles;
pub mod stream;

pub use error::{ApiError, FieldError};
pub use order::{NewOrder, OrderId, OrderPatch};
pub use served::ServedOrder;
pub use sidecar::SidecarClient;
pub use sidecar_bundles::Reservation;
/// The vocabulary the components share with the sidecar (docs/adr/0012).
pub use orders_vocabulary as vocabulary;
