//! Failure modes (filled in below).
