//! How settings are read: the file layer under flags and environment
//! (`file`), the parsed value types (`values`), secrets that never print
//! (`secret`), and settings handed to child processes whole (`child`). The
//! options themselves are declared once, in `config`, `auth_options`,
//! `bundle_options` and the commands' argument structs.

pub mod child;
pub mod file;
pub mod secret;
pub mod values;
