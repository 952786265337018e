//! Scale-out through nginx (filled in below).
