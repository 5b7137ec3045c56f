//! The Prometheus remote-write receiver, protocols 1.0 (`prometheus.WriteRequest`) and 2.0
//! (`io.prometheus.write.v2.Request`): wire messages, negotiation, decoding and validation,
//! and the HTTP handler that appends through `storage::Tsdb`. Does not own storage semantics
//! (which samples are out of order, retention) nor the HTTP server.

mod decode;
mod error;
pub(crate) mod handler;
mod negotiate;
pub mod proto;

pub(crate) use decode::check_limits;
pub use decode::{decode, decompress, DecodedWrite};
pub use error::{ErrorList, RemoteWriteError};
pub use negotiate::Protocol;
