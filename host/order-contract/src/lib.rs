//! The order contract's rules, in one place for the components and the
//! native tools: what a valid field is ([`fields`]), what an ObjectId is
//! ([`object_id`], the rule of `orders-vocabulary`, which bundle ids follow
//! too), RFC 3339 time ([`time`]), and how a stored document — including the
//! ones the old Flask service wrote without any checks — is served and
//! repaired ([`stored`]).

pub mod fields;
pub mod stored;
pub mod time;
pub mod verbatim;

pub use orders_vocabulary::id as object_id;

pub use fields::{FieldError, MAX_QUANTITY};
pub use stored::{Finding, StoredOrder};
pub use verbatim::Verbatim;
